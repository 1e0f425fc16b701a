"""Two real workers (`python -m worker.handler`, tiny model) under load and under a fault."""

from __future__ import annotations

import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest

from devstack.testing import running_stack
from tests.devstack.helpers import TERMINAL, api, group_gone, wait_status, wait_until
from tests.loopback_http import serve_get

LOAD_JOBS = 50


@pytest.fixture(scope="module")
def pair():
    # Two jobs per worker at once (the worker's concurrency_modifier): runpod then takes jobs in batches.
    with running_stack(2, worker_env={"F5TTS_CONCURRENCY": "2"}) as stack:
        yield stack


def _ready_workers(stack) -> int:
    return stack.health()["workers"]["ready"]


def test_a_worker_killed_mid_job_never_hangs_the_job_and_the_stack_keeps_serving(pair):
    with api(pair) as client:
        job_id = client.post("run", json={"input": {"text": "Hello world. " * 13}}).json()["id"]
        victim = wait_status(client, job_id, "IN_PROGRESS", timeout=60)["workerId"]
        victim_pid = pair.workers[victim]
        os.kill(victim_pid, signal.SIGKILL)
        # Taken back as soon as the process is gone (RunPod notices an exited container at once), not after
        # a heartbeat timeout: the retry finishes well within a client's usual timeout.
        done = wait_status(client, job_id, TERMINAL, timeout=40)
        # Taken back at once and retried on the other worker (RunPod may also report it FAILED): never stuck.
        assert done["status"] in ("COMPLETED", "FAILED"), done
        if done["status"] == "COMPLETED":
            assert done["workerId"] != victim
            key = done["output"][0]["key"]
            pair.s3_client().head_object(Bucket=pair.bucket, Key=key)
        wait_until(lambda: group_gone(victim_pid), 10, "the killed worker's process group to be gone")
        # The stack keeps serving, with the surviving worker while the replacement loads its model.
        after = client.post("runsync", params={"wait": 120_000}, json={"input": {"text": "Still here."}}).json()
        assert after["status"] == "COMPLETED", after
        assert after["workerId"] != victim


def test_fifty_jobs_at_once_complete_exactly_once_each(pair, capsys):
    wait_until(lambda: _ready_workers(pair) == 2, 180, "two ready workers", interval=0.5)
    before = pair.counters()
    s3 = pair.s3_client()
    keys_before = {o["Key"] for o in s3.list_objects_v2(Bucket=pair.bucket, Prefix="generated/").get("Contents", [])}
    with api(pair) as client:
        jobs = [{"input": {"text": f"Job number {n}.", "nfe_step": 8, "seed": n}} for n in range(LOAD_JOBS)]
        with ThreadPoolExecutor(max_workers=10) as pool:
            ids = list(pool.map(lambda job: client.post("run", json=job).json()["id"], jobs))
        results = [wait_status(client, job_id, TERMINAL, timeout=300) for job_id in ids]

    statuses = [r["status"] for r in results]
    keys = [r["output"][0]["key"] for r in results if r["status"] == "COMPLETED"]
    listing = s3.list_objects_v2(Bucket=pair.bucket, Prefix="generated/")
    new_objects = {o["Key"] for o in listing.get("Contents", [])} - keys_before
    after = pair.counters()
    completed = after.get("COMPLETED", 0) - before.get("COMPLETED", 0)
    dropped = after.get("dropped", 0) - before.get("dropped", 0)
    per_worker = {w: sum(1 for r in results if r.get("workerId") == w) for w in {r.get("workerId") for r in results}}
    with capsys.disabled():  # the counts are the point of a load test: shown in every run, not only on failure
        print(
            f"\nload: {len(ids)} submitted, {statuses.count('COMPLETED')} COMPLETED, {len(set(ids))} distinct ids, "
            f"{completed} results accepted, {dropped} dropped, {len(set(keys))} distinct keys, "
            f"{len(new_objects)} new objects in the bucket, per worker {per_worker}"
        )
    assert len(set(ids)) == LOAD_JOBS
    assert statuses == ["COMPLETED"] * LOAD_JOBS
    assert completed == LOAD_JOBS and dropped == 0, "a job's result arrived more or less than once"
    assert len(set(keys)) == LOAD_JOBS and new_objects == set(keys), "lost or duplicated output objects"
    assert [r["output"][0]["seed"] for r in results] == list(range(LOAD_JOBS)), "results crossed between jobs"
    assert len(per_worker) == 2, "both workers took jobs"


def test_worker_logs_hold_no_planted_secret_nor_presigned_url(pair):
    from urllib.parse import parse_qs, urlsplit

    from worker.model_facts import BUILTIN_REFERENCE_TEXT, builtin_audio_file

    password, signature = "PLANTED-PASSWORD-2468", "PLANTED-SIGNATURE-1357"
    clip = builtin_audio_file().read_bytes()
    with serve_get(lambda _path: (200, clip)) as base_url:
        port = int(base_url.rsplit(":", 1)[1])
        url = f"http://user:{password}@127.0.0.1:{port}/ref.wav?X-Amz-Signature={signature}"
        job = {
            "text": "Nothing secret here.",
            "ref_audio": {"url": url},
            "ref_text": BUILTIN_REFERENCE_TEXT,
            "nfe_step": 4,
        }
        with api(pair) as client:
            done = client.post("runsync", params={"wait": 120_000}, json={"input": job}).json()
    assert done["status"] == "COMPLETED", done
    output_signature = parse_qs(urlsplit(done["output"][0]["audio_url"]).query)["X-Amz-Signature"][0]
    logs = pair.log_tails(1_000_000)
    assert f"GET http://127.0.0.1:{port}/ref.wav?…" in logs, "the fetch was logged, without its secrets"
    planted = [password, signature, output_signature, pair.api_key, pair.config.worker_key]
    planted += [value for name, value in pair.s3_credentials.items() if "secret" in name]
    assert [secret for secret in planted if secret in logs] == []


def test_two_devstack_workers_creating_one_voice_at_once(pair):
    import base64

    from worker.model_facts import BUILTIN_REFERENCE_TEXT, builtin_audio_file

    audio = {"base64": base64.b64encode(builtin_audio_file().read_bytes()).decode()}
    s3 = pair.s3_client()
    with api(pair) as client:
        for round_no in range(4):
            name = f"devstack-race-{round_no}"
            job = {"input": {"action": "upload_voice", "name": name, "audio": audio, "text": BUILTIN_REFERENCE_TEXT}}
            with ThreadPoolExecutor(max_workers=2) as pool:
                ids = list(pool.map(lambda body: client.post("run", json=body).json()["id"], [job, job]))
            results = [wait_status(client, job_id, TERMINAL, timeout=120) for job_id in ids]
            assert sorted(r["status"] for r in results) == ["COMPLETED", "FAILED"], results
            failed = next(r for r in results if r["status"] == "FAILED")
            assert '"code":"voice_exists"' in failed["error"]
            listing = s3.list_objects_v2(Bucket=pair.bucket, Prefix=f"voices/{name}/").get("Contents", [])
            keys = sorted(o["Key"] for o in listing)
            meta = s3.get_object(Bucket=pair.bucket, Key=f"voices/{name}/meta.json")["Body"].read()
            assert keys == sorted([f"voices/{name}/meta.json", f"voices/{name}/{json.loads(meta)['audio']}"])
