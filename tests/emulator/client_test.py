"""Drives a running emulator with Google's own Python client for the ml v1 API.

Run by tests/emulator/run.sh, which starts the emulator and installs the
client into a virtual environment. Every check raises on failure.
"""

import argparse
import json
import os
import socket
import time

import httplib2

from google.auth.credentials import AnonymousCredentials
from googleapiclient import discovery
from googleapiclient.errors import HttpError

PROJECT = "projects/emulator-test"


class CountingHttp(httplib2.Http):
    """Counts the requests the client sends, to check the emulator logs each one."""

    requests = 0

    def request(self, *args, **kwargs):
        CountingHttp.requests += 1
        return super().request(*args, **kwargs)


def raw(port, data, read=True):
    """Sends raw bytes on a new connection; returns the status line's code, or None."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(data)
        if not read:
            return None
        conn.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    return int(reply.split(b" ", 2)[1])


def expect_http_error(status, call):
    try:
        call.execute()
    except HttpError as e:
        assert e.resp.status == status, f"expected HTTP {status}, got {e.resp.status}: {e}"
        body = json.loads(e.content)
        assert body["error"]["code"] == status, body
        return body["error"]
    raise AssertionError(f"expected HTTP {status}, got success")


ORDER = ["QUEUED", "PREPARING", "RUNNING", "SUCCEEDED"]


def wait_for(jobs, name, states, timeout=120, seen=None):
    deadline = time.time() + timeout
    while True:
        job = jobs.get(name=name).execute()
        if seen is not None and (not seen or seen[-1] != job["state"]):
            seen.append(job["state"])
        if job["state"] in states:
            return job
        assert time.time() < deadline, f"{name} stuck in {job['state']}"
        time.sleep(0.05)


def job_body(job_id, inputs, output, batch_size="8"):
    return {
        "jobId": job_id,
        "labels": {"suite": "client"},
        "predictionInput": {
            "dataFormat": "JSON",
            "inputPaths": [inputs],
            "outputPath": output,
            "region": "us-central1",
            "uri": "gs://bucket/model",
            "batchSize": batch_size,
        },
    }


def iam_checks(port, root):
    """Against an emulator started with --enforce-iam, a --policy granting
    user:dev@example.com roles/ml.developer on IAM_PROJECT, and --admin
    user:admin@example.com: each caller gets what its role allows."""
    from google.oauth2.credentials import Credentials

    def client(principal):
        # The principal is the bearer token the emulator reads.
        if principal is None:
            credentials = AnonymousCredentials()
        else:
            credentials = Credentials(token=principal)
        return discovery.build(
            "ml",
            "v1",
            client_options={"api_endpoint": f"http://127.0.0.1:{port}"},
            credentials=credentials,
            static_discovery=True,
        ).projects().jobs()

    project = "projects/iam-test"
    os.makedirs(os.path.join(root, "bucket", "in"), exist_ok=True)
    with open(os.path.join(root, "bucket", "in", "a.jsonl"), "w") as f:
        f.write('{"x": 1}\n')
    dev, admin, nobody = client("user:dev@example.com"), client("user:admin@example.com"), client(None)
    # The developer creates and lists, and reads its job, but cannot cancel it.
    body = job_body("by_dev", "gs://bucket/in/a.jsonl", "gs://bucket/out/by_dev")
    created = dev.create(parent=project, body=body).execute()
    assert created["jobId"] == "by_dev", created
    listed = dev.list(parent=project).execute()
    assert [j["jobId"] for j in listed["jobs"]] == ["by_dev"], listed
    assert dev.get(name=f"{project}/jobs/by_dev").execute()["jobId"] == "by_dev"
    error = expect_http_error(403, dev.cancel(name=f"{project}/jobs/by_dev", body={}))
    assert error["status"] == "PERMISSION_DENIED", error
    # Nobody may list; a developer has no role in another project.
    expect_http_error(403, nobody.list(parent=project))
    expect_http_error(403, dev.list(parent="projects/other-project"))
    # The admin may do everything, everywhere.
    admin.list(parent="projects/other-project").execute()
    done = wait_for(admin, f"{project}/jobs/by_dev", {"SUCCEEDED", "FAILED"})
    assert done["state"] == "SUCCEEDED", done
    second = admin.create(parent=project, body=job_body("by_admin", "gs://bucket/in/a.jsonl", "gs://bucket/out/by_admin")).execute()
    try:
        admin.cancel(name=f"{project}/jobs/{second['jobId']}", body={}).execute()
    except HttpError as e:  # it may have finished already: then 400, not 403
        assert e.resp.status == 400, e
    print("ok: --enforce-iam with --policy: roles/ml.developer creates, lists and gets, cannot cancel (403); "
          "anonymous cannot list (403); --admin may do everything")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--iam", action="store_true", help="the IAM checks, against an enforcing emulator")
    args = parser.parse_args()
    if args.iam:
        iam_checks(args.port, args.root)
        return

    # No credentials (as AnonymousCredentials): a counting transport instead.
    ml = discovery.build(
        "ml",
        "v1",
        client_options={"api_endpoint": f"http://127.0.0.1:{args.port}"},
        http=CountingHttp(),
        static_discovery=True,
    )
    assert AnonymousCredentials  # the other way to build it, as the README shows
    jobs = ml.projects().jobs()
    checks = []

    # A full run over files in ROOT: 50 instances and one damaged line.
    os.makedirs(os.path.join(args.root, "bucket", "in"), exist_ok=True)
    with open(os.path.join(args.root, "bucket", "in", "a.jsonl"), "w") as f:
        for i in range(50):
            f.write(json.dumps({"key": i, "x": [i, 0.5]}) + "\n")
        f.write("not json\n")
    created = jobs.create(
        parent=PROJECT, body=job_body("full_run", "gs://bucket/in/*.jsonl", "gs://bucket/out/full_run")
    ).execute()
    assert created["state"] == "QUEUED", created
    assert created["etag"], created
    states = []
    done = wait_for(jobs, f"{PROJECT}/jobs/full_run", {"SUCCEEDED", "FAILED"}, seen=states)
    assert done["state"] == "SUCCEEDED", done
    assert [ORDER.index(s) for s in states] == sorted(ORDER.index(s) for s in states), states
    output = done["predictionOutput"]
    assert (output["predictionCount"], output["errorCount"]) == ("50", "1"), output
    with open(os.path.join(args.root, "bucket", "out", "full_run", "prediction.results-00000-of-00001")) as f:
        lines = f.read().splitlines()
    assert len(lines) == 50 and json.loads(lines[0]) == {"key": 0, "x": [0, 0.5]}, lines[:2]
    checks.append(f"create + background run: {' -> '.join(states)}, 50 predictions, 1 error, results in ROOT")

    # Paths outside ROOT are refused: the job fails, saying why.
    escape = jobs.create(parent=PROJECT, body=job_body("escape", "/etc/passwd", "gs://bucket/out/escape")).execute()
    failed = wait_for(jobs, f"{PROJECT}/jobs/{escape['jobId']}", {"SUCCEEDED", "FAILED"})
    assert failed["state"] == "FAILED" and "outside the storage root" in failed["errorMessage"], failed
    checks.append("a job reading outside ROOT fails: " + failed["errorMessage"])

    # Duplicate create: 409; a missing job: 404.
    err = expect_http_error(409, jobs.create(parent=PROJECT, body=job_body("full_run", "gs://bucket/in/*", "gs://bucket/o")))
    assert err["status"] == "ALREADY_EXISTS", err
    err = expect_http_error(404, jobs.get(name=f"{PROJECT}/jobs/no_such_job"))
    assert err["status"] == "NOT_FOUND", err
    checks.append("duplicate create -> 409 ALREADY_EXISTS; missing job -> 404 NOT_FOUND")

    # Paging across pages, and a filter.
    for i in range(5):
        jobs.create(parent=PROJECT, body=job_body(f"page_{i}", "gs://bucket/in/*.jsonl", f"gs://bucket/out/page_{i}")).execute()
    seen, token, pages = [], None, 0
    while True:
        page = jobs.list(parent=PROJECT, pageSize=2, pageToken=token).execute()
        pages += 1
        seen += [j["jobId"] for j in page.get("jobs", [])]
        token = page.get("nextPageToken")
        if not token:
            break
    assert sorted(seen) == sorted(["escape", "full_run"] + [f"page_{i}" for i in range(5)]), seen
    assert len(seen) == len(set(seen)) and pages == 4, (seen, pages)
    filtered = jobs.list(parent=PROJECT, filter="jobId:page* AND labels.suite=client").execute()
    assert sorted(j["jobId"] for j in filtered["jobs"]) == [f"page_{i}" for i in range(5)], filtered
    empty = jobs.list(parent=PROJECT, filter="state=FAILED AND jobId:none*").execute()
    assert empty == {}, empty
    checks.append(f"list: {len(seen)} jobs over {pages} pages of 2, a filter, an empty result {{}}")

    # Patch: the right etag updates, a stale one is refused with 409.
    name = f"{PROJECT}/jobs/full_run"
    current = jobs.get(name=name).execute()
    patched = jobs.patch(
        name=name, updateMask="labels,etag", body={"labels": {"owner": "alice"}, "etag": current["etag"]}
    ).execute()
    assert patched["labels"] == {"owner": "alice"} and patched["etag"] != current["etag"], patched
    err = expect_http_error(
        409, jobs.patch(name=name, updateMask="labels,etag", body={"labels": {"owner": "bob"}, "etag": current["etag"]})
    )
    assert err["status"] == "ABORTED", err
    checks.append("patch with the etag -> new labels and etag; with a stale etag -> 409 ABORTED")

    # Cancel: a finished job -> 400; a running one stops.
    err = expect_http_error(400, jobs.cancel(name=name, body={}))
    assert err["status"] == "FAILED_PRECONDITION", err
    os.makedirs(os.path.join(args.root, "bucket", "big"), exist_ok=True)
    with open(os.path.join(args.root, "bucket", "big", "b.jsonl"), "w") as f:
        line = json.dumps({"x": [1.5, 2.5, 3.5]}) + "\n"
        f.write(line * 2_000_000)
    jobs.create(parent=PROJECT, body=job_body("long_run", "gs://bucket/big/*", "gs://bucket/out/long_run", "64")).execute()
    long_name = f"{PROJECT}/jobs/long_run"
    running = wait_for(jobs, long_name, {"RUNNING", "SUCCEEDED", "FAILED"})
    assert running["state"] == "RUNNING", running
    assert jobs.cancel(name=long_name, body={}).execute() == {}
    cancelled = wait_for(jobs, long_name, {"CANCELLED", "SUCCEEDED", "FAILED"})
    assert cancelled["state"] == "CANCELLED", cancelled
    checks.append("cancel of a finished job -> 400 FAILED_PRECONDITION; cancel of a running job -> CANCELLED")

    # A job never reads or deletes its own output: refused at create where
    # the text shows it, FAILED before anything is touched where only the
    # storage does (a link to the output directory).
    results = os.path.join(args.root, "bucket", "out", "full_run", "prediction.results-00000-of-00001")
    with open(results, "rb") as f:
        results_bytes = f.read()
    err = expect_http_error(
        400,
        jobs.create(
            parent=PROJECT,
            body=job_body("own_output", "gs://bucket/out/full_run/prediction.results-*", "gs://bucket/out/./full_run/"),
        ),
    )
    assert err["status"] == "INVALID_ARGUMENT" and "overlaps inputPaths[0]" in err["message"], err
    fields = [v["field"] for d in err["details"] for v in d.get("fieldViolations", [])]
    assert fields == ["predictionInput.outputPath"], err
    os.symlink(os.path.join(args.root, "bucket", "out", "full_run"), os.path.join(args.root, "bucket", "linked"))
    jobs.create(parent=PROJECT, body=job_body("own_output_link", "gs://bucket/out/full_run/*", "gs://bucket/linked")).execute()
    failed = wait_for(jobs, f"{PROJECT}/jobs/own_output_link", {"SUCCEEDED", "FAILED"})
    assert failed["state"] == "FAILED" and "overlaps inputPaths[0]" in failed["errorMessage"], failed
    with open(results, "rb") as f:
        assert f.read() == results_bytes, "an input was changed"
    checks.append("a job reading its own output: 400 INVALID_ARGUMENT at create, or FAILED through a link; no input touched")

    # IAM.
    policy = jobs.getIamPolicy(resource=name, options_requestedPolicyVersion=3).execute()
    assert policy["version"] == 1 and "etag" in policy, policy
    new_policy = {"bindings": [{"role": "roles/ml.viewer", "members": ["user:bob@example.com"]}], "etag": policy["etag"]}
    updated = jobs.setIamPolicy(resource=name, body={"policy": new_policy}).execute()
    assert updated["bindings"] == new_policy["bindings"], updated
    err = expect_http_error(409, jobs.setIamPolicy(resource=name, body={"policy": new_policy}))
    held = jobs.testIamPermissions(resource=name, body={"permissions": ["ml.jobs.get", "ml.jobs.cancel"]}).execute()
    assert held == {"permissions": ["ml.jobs.get", "ml.jobs.cancel"]}, held
    none = jobs.testIamPermissions(resource=f"{PROJECT}/jobs/missing", body={"permissions": ["ml.jobs.get"]}).execute()
    assert none == {}, none
    checks.append("getIamPolicy, setIamPolicy (stale etag -> 409), testIamPermissions (missing job -> {})")

    # Hostile requests: the server answers each and keeps serving.
    port = int(args.port)
    raw_answered = 0
    huge = b"POST /v1/projects/p/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 1099511627776\r\n\r\n{"
    assert raw(port, huge) == 413
    insane = b"POST /v1/projects/p/jobs HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n"
    # hyper's parser refuses a length beyond its own range as a head too large.
    assert raw(port, insane) in (413, 431)
    assert raw(port, b"GET / HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 70000 + b"\r\n\r\n") == 431
    assert raw(port, b"NOT HTTP AT ALL\r\n\r\n") == 400
    short = b"POST /v1/projects/p/jobs HTTP/1.1\r\nContent-Length: 100\r\n\r\n{}"
    assert raw(port, short) == 400, "a body cut short is refused, not taken"
    raw_answered += 5
    # Clients that stall mid-body hold only their own connections.
    stalled = []
    for _ in range(8):
        conn = socket.create_connection(("127.0.0.1", port), timeout=30)
        conn.sendall(b"POST /v1/projects/p/jobs HTTP/1.1\r\nContent-Length: 5000\r\n\r\n{")
        stalled.append(conn)
    started = time.time()
    jobs.get(name=name).execute()
    assert time.time() - started < 5, "a stalled client blocked another"
    # Giving up mid-body: the server answers each with 400 (to no one) and logs it.
    for conn in stalled:
        conn.close()
    raw_answered += len(stalled)
    time.sleep(0.5)
    checks.append("huge Content-Length -> 413, absurd -> 413 or 431, huge head -> 431, garbage -> 400, short body -> 400, stalled clients block nobody")

    for check in checks:
        print("ok:", check)
    print(f"all {len(checks)} client checks passed")
    print(f"requests answered: {CountingHttp.requests + raw_answered}")


if __name__ == "__main__":
    main()
