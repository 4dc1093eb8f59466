#!/usr/bin/env python3
"""The model runtimes of issue #14, printed as ratios.

    bash benches/compare.sh --models [--records N] [--rounds R] [--plot DIR]

On N (default 1,000,000) JSON-lines instances {"key": i, "features": [4 numbers]}
it times, in R (default 3) rounds that alternate the cases:

- the bundled MLP (tests/data/models/keras_mlp.onnx, a Keras model converted
  by tf2onnx): the onnxruntime job (OrtPredictor, 1 worker, batches of 64),
  the same batches through `ort` alone in one loop (parse each line into a
  typed struct, its features straight into f32s, gather them, run the
  session, write the outputs: the bare cost), and the
  tract job (OnnxPredictor, 1 worker);
- a 500-tree gradient-boosting regressor (scikit-learn, converted by
  skl2onnx; trained here once, into target/compare-models/): the onnxruntime
  job with 1 and 2 workers and the bare `ort` loop. tract cannot load it
  (TreeEnsembleRegressor);
- a Keras MLP SavedModel (tests/data/tensorflow/models/mlp, instances
  {"key": i, "x": [4 numbers]}): the TensorFlow job (TensorflowPredictor,
  batches of 64) with 1 and 2 workers, the same C API calls in one
  hand-written Rust loop (compare_helper tf-bare: typed parse, one session,
  write), and TensorFlow's own serving signature called from Python on the
  same batches (json.loads, numpy, the signature, json.dumps), one intra-
  and one inter-op thread everywhere.

onnxruntime comes from tests/ort/library.sh (PyPI's wheel, under target/),
TensorFlow from tests/tensorflow/library.sh (tensorflow-cpu 2.21.0 in
target/tf-venv); scikit-learn and skl2onnx, pinned, go into
target/compare-models-venv. --no-tensorflow leaves the SavedModel out.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import ROOT, alternate, plot, sh, target_dir, timed  # noqa: E402

MAKE_GB = r"""
import sys
import numpy as np
from sklearn.datasets import make_regression
from sklearn.ensemble import GradientBoostingRegressor
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType

x, y = make_regression(n_samples=20000, n_features=4, n_informative=4, noise=5.0, random_state=0)
x = x.astype(np.float32)
model = GradientBoostingRegressor(n_estimators=500, max_depth=3, random_state=0).fit(x, y)
onx = to_onnx(model, initial_types=[("features", FloatTensorType([None, 4]))],
              target_opset={"": 17, "ai.onnx.ml": 3})
with open(sys.argv[1], "wb") as f:
    f.write(onx.SerializeToString())
"""


def ort_library():
    out = subprocess.run(["bash", os.path.join(ROOT, "tests", "ort", "library.sh")],
                         capture_output=True, text=True)
    line = out.stdout.strip()
    if out.returncode != 0 or line.startswith("SKIP"):
        sys.exit(f"no onnxruntime library: {line or out.stderr}")
    return line


def gradient_boosting_model():
    """The 500-tree model, made once with pinned scikit-learn and skl2onnx."""
    cache = os.path.join(ROOT, "target", "compare-models")
    path = os.path.join(cache, "gradient_boosting_500.onnx")
    if os.path.exists(path):
        return path
    os.makedirs(cache, exist_ok=True)
    venv = os.path.join(ROOT, "target", "compare-models-venv")
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        sh([sys.executable, "-m", "venv", venv], stdout=subprocess.DEVNULL)
    print("installing scikit-learn and skl2onnx into target/compare-models-venv (once)...", file=sys.stderr)
    sh([python, "-m", "pip", "install", "--quiet", "scikit-learn==1.9.1", "skl2onnx==1.20.0", "onnx==1.23.2"])
    script = os.path.join(cache, "make_gb.py")
    with open(script, "w") as f:
        f.write(MAKE_GB)
    sh([python, script, path + ".part"])
    os.replace(path + ".part", path)
    return path


def write_instances(path, n, seed=11, field="features"):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            features = [round(rng.gauss(0, 1), rng.choice([2, 3, 4])) for _ in range(4)]
            f.write(json.dumps({"key": i, field: features}))
            f.write("\n")


# TensorFlow's serving signature called from Python per batch of 64, as a
# user without this crate would run the SavedModel: prints "SECONDS COUNT".
TF_PYTHON = r"""
import json, os, sys, time
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
model_dir, data, out_path = sys.argv[1:4]
signature = tf.saved_model.load(model_dir).signatures["serving_default"]
start = time.time()
n = 0
with open(data) as f, open(out_path, "w") as out:
    keys, rows = [], []
    def flush():
        if not rows:
            return
        result = signature(x=tf.constant(np.array(rows, dtype=np.float32)))["output_0"].numpy()
        for key, row in zip(keys, result):
            out.write(json.dumps({"key": key, "output_0": row.tolist()}) + "\n")
        keys.clear()
        rows.clear()
    for line in f:
        instance = json.loads(line)
        keys.append(instance["key"])
        rows.append(instance["x"])
        n += 1
        if len(rows) == 64:
            flush()
    flush()
    out.flush()
    os.fsync(out.fileno())
