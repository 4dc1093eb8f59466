"""Makes the ONNX test models and the expected outputs, with onnx and onnxruntime.

    python3 -m pip install onnx onnxruntime numpy
    python3 tests/data/onnx/make_models.py

Writes, next to this script:
- classifier.onnx: features float[N,4] -> probabilities float[N,3] (softmax of
  a linear layer) and class_id int64[N] (argmax); also copied to
  examples/iris/model/model.onnx, the README's bundled model.
- two_inputs.onnx: a float[1,2] and b int64[1] (a fixed batch of 1, as many
  exported files have) -> total float[1] = a[0] + a[1] + b, and
  b_twice int64[1] = 2 * b.
- broken.onnx: not a model.
- expected.json: onnxruntime's outputs for the instances in it.
"""

import json
import os
import shutil

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))

# Fixed weights: a linear classifier of the iris measurements
# (sepal length, sepal width, petal length, petal width) into 3 species.
W = np.array(
    [[0.42, 0.95, -1.37],
     [1.21, -0.33, -0.88],
     [-2.19, 0.07, 2.12],
     [-0.97, -0.86, 1.83]],
    dtype=np.float32,
)
B = np.array([0.26, 1.09, -1.35], dtype=np.float32)


def classifier():
    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 4])
    probs = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])
    label = helper.make_tensor_value_info("class_id", TensorProto.INT64, ["N"])
    nodes = [
        helper.make_node("Gemm", ["features", "W", "B"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["logits"], ["class_id"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "iris_classifier", [x], [probs, label],
        initializer=[numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="batch-prediction")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def two_inputs():
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 2])
    b = helper.make_tensor_value_info("b", TensorProto.INT64, [1])
    total = helper.make_tensor_value_info("total", TensorProto.FLOAT, [1])
    twice = helper.make_tensor_value_info("b_twice", TensorProto.INT64, [1])
    two = numpy_helper.from_array(np.array(2, dtype=np.int64), "two")
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    nodes = [
        helper.make_node("ReduceSum", ["a", "axes"], ["a_sum"], keepdims=0),
        helper.make_node("Cast", ["b"], ["b_float"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["a_sum", "b_float"], ["total"]),
        helper.make_node("Mul", ["b", "two"], ["b_twice"]),
    ]
    graph = helper.make_graph(nodes, "two_inputs", [a, b], [total, twice], initializer=[two, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="batch-prediction")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main():
    clf, two = classifier(), two_inputs()
    onnx.save(clf, os.path.join(HERE, "classifier.onnx"))
    onnx.save(two, os.path.join(HERE, "two_inputs.onnx"))
    shutil.copy(os.path.join(HERE, "classifier.onnx"), os.path.join(ROOT, "examples", "iris", "model", "model.onnx"))
    with open(os.path.join(HERE, "broken.onnx"), "wb") as f:
        f.write(b"this is not an ONNX model\n")

    rng = np.random.default_rng(7)
    features = np.round(rng.uniform(0.1, 7.9, size=(20, 4)), 1).astype(np.float32)
    sess = ort.InferenceSession(clf.SerializeToString(), providers=["CPUExecutionProvider"])
    probs, label = sess.run(None, {"features": features})
    expected = {
        "classifier": [
            {"instance": {"features": f.tolist()}, "probabilities": p.tolist(), "class_id": int(c)}
            for f, p, c in zip(features, probs, label)
        ]
    }
    # two_inputs has a fixed batch of 1 in the file: onnxruntime runs it one instance at a time.
    sess = ort.InferenceSession(two.SerializeToString(), providers=["CPUExecutionProvider"])
    rows = []
    for a0, a1, b in [(0.5, 0.25, 3), (-1.5, 2.0, 2**60 + 1), (1e-3, 1e3, -7)]:
        total, twice = sess.run(None, {"a": np.array([[a0, a1]], np.float32), "b": np.array([b], np.int64)})
        rows.append({"instance": {"a": [a0, a1], "b": b}, "total": float(total[0]), "b_twice": int(twice[0])})
    expected["two_inputs"] = rows
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")

    # The bundled example's instances: iris-like measurements, with a key each.
    with open(os.path.join(ROOT, "examples", "iris", "instances.jsonl"), "w") as f:
        for i, row in enumerate(np.round(rng.uniform(0.1, 7.9, size=(30, 4)), 1)):
            f.write(json.dumps({"key": f"flower-{i:02d}", "features": row.tolist()}) + "\n")
        f.write('{"key": "flower-bad", "features": [1.0, 2.0]}\n')


if __name__ == "__main__":
    main()
