#!/usr/bin/env python3
"""This crate against its peers on the same files, printed as ratios.

    python3 benches/compare.py [--records N] [--rounds R] [--no-tensorflow] [--baseline REV] [--plot DIR]

(or `bash benches/compare.sh`, which runs this.) It generates, in a
temporary directory, N (default 1,000,000) JSON-lines instances like
{"key": 7, "x": [0.1, -2.3, 1.25, 0.5]}, the same instances as serialized
tf.train.Example records in a TFRecord file, and that file gzip-compressed.
Then, in R (default 5) rounds that alternate the cases, so that the
machine's drift falls on all of them alike, it times:

- the echo job of this crate (BatchExecutor over LocalStorage, batches of
  64) with 1 and 2 workers, against a bare single-thread loop that parses
  each line with serde_json and writes it back (the bare cost of the work),
  and against a plain Python batch executor (json.loads per line, batches of
  64, json.dumps per prediction); the bare loops sync their output to disk
  at the end, as a job does when it commits its files;
- the echo job on the TFRecords, 1 and 2 workers, against a loop that frames
  each record and writes it as the echo's {"b64": ...} line, and its 2w/1w
  speedup against the bound `compare_helper phases` computes for an
  executor that cost nothing (issue #15 §3: at least 0.9 of it); the JSON
  echo job's 2w/1w against its own such bound too (#31 §1: at least 0.9 of it);
- the same job with a CPU-bound predictor, 1 and 2 workers (on N/10 lines);
- this crate framing every TFRecord (and gzip TFRecord) record, against
  `cat FILE > /dev/null` and `gzip -dc FILE > /dev/null`, and, if
  tensorflow-cpu installs into the virtual environment this script makes
  (target/compare-venv), against tf.data.TFRecordDataset(...).batch(1024);
- the peak RSS of the echo job on 20 thousand and 2 million lines;
- issue #6's: the job with the bundled ONNX classifier (tract-onnx) with 1
  and 2 workers, against the same model over the same batches of 64 in a
  bare loop (on N/4 lines of four features each).

With --baseline REV (a git revision), it also times the echo and ONNX jobs
of that revision's compare_helper (built once, in a git worktree under
target/compare-baseline/), for the speedups issue #15 asks of the instance
path.

It prints the medians and each goal (issues #4, #6, #7, #15) as a ratio with
PASS or MISS. Python and TensorFlow stay out of the crate: only this script uses
them, and it says so when TensorFlow cannot be installed.
"""

