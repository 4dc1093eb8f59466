#!/usr/bin/env python3
"""This crate against what its users would run instead (issue #15), as ratios.

    bash benches/compare.sh --peers [--records N] [--rounds R] [--no-ray] [--no-beam] [--plot DIR]

The job: N (default 1,000,000) JSON-lines instances {"key": i, "features":
[4 floats]} through the bundled MLP (tests/data/models/keras_mlp.onnx, a
Keras model converted by tf2onnx), and N/4 instances of 64 floats through an
MLP of the same shape made here (64 -> 32 -> 3, softmax; seeded weights,
written with the onnx package into target/compare-peers/). Batches of 64, 2
workers or processes, results as JSON lines with the key and the outputs.

The contestants, each a whole process, timed in R (default 5) rounds that
alternate them:

- this crate: the onnxruntime job (OrtPredictor) and the tract job
  (OnnxPredictor) through compare_helper, 2 workers;
- a hand-written Python script: 2 processes, each reading its half of the
  lines, json.loads, numpy batches of 64, onnxruntime's InferenceSession.run
  (one thread), json.dumps, a file of its own;
- Ray Data: read_json(lines=True).map_batches(a class holding an
  onnxruntime session, batch_size=64, concurrency=2, num_cpus=0.5)
  .write_json(...). (With num_cpus=1 per actor on 2 CPUs Ray Data leaves its
  read tasks without a CPU and stalls; 0.5 lets them run.)
- Apache Beam on the DirectRunner, 2 worker processes: ReadFromText |
  Map(json.loads) | RunInference(KeyedModelHandler(OnnxModelHandlerNumpy))
  with batches of 64 | WriteToText.

Before any timing counts, every contestant's outputs are checked against
this crate's: the same keys, outputs within 1e-5. Python, numpy,
onnxruntime, Ray and Beam go into venvs under target/ (target/peers-*-venv)
on first use (pinned below); a peer that cannot be installed or run is skipped, saying why
(--no-ray, --no-beam skip one on purpose).
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
from compare import ROOT, alternate, plot, sh, target_dir  # noqa: E402

# Each peer in a venv of its own (Beam pins its own numpy and pyarrow).
BASE = ["numpy==2.2.6", "onnx==1.23.2", "onnxruntime==1.31.1"]
RAY = ["ray[data]==2.60.0", "onnxruntime==1.31.1"]
BEAM = ["apache-beam==2.77.0", "onnxruntime==1.31.1", "onnx==1.23.2"]

MAKE_MLP64 = r"""
import sys
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(64)
w1 = rng.normal(0, 0.2, (64, 32)).astype(np.float32)
b1 = rng.normal(0, 0.1, (32,)).astype(np.float32)
w2 = rng.normal(0, 0.2, (32, 3)).astype(np.float32)
b2 = rng.normal(0, 0.1, (3,)).astype(np.float32)
nodes = [
    helper.make_node("MatMul", ["features", "w1"], ["h1"]),
    helper.make_node("Add", ["h1", "b1"], ["h2"]),
    helper.make_node("Relu", ["h2"], ["h3"]),
    helper.make_node("MatMul", ["h3", "w2"], ["h4"]),
    helper.make_node("Add", ["h4", "b2"], ["h5"]),
    helper.make_node("Softmax", ["h5"], ["output_0"], axis=-1),
]
graph = helper.make_graph(
    nodes, "mlp64",
    [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 64])],
    [helper.make_tensor_value_info("output_0", TensorProto.FLOAT, ["N", 3])],
    [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, sys.argv[1])
"""

# Two processes, each its half of the lines; json.loads, numpy batches of
# 64, InferenceSession.run with one thread, json.dumps.
SCRIPT = r"""
import json, sys
from multiprocessing import Process
import numpy as np
import onnxruntime as ort

def work(model, path, out, part, parts):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    outputs = [o.name for o in session.get_outputs()]
    with open(path) as f, open(f"{out}.{part}", "w") as w:
        keys, rows = [], []
        def flush():
            result = session.run(outputs, {name: np.asarray(rows, dtype=np.float32)})
            for i, key in enumerate(keys):
                record = {"key": key}
                for o, values in zip(outputs, result):
                    record[o] = values[i].tolist()
                w.write(json.dumps(record) + "\n")
            keys.clear(); rows.clear()
        for i, line in enumerate(f):
            if i % parts != part:
                continue
            instance = json.loads(line)
            keys.append(instance["key"]); rows.append(instance["features"])
            if len(keys) == 64:
                flush()
        if keys:
            flush()

if __name__ == "__main__":
    model, path, out = sys.argv[1:4]
    procs = [Process(target=work, args=(model, path, out, p, 2)) for p in range(2)]
    for p in procs: p.start()
    for p in procs: p.join(); assert p.exitcode == 0
"""

RAY_SCRIPT = r"""
import sys
import numpy as np
import ray

model, path, out = sys.argv[1:4]

