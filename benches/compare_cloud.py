#!/usr/bin/env python3
"""The cloud storage backends against curl, on the same local servers,
printed as ratios (issue #13, section 7).

    python3 benches/compare_cloud.py [--mb M] [--records N] [--rounds R] [--big-gb G] [--plot DIR]
    python3 benches/compare_cloud.py --many-small N [--delay-ms D] [--rounds R]

(or `bash benches/compare.sh --cloud ...`). It starts moto (S3) and
fake-gcs-server (Cloud Storage) on loopback with tests/cloud/servers.sh, and
Azurite (Azure Blob Storage; curl's requests signed with its development
key) with tests/cloud/azurite.sh, then, in R (default 5) rounds, each in a shuffled order, times on each server:

- reading an M MB (default 256) object with this crate (`cloud_helper get`)
  against `curl` downloading it; uploading it (`cloud_helper put`) against
  `curl` uploading it (S3 requests signed by curl's --aws-sigv4);
- the echo job over N (default 1,000,000) JSON lines read from the bucket
  and written back to it, against the same job on local files: the job's
  own CPU time (user + system, of its process: the emulators share the two
  CPUs and spend as much serving a job as the job itself, so wall time
  measures them too) within 1.3 times the local job's, and its peak RSS
  within 32 MB of it (#31 §2); and, not as a goal, against curl moving the
  same input and output bytes to and from that server.

Beside the goals it times curl uploading the object, and the job's results,
the way this crate must when it streams an object of unknown size in
bounded memory (a resumable session in 8 MiB chunks on Cloud Storage, a
multipart upload of 8 MiB parts on S3): on these emulators the server's side
of that protocol costs more than one whole single-request upload
(fake-gcs-server hashes the whole object again at every chunk; moto joins
the parts in Python, on the same two cores as the job), so the ratios
against curl's same protocol show what is this crate's own.

With --many-small N it times only the echo job over N (2,500) one-line
objects on each server, with D (20) ms added to every request by
tests/cloud/fault_proxy.py (a remote store's round trip), against #31's
goal of 10 s.

Cloud Storage uploads stay resumable sessions: no parallel composite
uploads, which leave temporary objects in the user's bucket (even after a
kill) and need delete permission.

It prints the medians and each goal as a ratio with PASS or MISS (with
--plot DIR, also as DIR/cloud.svg), then the
peak RSS of reading (from both servers) and of uploading (to S3: the GCS
emulator appends resumable chunks too slowly for gigabytes) a 20 MB and a
G GB (default 2) object.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from email.utils import formatdate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benches"))
from compare import target_dir, timed, write_jsonl, peak_rss_kb, plot  # noqa: E402


# The CPU time (user + system, seconds) and peak RSS (KB) of each run of a
# case timed by `measured`, by case.
USAGE = {}


def measured(name, cmd):
    """Runs cmd as `timed` does, and records its process's own CPU time
    and peak RSS under `name` (from wait4, so nothing else is counted)."""
    start = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = child.stdout.read().split()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        sys.exit(f"{cmd} failed: {child.returncode}")
    USAGE.setdefault(name, []).append((usage.ru_utime + usage.ru_stime, usage.ru_maxrss))
    return float(out[0]) if len(out) == 2 else wall


def shuffled(cases, rounds):
    """Runs every case once per round, in an order shuffled afresh each round
    (seeded, so runs repeat it), so that no case always follows the same
    one (the first request after an upload can find the server still busy
    with it); the median time of each."""
    names = list(cases)
    times = {name: [] for name in names}
    for r in range(rounds):
        order = names[:]
        random.Random(r).shuffle(order)
        for name in order:
            times[name].append(cases[name]())
        print(f"round {r + 1}/{rounds} done", file=sys.stderr)
    return {name: statistics.median(times[name]) for name in names}


# Cloud Storage (fake-gcs-server), S3 (moto), Azure Blob Storage (Azurite).
SCHEMES = ("gs", "s3", "az")


def servers(script="servers.sh"):
    out = subprocess.run(["bash", os.path.join(ROOT, "tests", "cloud", script), str(os.getpid())],
                         capture_output=True, text=True)
    env = dict(line.split("=", 1) for line in out.stdout.split() if "=" in line)
    if "BUCKET" not in env:
        sys.exit(f"cannot start the servers: {out.stdout} {out.stderr}")
    return env


# Azurite's development account and its published key.
AZ_ACCOUNT = "devstoreaccount1"
AZ_KEY = base64.b64decode(
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")


def az_signed(method, path, query=None, length=0, content_type="", headers=None):
    """curl's -H arguments for a request to Azurite signed with Shared Key:
    `path` is /CONTAINER/NAME, `query` the request's parameters."""
    query = query or {}
    ms = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": "2021-08-06", **(headers or {})}
    # The verb, then eleven standard headers of which only Content-Length and Content-Type are sent.
    fields = [method, "", "", str(length) if length else "", "", content_type, "", "", "", "", "", ""]
    to_sign = ("\n".join(fields) + "\n" + "".join(f"{k}:{v}\n" for k, v in sorted(ms.items()))
               + f"/{AZ_ACCOUNT}/{AZ_ACCOUNT}{path}" + "".join(f"\n{k}:{v}" for k, v in sorted(query.items())))
    signature = base64.b64encode(hmac.new(AZ_KEY, to_sign.encode(), hashlib.sha256).digest()).decode()
    sent = {**ms, "Authorization": f"SharedKey {AZ_ACCOUNT}:{signature}"}
    if content_type:
        sent["Content-Type"] = content_type
    return [arg for k, v in sent.items() for arg in ("-H", f"{k}: {v}")]