print(f"{time.time() - start:.6f} {n}")
"""


def tensorflow_library():
    out = subprocess.run(["bash", os.path.join(ROOT, "tests", "tensorflow", "library.sh")],
                         capture_output=True, text=True)
    line = out.stdout.strip()
    if out.returncode != 0 or line.startswith("SKIP"):
        sys.exit(f"no TensorFlow library (--no-tensorflow leaves it out): {line or out.stderr}")
    return line


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--plot", metavar="DIR", help="write the goals' ratios as DIR/models.svg")
    parser.add_argument("--no-tensorflow", action="store_true", help="leave the SavedModel out")
    args = parser.parse_args()

    os.environ["ORT_DYLIB_PATH"] = ort_library()
    features = "onnx,ort"
    tf = not args.no_tensorflow
    if tf:
        library = tensorflow_library()
        os.environ["TENSORFLOW_DYLIB_PATH"] = library
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        # The venv's python: .../target/tf-venv/lib/python3.X/site-packages/tensorflow/lib…
        tf_python = os.path.join(library.split("/lib/python")[0], "bin", "python")
        features += ",tensorflow"
    sh(["cargo", "build", "--quiet", "--release", "--features", features, "--example", "compare_helper"], cwd=ROOT)
    helper = os.path.join(target_dir(), "release", "examples", "compare_helper")
    mlp = os.path.join(ROOT, "tests", "data", "models", "keras_mlp.onnx")
    gb = gradient_boosting_model()

    work = tempfile.mkdtemp(prefix="bp-models-")
    try:
        n = args.records
        data = os.path.join(work, "instances.jsonl")
        write_instances(data, n)
        out = os.path.join(work, "out")
        sh(["cat", data], stdout=subprocess.DEVNULL)  # into the page cache

        def job(spec, workers):
            return lambda: timed([helper, "job", spec, "json", data, out, str(workers)])

        def bare(model):
            return lambda: timed([helper, "ort-bare", model, data, os.path.join(work, "bare.jsonl")])

        cases = {
            "MLP: ort bare loop": bare(mlp),
            "MLP: ort job, 1 worker": job("ort:" + mlp, 1),
            "MLP: tract job, 1 worker": job("onnx:" + mlp, 1),
            "GB-500: ort bare loop": bare(gb),
            "GB-500: ort job, 1 worker": job("ort:" + gb, 1),
            "GB-500: ort job, 2 workers": job("ort:" + gb, 2),
        }
        if tf:
            saved = os.path.join(ROOT, "tests", "data", "tensorflow", "models", "mlp")
            tf_data = os.path.join(work, "instances_x.jsonl")
            write_instances(tf_data, n, field="x")
            script = os.path.join(work, "tf_python.py")
            with open(script, "w") as f:
                f.write(TF_PYTHON)

            def tf_job(workers):
                return lambda: timed([helper, "job", "tensorflow:" + saved, "json", tf_data, out, str(workers)])

            cases.update({
                "SavedModel: bare C API loop": lambda: timed(
                    [helper, "tf-bare", saved, tf_data, os.path.join(work, "tf-bare.jsonl")]),
                "SavedModel: job, 1 worker": tf_job(1),
                "SavedModel: job, 2 workers": tf_job(2),
                "SavedModel: Python signature": lambda: timed(
                    [tf_python, script, saved, tf_data, os.path.join(work, "tf-python.jsonl")]),
            })
        med = alternate(cases, args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{n} instances; medians of {args.rounds} alternating rounds "
          f"({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs)")
    for name, secs in med.items():
        print(f"  {name:<28} {secs * 1000:9.1f} ms  {n / secs / 1e6:7.3f} M instances/s")
    speed = lambda name: 1 / med[name]
    goals = [
        ("MLP: ort job vs bare ort loop", speed("MLP: ort job, 1 worker") / speed("MLP: ort bare loop"), 0.9),
        ("GB-500: ort job vs bare ort loop", speed("GB-500: ort job, 1 worker") / speed("GB-500: ort bare loop"), 0.9),
        ("MLP: ort job vs tract job", speed("MLP: ort job, 1 worker") / speed("MLP: tract job, 1 worker"), 1.5),
        ("GB-500: ort job 2w vs 1w", speed("GB-500: ort job, 2 workers") / speed("GB-500: ort job, 1 worker"), 1.7),
    ]
    if tf:
        goals += [
            ("SavedModel: job vs Python signature", speed("SavedModel: job, 1 worker") / speed("SavedModel: Python signature"), 10),
            ("SavedModel: job vs bare C API loop", speed("SavedModel: job, 1 worker") / speed("SavedModel: bare C API loop"), 0.8),
            ("SavedModel: job 2w vs 1w", speed("SavedModel: job, 2 workers") / speed("SavedModel: job, 1 worker"), 1.7),
        ]
    print("\ngoals of #14 and #29 (ratios of speed; higher is better)")
    for label, value, target in goals:
        verdict = "PASS" if value >= target else "MISS"
        print(f"  {label:<40} {value:7.2f}  (goal >= {target})  {verdict}")
    print("  GB-500 on tract: not run (tract has no TreeEnsembleRegressor)")
    if args.plot:
        plot(os.path.join(args.plot, "models.svg"),
             f"Model runtimes: ratios of speed ({n} instances; dashed: goal)", goals)


if __name__ == "__main__":
    main()