class Model:
    def __init__(self):
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, batch):
        x = np.stack(batch["features"]).astype(np.float32)
        result = self.session.run(self.outputs, {self.input: x})
        out = {"key": batch["key"]}
        for name, values in zip(self.outputs, result):
            out[name] = list(values)
        return out

ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
(ray.data.read_json(path, lines=True)
    .map_batches(Model, batch_size=64, concurrency=2, num_cpus=0.5, batch_format="numpy")
    .write_json(out))
"""

BEAM_SCRIPT = r"""
import json, sys
import numpy as np
import apache_beam as beam
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.ml.inference.onnx_inference import OnnxModelHandlerNumpy
from apache_beam.options.pipeline_options import PipelineOptions

model, path, out = sys.argv[1:4]

def keyed(line):
    instance = json.loads(line)
    return instance["key"], np.asarray(instance["features"], dtype=np.float32)

def line(item):
    key, result = item
    inference = result.inference
    if isinstance(inference, dict):
        record = {"key": key, **{k: np.asarray(v).tolist() for k, v in inference.items()}}
    else:
        record = {"key": key, "output_0": np.asarray(inference).tolist()}
    return json.dumps(record)

handler = KeyedModelHandler(OnnxModelHandlerNumpy(
    model_uri=model, min_batch_size=64, max_batch_size=64,
    provider=["CPUExecutionProvider"]))
options = PipelineOptions(direct_num_workers=2, direct_running_mode="multi_processing")
with beam.Pipeline(options=options) as p:
    (p | beam.io.ReadFromText(path)
       | beam.Map(keyed)
       | RunInference(handler)
       | beam.Map(line)
       | beam.io.WriteToText(out))