import argparse
import gzip
import json
import os
import random
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def baseline_helper(rev):
    """compare_helper as git revision `rev` builds it: made once, in a git
    worktree and a target directory of its own under
    target/compare-baseline/ (sharing the main one would leave cargo's
    copy of the current helper stale), and kept as compare_helper-COMMIT."""
    commit = subprocess.run(["git", "rev-parse", "--verify", rev + "^{commit}"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout.strip()
    base = os.path.join(target_dir(), "compare-baseline")
    binary = os.path.join(base, "compare_helper-" + commit[:12])
    if os.path.exists(binary):
        return binary, commit[:12]
    tree = os.path.join(base, "tree-" + commit[:12])
    if not os.path.exists(tree):
        sh(["git", "worktree", "add", "--detach", tree, commit], cwd=ROOT, stdout=subprocess.DEVNULL)
    print(f"building compare_helper at {commit[:12]} (once; a while)...", file=sys.stderr)
    own_target = os.path.join(base, "target")
    env = dict(os.environ, CARGO_TARGET_DIR=own_target)
    sh(["cargo", "build", "--quiet", "--release", "--features", "onnx", "--example", "compare_helper"],
       cwd=tree, env=env)
    shutil.copy(os.path.join(own_target, "release", "examples", "compare_helper"), binary)
    return binary, commit[:12]


def plot(path, title, rows):
    """An SVG bar chart of ratios, one bar per (label, ratio, goal or None):
    a log scale from 0.1 to the largest ratio, a line at 1 (even), each
    goal marked, bars green where they meet their goal, red where they miss
    it, grey where there is none."""
    import math
    top = max([1.0] + [r for _, r, _ in rows] + [g for _, _, g in rows if g])
    decades = [10.0 ** e for e in range(-1, math.ceil(math.log10(top * 1.05)) + 1)]
    lo, hi = math.log10(decades[0]), math.log10(decades[-1])
    left, width, bar, gap = 300, 460, 18, 8
    height = 50 + len(rows) * (bar + gap) + 30
    x = lambda v: left + (math.log10(max(v, decades[0])) - lo) / (hi - lo) * width
    esc = lambda t: t.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 90}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="100%" height="100%" fill="white"/>',
           f'<text x="10" y="22" font-size="14" font-weight="bold">{esc(title)}</text>']
    for d in decades:
        out.append(f'<line x1="{x(d):.1f}" y1="36" x2="{x(d):.1f}" y2="{height - 26}" '
                   f'stroke="{"#444" if d == 1 else "#ddd"}"/>')
        out.append(f'<text x="{x(d):.1f}" y="{height - 10}" text-anchor="middle">{d:g}x</text>')
    for i, (label, ratio, goal) in enumerate(rows):
        y = 44 + i * (bar + gap)
        color = "#999" if goal is None else "#2a7" if ratio >= goal else "#d33"
        out.append(f'<text x="{left - 8}" y="{y + 13}" text-anchor="end">{esc(label)}</text>')
        out.append(f'<rect x="{x(decades[0]):.1f}" y="{y}" width="{x(ratio) - x(decades[0]):.1f}" '
                   f'height="{bar}" fill="{color}"/>')
        out.append(f'<text x="{x(ratio) + 4:.1f}" y="{y + 13}">{ratio:.2f}x</text>')
        if goal:
            out.append(f'<line x1="{x(goal):.1f}" y1="{y - 3}" x2="{x(goal):.1f}" y2="{y + bar + 3}" '
                       f'stroke="black" stroke-width="2" stroke-dasharray="3,2"/>')
    out.append("</svg>")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    print(f"wrote {path}", file=sys.stderr)


def target_dir():
    meta = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    return json.loads(meta.stdout)["target_directory"]


# ---- inputs ----

def instances(n, seed=7):
    rng = random.Random(seed)
    for i in range(n):
        x = [round(rng.uniform(-3, 3), rng.choice([1, 2, 3])) for _ in range(4)]
        yield {"key": i, "x": x}


def write_jsonl(path, n):
    with open(path, "w") as f:
        for inst in instances(n):
            f.write(json.dumps(inst))
            f.write("\n")


def varint(v):
    out = bytearray()
    v &= (1 << 64) - 1
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(number, wire, payload):
    key = varint(number << 3 | wire)
    if wire == 2:
        return key + varint(len(payload)) + payload
    return key + payload


def example(inst):
    """tf.train.Example{features{feature{"key": int64_list, "x": float_list}}}."""
    key = field(3, 2, field(1, 2, b"".join(varint(v) for v in [inst["key"]])))  # Int64List, packed
    x = field(2, 2, field(1, 2, b"".join(struct.pack("<f", v) for v in inst["x"])))  # FloatList, packed
    entries = field(1, 2, field(1, 2, b"key") + field(2, 2, key))
    entries += field(1, 2, field(1, 2, b"x") + field(2, 2, x))
    return field(1, 2, entries)  # Example.features


def write_tfrecords(helper, path, n, workdir):
    blobs = os.path.join(workdir, "blobs")
    with open(blobs, "wb") as f:
        for inst in instances(n):
            e = example(inst)
            f.write(struct.pack("<I", len(e)))
            f.write(e)
    sh([helper, "to-tfrecord", blobs, path], stdout=subprocess.DEVNULL)
    os.remove(blobs)


# ---- the Python peers ----

PYTHON_EXECUTOR = r"""
import json, sys, time
start = time.perf_counter()
n = 0
with open(sys.argv[1]) as f, open(sys.argv[2], "w") as out:
    batch = []
    def flush(batch):
        predictions = batch  # the echo model
        for p in predictions:
            out.write(json.dumps(p))
            out.write("\n")
    for line in f:
        if line.strip():
            batch.append(json.loads(line))
            if len(batch) == 64:
                flush(batch)
                n += len(batch)
                batch = []
    flush(batch)
    n += len(batch)
print(f"{time.perf_counter() - start:.6f} {n}")
"""

