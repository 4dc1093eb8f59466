"""A small KServe model server for the remote predictor's tests: a
scikit-learn classifier (model.joblib in the directory given) behind
`kserve.Model`, over KServe's v1 protocol (TensorFlow Serving's
`{"instances": [...]}`) and its v2 protocol (the Open Inference Protocol).

    python kserve_server.py DIR HTTP_PORT GRPC_PORT

v1: each instance is `{"x": [4 numbers], ...}` or the 4 numbers; each
prediction is `{"label": int, "probabilities": [3 floats]}` plus the
instance's `key`, the request's `signature_name` and the request's
`x-test-token` header when there are any (so that the tests see what the
client sent); an instance of four zeros gets `{"error": "all-zero
features"}` in its place. v2: one input `x` (FP64, [-1, 4]) declared in the metadata;
outputs `label` (INT64, [N]) and `probabilities` (FP64, [N, 3]).
"""

import sys

import joblib
import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


class Classifier(Model):
    def __init__(self, name, path):
        super().__init__(name)
        self.path = path
        self.load()

    def load(self):
        self.model = joblib.load(self.path)
        self.ready = True
        return self.ready

    def get_input_types(self):
        return [{"name": "x", "datatype": "FP64", "shape": [-1, 4]}]

    def get_output_types(self):
        return [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, 3]},
        ]

    async def predict(self, payload, headers=None, response_headers=None):
        if isinstance(payload, InferRequest):
            x = payload.inputs[0].as_numpy().astype(np.float64)
            if x.ndim != 2 or x.shape[1] != 4:
                raise ValueError(f"x must have shape [N, 4], not {list(x.shape)}")
            labels = self.model.predict(x).astype(np.int64)
            probabilities = self.model.predict_proba(x)
            return InferResponse(
                model_name=self.name,
                response_id=payload.id or "",
                infer_outputs=[
                    InferOutput("label", list(labels.shape), "INT64", labels.tolist()),
                    InferOutput("probabilities", list(probabilities.shape), "FP64", probabilities.tolist()),
                ],
            )
        instances = payload["instances"]
        rows = [i["x"] if isinstance(i, dict) else i for i in instances]
        if any(len(r) != 4 for r in rows):
            raise ValueError("every instance needs 4 numbers")
        x = np.asarray(rows, dtype=np.float64)
        labels = self.model.predict(x)
        probabilities = self.model.predict_proba(x)
        predictions = []
        for i, instance in enumerate(instances):
            if rows[i] == [0, 0, 0, 0]:
                # An instance's own error, in its place (as AI Platform's
                # custom prediction routines may answer).
                predictions.append({"error": "all-zero features"})
                continue
            p = {"label": int(labels[i]), "probabilities": probabilities[i].tolist()}
            if isinstance(instance, dict) and "key" in instance:
                p["key"] = instance["key"]
            if "signature_name" in payload:
                p["signature"] = payload["signature_name"]
            token = (headers or {}).get("x-test-token")
            if token is not None:
                p["token"] = token
            predictions.append(p)
        return {"predictions": predictions}


if __name__ == "__main__":
    directory, http_port, grpc_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    model = Classifier("iris", f"{directory}/model.joblib")
    ModelServer(http_port=http_port, grpc_port=grpc_port, enable_grpc=False, workers=1).start([model])
