#!/usr/bin/env python3
"""Writes the small TensorFlow SavedModels the `tensorflow` feature's tests run, and what TensorFlow
itself predicts for their test instances, so the tests need TensorFlow's C library but no Python.
Deterministic (fixed weights). Needs: pip install tensorflow-cpu==2.21.0. Writes, next to this script:
  models/mlp/             a Keras MLP (input x: float32 [-1, 4]; one output, softmax of 3),
                          exported by Keras (model.export)
  models/multi/           inputs features float32 [-1, 3], count int64 [-1], word string [-1];
                          outputs score float32 [-1] and next int64 [-1]
  models/signatures/      serving_default doubles x (float32 [-1, 2]) into y; `tripled` gives z = 3x
  models/parse_example/   serving_default takes serialized tf.train.Example protos (string [-1], the
                          records of examples.tfrecord: id int64, x float[4]); outputs id and total
  models/strings/         text string [-1] -> upper string [-1]: a string input and a string output
  models/expected.json    each model's test instances and TensorFlow's predictions, by model
The test instances of mlp and parse_example are examples.jsonl and examples.tfrecord."""
import base64, json, os
import numpy as np
import tensorflow as tf
import keras

here = os.path.dirname(os.path.abspath(__file__))
models = os.path.join(here, "models")
os.makedirs(models, exist_ok=True)
expected = {"tensorflow": tf.__version__}


def f32(values):
    """float32 values as the doubles they are, so JSON keeps them exactly."""
    return np.asarray(values, dtype=np.float32).astype(np.float64).tolist()


def run(path, signature, feeds):
    loaded = tf.saved_model.load(path)
    out = loaded.signatures[signature](**{k: tf.constant(v) for k, v in feeds.items()})
    return {k: v.numpy() for k, v in out.items()}


# 1. A Keras MLP with fixed weights, exported by Keras itself.
inputs = keras.Input(shape=(4,), name="x")
hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
probs = keras.layers.Dense(3, activation="softmax", name="probabilities")(hidden)
mlp = keras.Model(inputs, probs)
w1 = (np.arange(32, dtype=np.float32).reshape(4, 8) % 7 - 3) / 5
b1 = np.linspace(-0.2, 0.2, 8, dtype=np.float32)
w2 = (np.arange(24, dtype=np.float32).reshape(8, 3) % 5 - 2) / 4
b2 = np.array([0.1, -0.1, 0.05], dtype=np.float32)
mlp.get_layer("hidden").set_weights([w1, b1])
mlp.get_layer("probabilities").set_weights([w2, b2])
mlp.export(os.path.join(models, "mlp"), format="tf_saved_model", verbose=False)
rows = [json.loads(line) for line in open(os.path.join(here, "examples.jsonl"))]
x = np.array([r["x"] for r in rows], dtype=np.float32)
out = run(os.path.join(models, "mlp"), "serving_default", {"x": x})
(name, values), = out.items()
expected["mlp"] = {"output": name, "predictions": [f32(v) for v in values]}


# 2. Several inputs of three dtypes, two outputs.
class Multi(tf.Module):
    @tf.function(input_signature=[
        tf.TensorSpec([None, 3], tf.float32, name="features"),
        tf.TensorSpec([None], tf.int64, name="count"),
        tf.TensorSpec([None], tf.string, name="word")])
    def serve(self, features, count, word):
        score = tf.reduce_sum(features, axis=1) * tf.cast(count, tf.float32) + tf.cast(tf.strings.length(word), tf.float32)
        return {"score": score, "next": count + 1}


tf.saved_model.save(Multi(), os.path.join(models, "multi"), signatures={"serving_default": Multi().serve.get_concrete_function()})
multi = [
    {"key": "a", "features": [1.5, -2.25, 0.1], "count": 3, "word": "héllo"},
    {"key": "b", "features": [0.0, 0.0, 0.0], "count": 9007199254740993, "word": ""},
    {"key": "c", "features": [1e-3, 2e-3, 3e-3], "count": -7, "word": {"b64": base64.b64encode(b"\xff\x00ab").decode()}},
]
def word(w):
    return base64.b64decode(w["b64"]) if isinstance(w, dict) else w.encode()
out = run(os.path.join(models, "multi"), "serving_default", {
    "features": np.array([i["features"] for i in multi], dtype=np.float32),
    "count": np.array([i["count"] for i in multi], dtype=np.int64),
    "word": np.array([word(i["word"]) for i in multi], dtype=object)})
expected["multi"] = {"instances": multi, "predictions": [
    {"key": i["key"], "next": int(n), "score": float(np.float32(s))} for i, n, s in zip(multi, out["next"], out["score"])]}


# 3. Two named signatures.
class Signatures(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def doubled(self, x):
        return {"y": x * 2}

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def tripled(self, x):
        return {"z": x * 3}


s = Signatures()
tf.saved_model.save(s, os.path.join(models, "signatures"), signatures={
    "serving_default": s.doubled.get_concrete_function(), "tripled": s.tripled.get_concrete_function()})
pairs = [[0.5, -1.25], [3.0, 1e-7]]
expected["signatures"] = {"instances": pairs}
for sig, alias in (("serving_default", "y"), ("tripled", "z")):
    out = run(os.path.join(models, "signatures"), sig, {"x": np.array(pairs, dtype=np.float32)})
    expected["signatures"][sig] = [f32(v) for v in out[alias]]


# 4. A serving signature that parses serialized tf.train.Examples (the TFRecord route).
class ParseExample(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(self, examples):
        parsed = tf.io.parse_example(examples, {
            "id": tf.io.FixedLenFeature([], tf.int64),
            "x": tf.io.FixedLenFeature([4], tf.float32)})
        return {"id": parsed["id"], "total": tf.reduce_sum(parsed["x"] * [1.0, 2.0, 3.0, 4.0], axis=1)}


p = ParseExample()
tf.saved_model.save(p, os.path.join(models, "parse_example"), signatures={"serving_default": p.serve.get_concrete_function()})
records = [bytes(t.numpy()) for t in tf.data.TFRecordDataset(os.path.join(here, "examples.tfrecord"))]
out = run(os.path.join(models, "parse_example"), "serving_default", {"examples": np.array(records, dtype=object)})
expected["parse_example"] = [{"id": int(i), "total": float(np.float32(t))} for i, t in zip(out["id"], out["total"])]


# 5. A string in, a string out.
class Strings(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text):
        return {"upper": tf.strings.upper(text)}


st = Strings()
tf.saved_model.save(st, os.path.join(models, "strings"), signatures={"serving_default": st.serve.get_concrete_function()})
texts = [b"hello world", b"{\"not\": \"parsed\"}", "ünïcode".encode(), b"\xfe\xffbytes"]
out = run(os.path.join(models, "strings"), "serving_default", {"text": np.array(texts, dtype=object)})
expected["strings"] = {"inputs_b64": [base64.b64encode(t).decode() for t in texts],
                       "outputs_b64": [base64.b64encode(bytes(u)).decode() for u in out["upper"]]}

with open(os.path.join(models, "expected.json"), "w") as f:
    json.dump(expected, f, indent=1)
    f.write("\n")
print("wrote", ", ".join(k for k in expected if k != "tensorflow"))