TF_DATA = r"""
import os, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
path, compression = sys.argv[1], sys.argv[2]
start = time.perf_counter()
n = 0
for batch in tf.data.TFRecordDataset(path, compression_type=compression).batch(1024):
    n += int(batch.shape[0])
print(f"{time.perf_counter() - start:.6f} {n}")
"""


def tensorflow_python(skip):
    """The venv's python with tensorflow importable, or None (and why)."""
    if skip:
        return None, "skipped (--no-tensorflow)"
    venv = os.path.join(ROOT, "target", "compare-venv")
    python = os.path.join(venv, "bin", "python")
    check = [python, "-c", "import tensorflow"]
    if os.path.exists(python) and subprocess.run(check, capture_output=True).returncode == 0:
        return python, None
    try:
        if not os.path.exists(python):
            sh([sys.executable, "-m", "venv", venv], stdout=subprocess.DEVNULL)
        print("installing tensorflow-cpu into target/compare-venv (once)...", file=sys.stderr)
        sh([python, "-m", "pip", "install", "--quiet", "tensorflow-cpu"])
        sh(check, capture_output=True)
        return python, None
    except (subprocess.CalledProcessError, OSError) as e:
        return None, f"tensorflow-cpu could not be installed ({e})"


# ---- timing ----

def timed(cmd):
    """Runs cmd; its own `SECONDS COUNT` line if it prints one, else wall time."""
    start = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()
    wall = time.perf_counter() - start
    return float(out[0]) if len(out) == 2 else wall


def timed_to_null(cmd):
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def alternate(cases, rounds):
    """Runs every case once per round, in turn, so that the machine's
    drift falls on all of them alike; the median time of each.

    Dirty pages are written out before each case (`os.sync`), so that no
    case pays for another's writes: the jobs and the bare loops sync their
    own output, but the Python peers do not, and the kernel writes theirs
    back 30 s later, into whichever case runs then."""
    times = {name: [] for name in cases}
    for r in range(rounds):
        for name, run in cases.items():
            os.sync()
            times[name].append(run())
        print(f"round {r + 1}/{rounds} done", file=sys.stderr)
    return {name: statistics.median(v) for name, v in times.items()}


