#!/usr/bin/env python3
"""The remote predictor against a model server that answers at once
(issue #16 §4), printed as a ratio:

    python3 benches/compare_remote.py [--records N] [--rounds R] [--threads T] [--plot DIR]

(or `bash benches/compare.sh --remote ...`). Builds examples/remote_bench.rs
(feature `remote`), starts its echo server (TensorFlow Serving's REST API,
each answer the request's instances copied as bytes) on loopback, writes N
(default 1,000,000) JSON-lines instances {"key": k, "x": [4 floats]}, and
times, in R (default 5) alternating rounds, the job (RemotePredictor, T
workers, default 2, batches of 64) against a bare Rust loop of the same
requests (T threads, each parsing its batch's lines, sending them with ureq
and writing the predictions back). The job's results must equal the loop's
before any time counts. Goal: the job at least 0.8 of the loop's speed,
i.e. bound by the server, not by the client.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import ROOT, alternate, plot, sh, target_dir, timed  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--plot", metavar="DIR", help="write the ratio as DIR/remote.svg")
    args = parser.parse_args()
    print("building examples/remote_bench (release)...", file=sys.stderr)
    sh(["cargo", "build", "--quiet", "--release", "--features", "remote", "--example", "remote_bench"], cwd=ROOT)
    helper = os.path.join(target_dir(), "release", "examples", "remote_bench")
    server = subprocess.Popen([helper, "echo-server"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{server.stdout.readline().strip()}"
        with tempfile.TemporaryDirectory() as work:
            data = os.path.join(work, "instances.jsonl")
            rng = random.Random(7)
            with open(data, "w") as f:
                for k in range(args.records):
                    f.write(json.dumps({"key": k, "x": [round(rng.uniform(-3, 3), 4) for _ in range(4)]}) + "\n")
            bare_out = os.path.join(work, "bare.jsonl")
            job_out = os.path.join(work, "out")
            threads = str(args.threads)
            commands = {
                "bare loop": [helper, "bare", url, data, bare_out, threads],
                "job": [helper, "job", url, data, job_out, threads],
            }
            # The same results first.
            for cmd in commands.values():
                timed(cmd)
            with open(bare_out, "rb") as f:
                bare = f.read()
            with open(os.path.join(job_out, "prediction.results-00000-of-00001"), "rb") as f:
                job = f.read()
            if bare != job:
                sys.exit("the job's results differ from the bare loop's")
            medians = alternate({name: (lambda c=cmd: timed(c)) for name, cmd in commands.items()},
                                args.rounds)
    finally:
        server.stdin.close()
        server.wait()
    print(f"\n{args.records} instances, {args.threads} workers, batches of 64; medians of {args.rounds} alternating rounds")
    for name, m in medians.items():
        print(f"  {name:<12} {m * 1000:9.1f} ms  {args.records / m / 1e6:6.2f} M instances/s")
    ratio = medians["bare loop"] / medians["job"]
    verdict = "PASS" if ratio >= 0.8 else "MISS"
    print(f"\ngoal: #16: remote job vs bare loop of its requests  {ratio:5.2f}  (goal >= 0.8)  {verdict}")
    if args.plot:
        plot(os.path.join(args.plot, "remote.svg"), "remote job vs a bare loop of its requests",
             [("remote job / bare loop", ratio, 0.8)])


if __name__ == "__main__":
    main()