def curl_time(args):
    start = time.perf_counter()
    subprocess.run(["curl", "-sSf", "-o", "/dev/null"] + args, check=True)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--big-gb", type=float, default=2.0)
    parser.add_argument("--many-small", type=int, default=0, metavar="N")
    parser.add_argument("--delay-ms", type=int, default=20)
    parser.add_argument("--plot", metavar="DIR", help="write the goals' ratios as DIR/cloud.svg")
    args = parser.parse_args()

    subprocess.run(["cargo", "build", "--quiet", "--release", "--features", "cloud", "--example", "cloud_helper"],
                   cwd=ROOT, check=True)
    helper = os.path.join(target_dir(), "release", "examples", "cloud_helper")
    env = servers()
    gcs, s3, bucket = env["STORAGE_EMULATOR_HOST"], env["AWS_ENDPOINT_URL"], env["BUCKET"]
    azurite = servers("azurite.sh")
    az = f"{azurite['AZURITE_BLOB_STORAGE_URL']}/{AZ_ACCOUNT}"
    if azurite["BUCKET"] != bucket:
        sys.exit(f"Azurite's container is {azurite['BUCKET']}, not {bucket}")
    os.environ.update({
        "STORAGE_EMULATOR_HOST": gcs, "AWS_ENDPOINT_URL": s3, "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
        "AZURE_STORAGE_USE_EMULATOR": "true", "AZURITE_BLOB_STORAGE_URL": azurite["AZURITE_BLOB_STORAGE_URL"],
    })
    sigv4 = ["--aws-sigv4", "aws:amz:us-east-1:s3", "--user", "test:test"]
    if args.many_small:
        return many_small(args, helper, {"gs": gcs, "s3": s3, "az": azurite["AZURITE_BLOB_STORAGE_URL"]},
                          bucket, sigv4)

    def curl_get(scheme, name):
        if scheme == "gs":
            return curl_time([f"{gcs}/storage/v1/b/{bucket}/o/{name.replace('/', '%2F')}?alt=media"])
        if scheme == "az":
            return curl_time(az_signed("GET", f"/{bucket}/{name}") + [f"{az}/{bucket}/{name}"])
        return curl_time(sigv4 + [f"{s3}/{bucket}/{name}"])

    def curl_put(scheme, name, path):
        if scheme == "gs":
            # -T streams the file (--data-binary would read it all into memory first).
            return curl_time(["-X", "POST", "-T", path, "-H", "Content-Type: application/octet-stream",
                              f"{gcs}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}"])
        if scheme == "az":
            return curl_time(["-T", path]
                             + az_signed("PUT", f"/{bucket}/{name}", length=os.path.getsize(path),
                                         content_type="application/octet-stream",
                                         headers={"x-ms-blob-type": "BlockBlob"})
                             + [f"{az}/{bucket}/{name}"])
        return curl_time(sigv4 + ["-T", path, f"{s3}/{bucket}/{name}"])

    def curl_out(args, data=None):
        return subprocess.run(["curl", "-sSf", "-D", "-"] + args, check=True, capture_output=True,
                              input=data).stdout.decode("latin-1")

    def curl_put_parts(scheme, name, parts, size):
        """curl sending `parts` (files of 8 MiB each but the last) as one
        object, the way an upload of unknown size must go."""
        start = time.perf_counter()
        if scheme == "gs":
            head = curl_out(["-X", "POST", "-H", "Content-Length: 0",
                             f"{gcs}/upload/storage/v1/b/{bucket}/o?uploadType=resumable&name={name}"])
            session = re.search(r"(?im)^location:\s*(\S+)", head).group(1)
            at = 0
            for i, part in enumerate(parts):
                n = os.path.getsize(part)
                total = str(size) if i == len(parts) - 1 else "*"
                curl_out(["-X", "PUT", "-T", part, "-H", f"Content-Range: bytes {at}-{at + n - 1}/{total}",
                          "-o", "/dev/null", session])
                at += n
        elif scheme == "az":
            ids = []
            for i, part in enumerate(parts):
                ids.append(base64.b64encode(f"{i:08d}".encode()).decode())
                query = {"blockid": ids[-1], "comp": "block"}
                curl_out(["-T", part, "-o", "/dev/null"]
                         + az_signed("PUT", f"/{bucket}/{name}", query, os.path.getsize(part),
                                     "application/octet-stream")
                         + [f"{az}/{bucket}/{name}?{urllib.parse.urlencode(query)}"])
            body = ('<?xml version="1.0" encoding="utf-8"?><BlockList>'
                    + "".join(f"<Latest>{i}</Latest>" for i in ids) + "</BlockList>").encode()
            curl_out(["-X", "PUT", "--data-binary", "@-", "-o", "/dev/null"]
                     + az_signed("PUT", f"/{bucket}/{name}", {"comp": "blocklist"}, len(body), "application/xml")
                     + [f"{az}/{bucket}/{name}?comp=blocklist"], body)
        else:
            url = f"{s3}/{bucket}/{name}"
            upload = re.search(r"<UploadId>([^<]+)</UploadId>", curl_out(sigv4 + ["-X", "POST", url + "?uploads"])).group(1)
            etags = []
            for i, part in enumerate(parts):
                head = curl_out(sigv4 + ["-T", part, "-o", "/dev/null", f"{url}?partNumber={i + 1}&uploadId={upload}"])
                etags.append(re.search(r"(?im)^etag:\s*(\S+)", head).group(1))
            body = "<CompleteMultipartUpload>" + "".join(
                f"<Part><PartNumber>{i + 1}</PartNumber><ETag>{e}</ETag></Part>" for i, e in enumerate(etags)
            ) + "</CompleteMultipartUpload>"
            curl_out(sigv4 + ["-X", "POST", "-H", "Content-Type: application/xml", "--data-binary", "@-", "-o", "/dev/null",
                      f"{url}?uploadId={upload}"],
                     body.encode())
        return time.perf_counter() - start

    work = tempfile.mkdtemp(prefix="bp-compare-cloud-")
    try:
        blob = os.path.join(work, "blob.bin")
        with open(blob, "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(args.mb):
                f.write(chunk)
        size = os.path.getsize(blob)

        def split(path, name):
            """`path` in files of 8 MiB (the last shorter), for curl to send as parts."""
            parts = []
            with open(path, "rb") as f:
                while chunk := f.read(8 << 20):
                    parts.append(os.path.join(work, f"{name}-{len(parts):04}"))
                    with open(parts[-1], "wb") as out:
                        out.write(chunk)
            return parts

        parts = split(blob, "blob-part")
        jsonl = os.path.join(work, "in", "instances.jsonl")
        os.makedirs(os.path.dirname(jsonl))
        write_jsonl(jsonl, args.records)
        for scheme in SCHEMES:
            subprocess.run([helper, "put", blob, f"{scheme}://{bucket}/bench/blob.bin"], check=True, capture_output=True)
            subprocess.run([helper, "put", jsonl, f"{scheme}://{bucket}/bench/in/instances.jsonl"], check=True,
                           capture_output=True)
        # What the job writes, to time curl moving the same bytes.
        subprocess.run([helper, "job", jsonl, os.path.join(work, "out"), "2"], check=True, capture_output=True)
        results = os.path.join(work, "out", "prediction.results-00000-of-00001")
        results_parts = split(results, "results-part")

        cases = {}
        for scheme in SCHEMES:
            obj = f"{scheme}://{bucket}/bench/blob.bin"
            cases[f"{scheme} read, this crate"] = lambda obj=obj: timed([helper, "get", obj])
            cases[f"{scheme} read, curl"] = lambda s=scheme: curl_get(s, "bench/blob.bin")
            cases[f"{scheme} upload, this crate"] = lambda s=scheme: timed([helper, "put", blob, f"{s}://{bucket}/bench/up.bin"])
            cases[f"{scheme} upload, curl"] = lambda s=scheme: curl_put(s, "bench/up-curl.bin", blob)
            cases[f"{scheme} upload, curl in 8 MiB parts"] = lambda s=scheme: curl_put_parts(
                s, "bench/up-curl-parts.bin", parts, size)
            cases[f"{scheme} echo job, 2 workers"] = lambda s=scheme: measured(
                f"{s} echo job, 2 workers",
                [helper, "job", f"{s}://{bucket}/bench/in/*.jsonl", f"{s}://{bucket}/bench/out", "2"])
            cases[f"{scheme} curl in + out"] = lambda s=scheme: (
                curl_get(s, "bench/in/instances.jsonl") + curl_put(s, "bench/curl-out.jsonl", results))
            cases[f"{scheme} curl in + out in parts"] = lambda s=scheme: (
                curl_get(s, "bench/in/instances.jsonl")
                + curl_put_parts(s, "bench/curl-out-parts.jsonl", results_parts, os.path.getsize(results)))
        cases["local echo job, 2 workers"] = lambda: measured(
            "local echo job, 2 workers", [helper, "job", jsonl, os.path.join(work, "out"), "2"])
        med = shuffled(cases, args.rounds)

        print(f"\n{args.mb} MB object, {args.records} JSON lines; medians of {args.rounds} shuffled rounds "
              f"({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs)")
        for name, secs in med.items():
            print(f"  {name:<34} {secs * 1000:9.1f} ms")
        print("\ngoals (#31 §2; Azure's are the same goals applied to Azurite)")
        cpu = {name: statistics.median(c for c, _ in runs) for name, runs in USAGE.items()}
        rss = {name: statistics.median(r for _, r in runs) for name, runs in USAGE.items()}
        local = "local echo job, 2 workers"
        print(f"  local echo job: {cpu[local]:.2f} s of CPU, peak RSS {rss[local] / 1024:.1f} MB")
        rows = []
        for scheme in SCHEMES:
            # Against curl speaking the same protocol: a GET for reads, and
            # for uploads the parts an upload of unknown size must send.
            for what, curl in (("read", "curl"), ("upload", "curl in 8 MiB parts")):
                ratio = med[f"{scheme} {what}, {curl}"] / med[f"{scheme} {what}, this crate"]
                mbps = size / 1e6 / med[f"{scheme} {what}, this crate"]
                verdict = "PASS" if ratio >= 0.8 else "MISS"
                print(f"  {scheme} {what} vs {curl} ({mbps:.0f} MB/s)".ljust(40)
                      + f"{ratio:7.2f}  (goal >= 0.8)  {verdict}")
                rows.append((f"{scheme} {what}: speed vs {curl}", ratio, 0.8))
            ratio = med[f"{scheme} upload, curl"] / med[f"{scheme} upload, this crate"]
            print(f"  {scheme} upload vs curl's one request".ljust(40)
                  + f"{ratio:7.2f}  (not a goal: another protocol)")
            job = f"{scheme} echo job, 2 workers"
            ratio = cpu[job] / cpu[local]
            verdict = "PASS" if ratio <= 1.3 else "MISS"
            print(f"  {scheme} echo job CPU / local job's ({cpu[job]:.2f} s)".ljust(40)
                  + f"{ratio:7.2f}  (goal <= 1.3)  {verdict}")
            rows.append((f"{scheme} job: local CPU / bucket CPU", cpu[local] / cpu[job], 1 / 1.3))
            grow = (rss[job] - rss[local]) / 1024
            verdict = "PASS" if grow <= 32 else "MISS"
            print(f"  {scheme} echo job peak RSS ({rss[job] / 1024:.1f} MB) - local's".ljust(40)
                  + f"{grow:+7.1f} MB  (goal <= +32 MB)  {verdict}")
            bound = max(med["local echo job, 2 workers"], med[f"{scheme} curl in + out"])
            ratio = med[f"{scheme} echo job, 2 workers"] / bound
            print(f"  {scheme} echo job wall / max(local, curl)".ljust(40)
                  + f"{ratio:7.2f}  (not a goal: the emulator's time is in it)")
            bound = max(med["local echo job, 2 workers"], med[f"{scheme} curl in + out in parts"])
            ratio = med[f"{scheme} echo job, 2 workers"] / bound
            print(f"  {scheme} echo job / max(local, curl in parts)".ljust(40)
                  + f"{ratio:7.2f}  (not a goal: the same protocol)")
        if args.plot:
            plot(os.path.join(args.plot, "cloud.svg"),
                 f"Buckets: ratios ({args.mb} MB object, {args.records} lines, {os.cpu_count()} CPUs; dashed: goal)",
                 rows)
        sys.stdout.flush()
        # Peak RSS. The big objects go up to Cloud Storage with one curl
        # request (the emulator appends resumable chunks slowly), and this
        # crate reads them; this crate's own uploads are measured on S3.
        rss = {}
        small = os.path.join(work, "small.bin")
        with open(small, "wb") as f:
            f.write(os.urandom(20 << 20))
        big = os.path.join(work, "big.bin")
        with open(big, "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(int(args.big_gb * 1024)):
                f.write(chunk)
        for label, path in (("20 MB", small), (f"{args.big_gb:g} GB", big)):
            name = f"bench/rss-{os.path.basename(path)}"
            curl_put("gs", name, path)
            rss[("gs read", label)] = peak_rss_kb([helper, "get", f"gs://{bucket}/{name}"])
            rss[("s3 upload", label)] = peak_rss_kb([helper, "put", path, f"s3://{bucket}/{name}"])
            rss[("s3 read", label)] = peak_rss_kb([helper, "get", f"s3://{bucket}/{name}"])
        for what in ("gs read", "s3 upload", "s3 read"):
            small_kb, big_kb = rss[(what, "20 MB")], rss[(what, f"{args.big_gb:g} GB")]
            grow = (big_kb - small_kb) / 1024
            verdict = "PASS" if grow <= 64 else "MISS"
            print(f"  peak RSS, {what}: {small_kb / 1024:.1f} MB for 20 MB, {big_kb / 1024:.1f} MB for "
                  f"{args.big_gb:g} GB: +{grow:.1f} MB  (goal <= +64 MB)  {verdict}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def many_small(args, helper, urls, bucket, sigv4):
    """The echo job over `args.many_small` one-line objects on each server,
    every request delayed by the fault proxy; #31's goal: at most 10 s."""
    from concurrent.futures import ThreadPoolExecutor
    names = [f"small/part-{i:05}.jsonl" for i in range(args.many_small)]

    lines = tempfile.mkdtemp(prefix="bp-many-small-")

    def put(scheme, name):
        line = f'{{"i": {int(name[11:16])}}}\n'.encode()
        # A file, so that curl sends its length (Azure signs it).
        path = os.path.join(lines, f"{scheme}-{name[6:]}")
        with open(path, "wb") as f:
            f.write(line)
        if scheme == "gs":
            cmd = ["-X", "POST", "--data-binary", f"@{path}", "-H", "Content-Type: application/octet-stream",
                   f"{urls['gs']}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}"]
        elif scheme == "s3":
            cmd = sigv4 + ["-T", path, f"{urls['s3']}/{bucket}/{name}"]
        else:
            cmd = (["-T", path]
                   + az_signed("PUT", f"/{bucket}/{name}", length=len(line),
                               content_type="application/octet-stream", headers={"x-ms-blob-type": "BlockBlob"})
                   + [f"{urls['az']}/{AZ_ACCOUNT}/{bucket}/{name}"])
        subprocess.run(["curl", "-sSf", "-o", "/dev/null"] + cmd, check=True)
        os.remove(path)

    with ThreadPoolExecutor(16) as pool:
        for scheme in SCHEMES:
            list(pool.map(lambda n, s=scheme: put(s, n), names))
    shutil.rmtree(lines, ignore_errors=True)
    print(f"{len(names)} one-line objects on each server", file=sys.stderr)
    proxies, env = [], {}
    try:
        for scheme in SCHEMES:
            proxy = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "cloud", "fault_proxy.py"),
                                      "--upstream", urls[scheme], "--mode", f"delay:{args.delay_ms}"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            proxies.append(proxy)
            env[scheme] = f"http://127.0.0.1:{proxy.stdout.readline().strip()}"
        variables = {"gs": "STORAGE_EMULATOR_HOST", "s3": "AWS_ENDPOINT_URL", "az": "AZURITE_BLOB_STORAGE_URL"}
        cases = {}
        for scheme in SCHEMES:
            def job(scheme=scheme):
                proxied = {**os.environ, variables[scheme]: env[scheme]}
                start = time.perf_counter()
                out = subprocess.run([helper, "job", f"{scheme}://{bucket}/small/*.jsonl",
                                      f"{scheme}://{bucket}/small-out", "2"],
                                     check=True, capture_output=True, text=True, env=proxied).stdout.split()
                if out[1] != str(len(names)):
                    sys.exit(f"{scheme}: {out[1]} predictions, not {len(names)}")
                return time.perf_counter() - start
            cases[f"{scheme} echo job over {len(names)} objects"] = job
        times = {name: [] for name in cases}
        for r in range(args.rounds):
            for name, run in cases.items():
                times[name].append(run())
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        for proxy in proxies:
            proxy.stdin.close()
            proxy.wait()
    print(f"\n{len(names)} one-line objects, {args.delay_ms} ms added to every request; "
          f"{args.rounds} rounds ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs)")
    for name, secs in times.items():
        median = statistics.median(secs)
        verdict = "PASS" if median <= 10 else "MISS"
        print(f"  {name:<40} median {median:6.1f} s  (all: {', '.join(f'{t:.1f}' for t in secs)})"
              f"  (goal <= 10 s)  {verdict}")


if __name__ == "__main__":
    main()