def peak_rss_kb(cmd):
    out = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, check=True, capture_output=True, text=True)
    return int(out.stderr.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-tensorflow", action="store_true")
    parser.add_argument("--baseline", metavar="REV", help="also time this git revision's echo and ONNX jobs")
    parser.add_argument("--plot", metavar="DIR", help="write the goals' ratios as DIR/executor.svg")
    args = parser.parse_args()

    baseline = baseline_helper(args.baseline) if args.baseline else None
    sh(["cargo", "build", "--quiet", "--release", "--features", "onnx", "--example", "compare_helper"], cwd=ROOT)
    helper = os.path.join(target_dir(), "release", "examples", "compare_helper")
    tf_python, tf_why = tensorflow_python(args.no_tensorflow)

    work = tempfile.mkdtemp(prefix="bp-compare-")
    try:
        n = args.records
        jsonl = os.path.join(work, "instances.jsonl")
        small = os.path.join(work, "small.jsonl")
        tfr = os.path.join(work, "examples.tfrecord")
        tfgz = tfr + ".gz"
        write_jsonl(jsonl, n)
        write_jsonl(small, max(n // 10, 1))
        iris = os.path.join(work, "iris.jsonl")
        with open(iris, "w") as f:
            for inst in instances(max(n // 4, 1)):
                f.write(json.dumps({"key": inst["key"], "features": [abs(v) for v in inst["x"]]}) + "\n")
        model = "onnx:" + os.path.join(ROOT, "tests", "data", "onnx", "classifier.onnx")
        mlp = "onnx:" + os.path.join(ROOT, "tests", "data", "models", "keras_mlp.onnx")
        write_tfrecords(helper, tfr, n, work)
        with open(tfr, "rb") as src, gzip.open(tfgz, "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst)
        out = os.path.join(work, "out")
        py_exec = os.path.join(work, "executor.py")
        with open(py_exec, "w") as f:
            f.write(PYTHON_EXECUTOR)
        tf_script = os.path.join(work, "tf_data.py")
        with open(tf_script, "w") as f:
            f.write(TF_DATA)
        for path in (jsonl, tfr, tfgz):
            timed_to_null(["cat", path])  # into the page cache

        cases = {
            "bare serde_json loop": lambda: timed([helper, "bare-json", jsonl, os.path.join(work, "bare.jsonl")]),
            "echo job, 1 worker": lambda: timed([helper, "job", "echo", "json", jsonl, out, "1"]),
            "echo job, 2 workers": lambda: timed([helper, "job", "echo", "json", jsonl, out, "2"]),
            "Python executor": lambda: timed([sys.executable, py_exec, jsonl, os.path.join(work, "py.jsonl")]),
            "cpu job, 1 worker": lambda: timed([helper, "job", "cpu", "json", small, out, "1"]),
            "cpu job, 2 workers": lambda: timed([helper, "job", "cpu", "json", small, out, "2"]),
            "bare TFRecord echo loop": lambda: timed([helper, "bare-tfrecord-echo", tfr, os.path.join(work, "bare_tf.jsonl")]),
            "TFRecord echo job, 1 worker": lambda: timed([helper, "job", "echo", "tfrecord", tfr, out, "1"]),
            "TFRecord echo job, 2 workers": lambda: timed([helper, "job", "echo", "tfrecord", tfr, out, "2"]),
            "ONNX bare loop": lambda: timed([helper, "onnx-bare", model[5:], iris, os.path.join(work, "onnx.jsonl")]),
            "ONNX job, 1 worker": lambda: timed([helper, "job", model, "json", iris, out, "1"]),
            "ONNX job, 2 workers": lambda: timed([helper, "job", model, "json", iris, out, "2"]),
            "cat TFRecord": lambda: timed_to_null(["cat", tfr]),
            "read TFRecord": lambda: timed([helper, "read", "tfrecord", tfr]),
            "gzip -dc": lambda: timed_to_null(["gzip", "-dc", tfgz]),
            "read gzip TFRecord": lambda: timed([helper, "read", "tfrecord-gzip", tfgz]),
        }
        if baseline:
            old = baseline[0]
            cases["echo job, 1 worker, baseline"] = lambda: timed([old, "job", "echo", "json", jsonl, out, "1"])
            cases["echo job, 2 workers, baseline"] = lambda: timed([old, "job", "echo", "json", jsonl, out, "2"])
            cases["ONNX job, 1 worker, baseline"] = lambda: timed([old, "job", model, "json", iris, out, "1"])
            # #15's goal is on the bundled MLP (a Keras model), on tract.
            cases["MLP job, 1 worker"] = lambda: timed([helper, "job", mlp, "json", iris, out, "1"])
            cases["MLP job, 1 worker, baseline"] = lambda: timed([old, "job", mlp, "json", iris, out, "1"])
        if tf_python:
            cases["tf.data batch(1024)"] = lambda: timed([tf_python, tf_script, tfr, ""])
            cases["tf.data gzip batch(1024)"] = lambda: timed([tf_python, tf_script, tfgz, "GZIP"])
        med = alternate(cases, args.rounds)
        # The zero-cost bound on the TFRecord echo job's 2w/1w speedup (each
        # part the best of 5; the parts go to stderr).
        phases = subprocess.run([helper, "phases", "tfrecord", tfr, os.path.join(work, "phases.jsonl")],
                                check=True, capture_output=True, text=True)
        bound = float(phases.stdout.split()[0])
        print(phases.stderr.strip(), file=sys.stderr)
        # The same bound for the JSON echo job, with its own work (the echo
        # predictor's JSON-lines path), its goal since #31 §1.
        phases = subprocess.run([helper, "phases", "json", jsonl, os.path.join(work, "phases.jsonl")],
                                check=True, capture_output=True, text=True)
        json_bound = float(phases.stdout.split()[0])
        print(phases.stderr.strip(), file=sys.stderr)

        rss = {}
        for lines in (20_000, 2_000_000):
            path = os.path.join(work, f"rss{lines}.jsonl")
            write_jsonl(path, lines)
            rss[lines] = peak_rss_kb([helper, "job", "echo", "json", path, os.path.join(work, "rss_out"), "2"])
            os.remove(path)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{n} instances; medians of {args.rounds} alternating rounds "
          f"({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs)")
    for name, secs in med.items():
        count = n // 10 if name.startswith("cpu") else n // 4 if name.startswith(("ONNX", "MLP")) else n
        print(f"  {name:<30} {secs * 1000:9.1f} ms  {count / secs / 1e6:7.2f} M records/s")
    if not tf_python:
        print(f"  tf.data: {tf_why}")

    goals = []

    def goal(label, value, target):
        goals.append((label, value, target))

    speed = lambda name: 1 / med[name]
    goal("echo job 2w vs Python executor", speed("echo job, 2 workers") / speed("Python executor"), 20)
    goal("#15: echo job 1w vs bare serde_json", speed("echo job, 1 worker") / speed("bare serde_json loop"), 1.3)
    # #31 §1: the JSON echo job is held, as the TFRecord one, to the speedup
    # an executor that cost nothing could reach here, not to a fixed 1.6.
    json_scaling = speed("echo job, 2 workers") / speed("echo job, 1 worker") / json_bound
    goal(f"#31: echo job 2w/1w vs bound {json_bound:.2f}", json_scaling, 0.9)
    goal("cpu job 2w vs 1w", speed("cpu job, 2 workers") / speed("cpu job, 1 worker"), 1.8)
    # Issue #4's own targets: the executor adds under 25% to the bare cost, on JSON and TFRecord.
    goal("#4: echo job 1w vs bare loop, JSON", speed("echo job, 1 worker") / speed("bare serde_json loop"), 0.8)
    goal("#4: echo job 1w vs bare loop, TFRecord",
         speed("TFRecord echo job, 1 worker") / speed("bare TFRecord echo loop"), 0.8)
    # #15 §3: where the framing and writing are serial, 2 workers are held
    # to the speedup an executor that cost nothing could reach
    # (compare_helper phases, measured in this run), not to a fixed 1.6.
    goal(f"#15: TFRecord 2w/1w vs bound {bound:.2f}",
         speed("TFRecord echo job, 2 workers") / speed("TFRecord echo job, 1 worker") / bound, 0.9)
    goal("#6: ONNX job 1w vs bare tract loop", speed("ONNX job, 1 worker") / speed("ONNX bare loop"), 0.9)
    goal("TFRecord read vs cat", speed("read TFRecord") / speed("cat TFRecord"), 0.5)
    goal("gzip TFRecord read vs gzip -dc", speed("read gzip TFRecord") / speed("gzip -dc"), 1.0)
    if baseline:
        goal(f"#15: MLP job 1w vs {baseline[1]}",
             speed("MLP job, 1 worker") / speed("MLP job, 1 worker, baseline"), 1.5)
        goal(f"ONNX job 1w vs {baseline[1]}",
             speed("ONNX job, 1 worker") / speed("ONNX job, 1 worker, baseline"), 1.0)
        goal(f"echo job 1w vs {baseline[1]}",
             speed("echo job, 1 worker") / speed("echo job, 1 worker, baseline"), 1.0)
        goal(f"echo job 2w vs {baseline[1]}",
             speed("echo job, 2 workers") / speed("echo job, 2 workers, baseline"), 1.0)
    if tf_python:
        goal("TFRecord read vs tf.data", speed("read TFRecord") / speed("tf.data batch(1024)"), 10)
    print("\ngoals (ratios of speed; higher is better)")
    for label, value, target in goals:
        verdict = "PASS" if value >= target else "MISS"
        print(f"  {label:<36} {value:7.2f}  (goal >= {target})  {verdict}")
    if tf_python:
        ratio = speed("read gzip TFRecord") / speed("tf.data gzip batch(1024)")
        print(f"  {'gzip TFRecord read vs tf.data':<36} {ratio:7.2f}  (no goal)")
    if args.plot:
        plot(os.path.join(args.plot, "executor.svg"),
             f"The executor: ratios of speed ({n} records, {os.cpu_count()} CPUs; dashed: goal)", goals)
    grow_mb = (rss[2_000_000] - rss[20_000]) / 1024
    verdict = "PASS" if grow_mb <= 16 else "MISS"
    print(f"  peak RSS, echo job: {rss[20_000] / 1024:.1f} MB at 20k lines, {rss[2_000_000] / 1024:.1f} MB "
          f"at 2M lines: +{grow_mb:.1f} MB  (goal <= +16 MB)  {verdict}")


if __name__ == "__main__":
    main()