"""


def wall(cmd):
    """The wall time of a whole process: start-up, model load and all."""
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def venv_python(name, packages, what):
    """target/peers-NAME-venv's python, with `packages` installed (once);
    None and why when they cannot be."""
    venv = os.path.join(ROOT, "target", f"peers-{name}-venv")
    python = os.path.join(venv, "bin", "python")
    stamp = os.path.join(venv, "installed")
    try:
        if not os.path.exists(stamp):
            if not os.path.exists(python):
                sh([sys.executable, "-m", "venv", venv], stdout=subprocess.DEVNULL)
            print(f"installing {what} into target/peers-{name}-venv (once)...", file=sys.stderr)
            sh([python, "-m", "pip", "install", "--quiet"] + packages,
               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            open(stamp, "w").close()
        return python, None
    except subprocess.CalledProcessError as e:
        tail = (e.stderr or b"").decode(errors="replace").strip().splitlines()[-2:]
        return None, f"could not install {what}: {' / '.join(tail)}"


def write_instances(path, n, width, seed):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            features = [round(rng.gauss(0, 1), rng.choice([2, 3, 4])) for _ in range(width)]
            f.write(json.dumps({"key": i, "features": features}) + "\n")


def read_outputs(paths):
    """key -> outputs (every field but the key), from JSON-lines files."""
    found = {}
    for path in paths:
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                key = record.pop("key")
                found[key] = record
    return found


def flat(v):
    if isinstance(v, list):
        return [x for item in v for x in flat(item)]
    return [float(v)]


def same_outputs(ours, theirs, who):
    """Why `theirs` differs from `ours`, or None."""
    if len(theirs) != len(ours):
        return f"{who}: {len(theirs)} results for {len(ours)} instances"
    for key, want in ours.items():
        got = theirs.get(key)
        if got is None:
            return f"{who}: no result for key {key}"
        for name, value in want.items():
            a, b = flat(value), flat(got.get(name, []))
            if len(a) != len(b) or any(abs(x - y) > 1e-5 for x, y in zip(a, b)):
                return f"{who}: key {key}, output {name}: {got.get(name)} instead of {value}"
    return None


def files_under(path, prefix=""):
    if os.path.isfile(path):
        return [path]
    return sorted(os.path.join(path, f) for f in os.listdir(path) if f.startswith(prefix))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--no-beam", action="store_true")
    parser.add_argument("--plot", metavar="DIR", help="write the ratios as DIR/peers.svg")
    args = parser.parse_args()

    from compare_models import ort_library
    os.environ["ORT_DYLIB_PATH"] = ort_library()
    sh(["cargo", "build", "--quiet", "--release", "--features", "onnx,ort", "--example", "compare_helper"], cwd=ROOT)
    helper = os.path.join(target_dir(), "release", "examples", "compare_helper")
    python, why = venv_python("script", BASE, "numpy and onnxruntime")
    if python is None:
        sys.exit(why)
    skipped = {}
    ray_python = beam_python = None
    if args.no_ray:
        skipped["Ray Data"] = "skipped (--no-ray)"
    else:
        ray_python, why = venv_python("ray", RAY, "Ray Data")
        if why:
            skipped["Ray Data"] = why
    if args.no_beam:
        skipped["Beam"] = "skipped (--no-beam)"
    else:
        beam_python, why = venv_python("beam", BEAM, "Apache Beam")
        if why:
            skipped["Beam"] = why

    cache = os.path.join(target_dir(), "compare-peers")
    os.makedirs(cache, exist_ok=True)
    mlp4 = os.path.join(ROOT, "tests", "data", "models", "keras_mlp.onnx")
    mlp64 = os.path.join(cache, "mlp64.onnx")
    if not os.path.exists(mlp64):
        script = os.path.join(cache, "make_mlp64.py")
        with open(script, "w") as f:
            f.write(MAKE_MLP64)
        sh([python, script, mlp64])

    work = tempfile.mkdtemp(prefix="bp-peers-")
    results = []
    try:
        scripts = {}
        for name, text in (("script", SCRIPT), ("ray", RAY_SCRIPT), ("beam", BEAM_SCRIPT)):
            # Not ray.py, beam.py: a script named as a module shadows it.
            scripts[name] = os.path.join(work, f"peer_{name}.py")
            with open(scripts[name], "w") as f:
                f.write(text)
        for label, model, n, width in (("4 floats", mlp4, args.records, 4),
                                       ("64 floats", mlp64, max(args.records // 4, 1), 64)):
            data = os.path.join(work, f"in{width}.jsonl")
            write_instances(data, n, width, seed=width)
            sh(["cat", data], stdout=subprocess.DEVNULL)
            outs = {name: os.path.join(work, f"out-{name}-{width}") for name in
                    ("ort", "tract", "script", "ray", "beam")}

            def fresh(path):
                """Removes what a run left at `path` (a file, files, a directory)."""
                for f in os.listdir(os.path.dirname(path)):
                    if f.startswith(os.path.basename(path)):
                        f = os.path.join(os.path.dirname(path), f)
                        shutil.rmtree(f) if os.path.isdir(f) else os.remove(f)

            def job(spec, out):
                return lambda: (fresh(out), wall([helper, "job", spec, "json", data, out, "2"]))[1]

            def peer(py, script, out):
                return lambda: (fresh(out), wall([py, script, model, data, out]))[1]

            cases = {
                "ort job": job("ort:" + model, outs["ort"]),
                "tract job": job("onnx:" + model, outs["tract"]),
                "Python script": peer(python, scripts["script"], outs["script"]),
            }
            if ray_python:
                cases["Ray Data"] = peer(ray_python, scripts["ray"], outs["ray"])
            if beam_python:
                cases["Beam"] = peer(beam_python, scripts["beam"], outs["beam"])

            # Check every contestant's outputs once, before timing counts.
            for name in list(cases):
                try:
                    cases[name]()
                except subprocess.CalledProcessError as e:
                    if name in ("Ray Data", "Beam"):
                        tail = (e.stderr or b"").decode(errors="replace").strip().splitlines()[-3:]
                        skipped[name] = f"failed to run: {' / '.join(tail)}"
                        del cases[name]
                        continue
                    raise
            ours = read_outputs(files_under(outs["ort"], "prediction.results-"))
            assert len(ours) == n, f"our job wrote {len(ours)} results for {n}"
            produced = {
                "tract job": files_under(outs["tract"], "prediction.results-"),
                "Python script": files_under(work, f"out-script-{width}."),
                "Ray Data": files_under(outs["ray"]) if os.path.isdir(outs["ray"]) else [],
                "Beam": files_under(work, f"out-beam-{width}-"),
            }
            for name in [c for c in cases if c in produced]:
                why = same_outputs(ours, read_outputs(produced[name]), name)
                if why:
                    sys.exit(f"outputs differ, no timing: {why}")
            print(f"{label}: every contestant's outputs equal the ort job's (within 1e-5)", file=sys.stderr)
            med = alternate(cases, args.rounds)
            results.append((label, n, med))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nmedians of {args.rounds} alternating rounds ({time.strftime('%Y-%m-%d')}, "
          f"{os.cpu_count()} CPUs), batches of 64, 2 workers or processes")
    goals = {"Python script": 6, "Ray Data": 30, "Beam": 10}
    bars = []
    for label, n, med in results:
        print(f"\n{label}, {n} instances")
        for name, secs in med.items():
            print(f"  {name:<16} {secs * 1000:10.1f} ms  {n / secs / 1e6:7.3f} M instances/s")
        for ours in ("ort job", "tract job"):
            for name, target in goals.items():
                if name not in med:
                    continue
                ratio = med[name] / med[ours]
                if label == "4 floats" and ours == "ort job":
                    verdict = "PASS" if ratio >= target else "MISS"
                    print(f"  {ours} vs {name:<14} {ratio:7.1f}x  (goal >= {target})  {verdict}")
                    bars.append((f"{label}: {ours} vs {name}", ratio, target))
                else:
                    print(f"  {ours} vs {name:<14} {ratio:7.1f}x")
                    bars.append((f"{label}: {ours} vs {name}", ratio, None))
    for name, why in skipped.items():
        print(f"  {name}: {why}")
    if args.plot:
        plot(os.path.join(args.plot, "peers.svg"),
             f"This crate's ONNX jobs against its peers: times faster (2 workers, {os.cpu_count()} CPUs)", bars)


if __name__ == "__main__":
    main()
