"""The queue emulator through the real runpod worker loop, driven by the fast echo worker (tests/devstack/echo_worker.py).

The public API is called over HTTP exactly as a client would; the worker side is runpod's own
`serverless.start` loop (job take, stream, job done, job stop, ping) in real child processes.
"""

from __future__ import annotations

import json
import os
import signal
import time

import httpx
import pytest

from devstack.testing import running_stack
from tests.devstack.helpers import ECHO_WORKER, TERMINAL, api, group_gone, wait_status, wait_until

MB = 1024 * 1024


@pytest.fixture(scope="module")
def echo():
    """One echo worker running one job at a time: whether it is free proves whether a stop reached it."""
    with running_stack(1, worker_cmd=ECHO_WORKER) as stack:
        yield stack


@pytest.fixture(scope="module")
def idle():
    """A stack with no worker at all: jobs stay queued; short retention and lost-worker times."""
    with running_stack(
        0,
        worker_cmd=ECHO_WORKER,
        run_retention_s=3.0,
        sync_retention_s=1.0,
        worker_lost_after_s=1.0,
        stream_hold_s=0.2,
        take_hold_s=0.5,
    ) as stack:
        yield stack


# ----------------------------------------------------------------------------------------------- jobs and results
def test_runsync_returns_the_output_with_runpod_fields(echo):
    with api(echo) as client:
        body = client.post("runsync", json={"input": {"echo": "hello"}}).json()
    assert body["status"] == "COMPLETED"
    assert body["id"].startswith("sync-")
    assert body["output"] == [{"echo": "hello", "index": 0, "worker": "local-worker-1"}]
    assert body["workerId"] == "local-worker-1"
    assert isinstance(body["delayTime"], int) and isinstance(body["executionTime"], int)


def test_run_then_status_polling(echo):
    with api(echo) as client:
        submitted = client.post("run", json={"input": {"echo": 7, "sleep": 0.5}}).json()
        assert submitted["status"] == "IN_QUEUE" and not submitted["id"].startswith("sync-")
        seen = {client.get(f"status/{submitted['id']}").json()["status"]}
        done = wait_status(client, submitted["id"], TERMINAL)
        seen.add(done["status"])
    assert done["status"] == "COMPLETED" and done["output"][0]["echo"] == 7
    assert seen & {"IN_QUEUE", "IN_PROGRESS"}, "the job was never seen before completion"
    assert done["executionTime"] >= 500


def test_a_job_longer_than_the_runsync_wait_completes_through_polling(echo):
    with api(echo) as client:
        started = time.monotonic()
        body = client.post("runsync", params={"wait": 1000}, json={"input": {"echo": "slow", "sleep": 2.5}}).json()
        assert time.monotonic() - started < 2.4, "runsync did not honour ?wait="
        assert body["status"] in ("IN_QUEUE", "IN_PROGRESS") and "output" not in body
        done = wait_status(client, body["id"], TERMINAL, timeout=20)
    assert done["status"] == "COMPLETED" and done["output"][0]["echo"] == "slow"


def test_runsync_wait_outside_runpods_range_is_refused(echo):
    with api(echo) as client:
        assert client.post("runsync", params={"wait": 10}, json={"input": {}}).status_code == 400


def test_stream_delivers_chunks_as_they_are_produced(echo):
    with api(echo) as client:
        job_id = client.post("run", json={"input": {"echo": "s", "chunks": 4, "chunk_sleep": 0.4}}).json()["id"]
        batches, status = [], "IN_QUEUE"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            body = client.get(f"stream/{job_id}").json()
            status = body["status"]
            batches.append([item["output"] for item in body["stream"]])
            if status in TERMINAL and not body["stream"]:
                break
        final = client.get(f"status/{job_id}").json()
    items = [item for batch in batches for item in batch]
    assert status == "COMPLETED"
    assert [item["index"] for item in items] == [0, 1, 2, 3], "every chunk exactly once, in order"
    assert sum(1 for batch in batches if batch) >= 2, f"chunks were not delivered incrementally: {batches}"
    # return_aggregate_stream: the same items are the job's output for /status.
    assert final["output"] == items


def test_a_handler_exception_fails_the_job(echo):
    with api(echo) as client:
        body = client.post("runsync", json={"input": {"raise": "kaboom"}}).json()
    assert body["status"] == "FAILED"
    assert "kaboom" in body["error"] and "output" not in body


def test_an_error_item_fails_the_job_with_that_error_string(echo):
    error = json.dumps({"code": "invalid_input", "message": "no", "field": "text"})
    with api(echo) as client:
        body = client.post("runsync", json={"input": {"error": error}}).json()
    assert body["status"] == "FAILED"
    assert body["error"] == error


def test_retry_requeues_a_failed_job_under_the_same_id(echo):
    with api(echo) as client:
        failed = client.post("runsync", json={"input": {"error": "once"}}).json()
        retried = client.post(f"retry/{failed['id']}")
        assert retried.status_code == 200 and retried.json() == {"id": failed["id"], "status": "IN_QUEUE"}
        again = wait_status(client, failed["id"], TERMINAL)
        assert again["status"] == "FAILED" and again["error"] == "once"
        completed = client.post("runsync", json={"input": {"echo": 1}}).json()
        assert client.post(f"retry/{completed['id']}").status_code == 400
        assert client.post("retry/no-such-job").status_code == 404
        assert client.get("health").json()["jobs"]["retried"] >= 1


# ----------------------------------------------------------------------------------------------- cancel and timeout
def test_cancel_of_a_running_job_stops_it_on_the_worker(echo):
    with api(echo) as client:
        job_id = client.post("run", json={"input": {"echo": "long", "sleep": 60}}).json()["id"]
        wait_status(client, job_id, "IN_PROGRESS")
        cancelled = client.post(f"cancel/{job_id}").json()
        assert cancelled == {"id": job_id, "status": "CANCELLED"}
        # The worker runs one job at a time: it can only take the next one if the stop reached it.
        started = time.monotonic()
        after = client.post("runsync", params={"wait": 15000}, json={"input": {"echo": "next"}}).json()
        assert after["status"] == "COMPLETED", after
        assert time.monotonic() - started < 15
        assert client.get(f"status/{job_id}").json()["status"] == "CANCELLED"


def test_execution_timeout_times_the_job_out_and_frees_the_worker(echo):
    with api(echo) as client:
        job_id = client.post("run", json={"input": {"sleep": 60}, "policy": {"executionTimeout": 1000}}).json()["id"]
        timed_out = wait_status(client, job_id, TERMINAL, timeout=15)
        assert timed_out["status"] == "TIMED_OUT"
        assert 1000 <= timed_out["executionTime"] < 5000
        after = client.post("runsync", params={"wait": 15000}, json={"input": {"echo": "next"}}).json()
        assert after["status"] == "COMPLETED", after
        assert client.post(f"retry/{job_id}").status_code == 200  # TIMED_OUT jobs can be retried
        client.post(f"cancel/{job_id}")


def test_cancel_of_a_queued_job(idle):
    with api(idle) as client:
        job_id = client.post("run", json={"input": {"echo": 1}}).json()["id"]
        assert client.post(f"cancel/{job_id}").json() == {"id": job_id, "status": "CANCELLED"}
        assert client.get(f"status/{job_id}").json()["status"] == "CANCELLED"


def test_purge_queue_cancels_every_queued_job(idle):
    with api(idle) as client:
        ids = [client.post("run", json={"input": {"n": n}}).json()["id"] for n in range(3)]
        purged = client.post("purge-queue").json()
        assert purged["status"] == "completed" and purged["removed"] >= 3
        assert {client.get(f"status/{i}").json()["status"] for i in ids} == {"CANCELLED"}
        assert client.get("health").json()["jobs"]["inQueue"] == 0


# ----------------------------------------------------------------------------------------------- expiry
def test_results_expire_after_their_retention(idle):
    with api(idle) as client:
        sync = client.post("runsync", params={"wait": 1000}, json={"input": {}}).json()
        assert sync["status"] == "IN_QUEUE"
        run_id = client.post("run", json={"input": {}}).json()["id"]
        client.post(f"cancel/{sync['id']}")
        client.post(f"cancel/{run_id}")
        assert client.get(f"status/{run_id}").status_code == 200
        wait_until(lambda: client.get(f"status/{sync['id']}").status_code == 404, 5, "the runsync result to expire")
        assert client.get(f"status/{run_id}").status_code == 200, "run results are kept longer than runsync ones"
        wait_until(lambda: client.get(f"status/{run_id}").status_code == 404, 5, "the run result to expire")


def test_policy_ttl_removes_a_job_that_waited_too_long(idle):
    with api(idle) as client:
        job_id = client.post("run", json={"input": {}, "policy": {"ttl": 1500}}).json()["id"]
        assert client.get(f"status/{job_id}").json()["status"] == "IN_QUEUE"
        wait_until(lambda: client.get(f"status/{job_id}").status_code == 404, 5, "the job's ttl to expire")


def test_stream_of_a_queued_job_is_empty(idle):
    with api(idle) as client:
        job_id = client.post("run", json={"input": {}}).json()["id"]
        assert client.get(f"stream/{job_id}").json() == {"status": "IN_QUEUE", "stream": []}
        client.post(f"cancel/{job_id}")


# ----------------------------------------------------------------------------------------------- gateway behaviour
def test_requests_without_the_api_key_get_401(echo):
    with api(echo, key="") as anonymous, api(echo, key="wrong") as wrong:
        for client in (anonymous, wrong):
            assert client.post("run", json={"input": {}}).status_code == 401
            assert client.post("runsync", json={"input": {}}).status_code == 401
            assert client.get("status/x").status_code == 401
            assert client.get("health").status_code == 401
        # The user's key is not a worker key.
        assert (
            httpx.get(
                f"{echo.endpoint_url}/job-take/intruder?gpu=cpu", headers={"Authorization": echo.api_key}
            ).status_code
            == 401
        )
    # RunPod accepts the bare key as well as `Bearer <key>`.
    bare = httpx.get(f"{echo.endpoint_url}/health", headers={"Authorization": echo.api_key})
    assert bare.status_code == 200


def test_unknown_jobs_and_endpoints_are_404(echo):
    with api(echo) as client:
        assert client.get("status/no-such-job").status_code == 404
        assert client.post("cancel/no-such-job").status_code == 404
        assert client.get("stream/no-such-job").status_code == 404
    other = httpx.get(
        echo.endpoint_url.replace("/v2/local", "/v2/other") + "/health", headers={"Authorization": echo.api_key}
    )
    assert other.status_code == 404


def test_malformed_requests_are_400(echo):
    with api(echo) as client:
        assert client.post("run", content=b"{not json", headers={"Content-Type": "application/json"}).status_code == 400
        assert client.post("run", json={"inputs": {}}).status_code == 400
        assert client.post("run", json=[1, 2]).status_code == 400
        assert client.post("run", json={"input": {}, "policy": {"executionTimeout": "soon"}}).status_code == 400


def test_payload_limits_are_runpods(echo):
    def body(size: int) -> bytes:
        return json.dumps({"input": {"echo": "big", "pad": "x" * size}}).encode()

    with api(echo) as client:
        assert client.post("run", content=body(10 * MB + 1)).status_code == 413
        assert client.post("runsync", content=body(20 * MB + 1)).status_code == 413
        within = client.post("runsync", content=body(11 * MB), headers={"Content-Type": "application/json"})
        assert within.status_code == 200 and within.json()["status"] == "COMPLETED"


def test_injected_faults_answer_without_processing(echo):
    jobs_before = echo.call(lambda: len(echo.queue.jobs))
    echo.inject_fault("/runsync", 503, count=2, retry_after=0)
    with api(echo) as client:
        first = client.post("runsync", json={"input": {"echo": 1}})
        second = client.post("runsync", json={"input": {"echo": 1}})
        assert (first.status_code, second.status_code) == (503, 503)
        assert first.headers["Retry-After"] == "0"
        assert echo.call(lambda: len(echo.queue.jobs)) == jobs_before, "a faulted request created a job"
        assert client.post("runsync", json={"input": {"echo": 1}}).json()["status"] == "COMPLETED"
        echo.inject_fault("/status", 429, count=1)
        assert client.get("status/anything").status_code == 429
        assert client.get("status/anything").status_code == 404


def test_health_counts_jobs_and_workers(echo):
    with api(echo) as client:
        client.post("runsync", json={"input": {"echo": 1}})
        health = client.get("health").json()
    assert health["workers"]["ready"] == 1 and health["workers"]["unhealthy"] == 0
    assert health["jobs"]["completed"] >= 1 and health["jobs"]["inProgress"] == 0


# ----------------------------------------------------------------------------------------------- workers
def test_a_worker_with_concurrency_takes_jobs_in_batches():
    with running_stack(1, worker_cmd=ECHO_WORKER, worker_env={"ECHO_CONCURRENCY": "3"}) as stack, api(stack) as client:
        ids = [client.post("run", json={"input": {"echo": n, "sleep": 1.5}}).json()["id"] for n in range(3)]
        started = time.monotonic()
        done = [wait_status(client, job_id, TERMINAL) for job_id in ids]
        assert {d["status"] for d in done} == {"COMPLETED"}
        assert time.monotonic() - started < 4.0, "the three jobs did not run side by side"


def test_a_worker_killed_mid_job_loses_no_job_and_the_stack_keeps_serving():
    with running_stack(2, worker_cmd=ECHO_WORKER) as stack, api(stack) as client:
        job_id = client.post("run", json={"input": {"echo": "survivor", "sleep": 2}}).json()["id"]
        victim = wait_status(client, job_id, "IN_PROGRESS")["workerId"]
        victim_pid = stack.workers[victim]
        os.kill(victim_pid, signal.SIGKILL)
        done = wait_status(client, job_id, TERMINAL, timeout=30)
        assert done["status"] == "COMPLETED", done
        assert done["workerId"] != victim, "the job was finished by a worker that had been killed"
        assert stack.counters().get("retried") == 1
        # Its whole process group (runpod's heartbeat child included) is gone, and a new worker replaced it.
        wait_until(lambda: group_gone(victim_pid), 10, "the killed worker's process group to be gone")
        wait_until(lambda: len(stack.workers) == 2 and victim not in stack.workers, 20, "a replacement worker")
        assert client.post("runsync", json={"input": {"echo": "after"}}).json()["status"] == "COMPLETED"
        pids = stack.worker_pids
    assert all(group_gone(pid) for pid in pids), "stop() left worker processes behind"


def test_a_silent_worker_loses_its_job_which_is_retried_then_failed(idle):
    """Worker-side wire format, spoken by hand: two workers take the job and go silent; the second silence fails it."""
    worker_headers = {"Authorization": idle.config.worker_key}
    base = idle.endpoint_url
    with api(idle) as client, httpx.Client(headers=worker_headers, timeout=15) as worker:
        client.post("purge-queue")
        assert worker.get(f"{base}/job-take/ghost-0?gpu=cpu&job_in_progress=0").status_code == 204
        job_id = client.post("run", json={"input": {"echo": "x"}}).json()["id"]
        taken = worker.get(f"{base}/job-take/ghost-1?gpu=cpu&job_in_progress=0")
        assert taken.status_code == 200 and taken.json() == {"id": job_id, "input": {"echo": "x"}}
        assert client.get(f"status/{job_id}").json()["workerId"] == "ghost-1"
        requeued = wait_status(client, job_id, "IN_QUEUE", timeout=10)
        assert "workerId" not in requeued
        batch = worker.get(f"{base}/job-take-batch/ghost-2?gpu=cpu&batch_size=4&job_in_progress=0")
        assert batch.status_code == 200 and [job["id"] for job in batch.json()] == [job_id]
        failed = wait_status(client, job_id, TERMINAL, timeout=10)
        assert failed["status"] == "FAILED" and "stopped responding" in failed["error"]
        # ghost-1 comes back: it is told to stop the job, and its late result is dropped.
        assert worker.get(f"{base}/job-stop/ghost-1?gpu=cpu").json() == {"jobsToStop": [job_id]}
        late = worker.post(
            f"{base}/job-done/ghost-1/{job_id}?gpu=cpu&isStream=false",
            content=json.dumps({"output": "late"}),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert late.status_code == 200 and late.json() == {"accepted": False}
        assert client.get(f"status/{job_id}").json()["status"] == "FAILED"


def test_a_stop_the_worker_missed_is_sent_again_while_its_pings_still_list_the_job(idle):
    """runpod ignores a stop for a job still in its local queue; its heartbeat then still reports the job."""
    worker_headers = {"Authorization": idle.config.worker_key}
    base = idle.endpoint_url
    with api(idle) as client, httpx.Client(headers=worker_headers, timeout=15) as worker:
        client.post("purge-queue")
        job_id = client.post("run", json={"input": {}}).json()["id"]
        assert worker.get(f"{base}/job-take/ghost-9?gpu=cpu&job_in_progress=0").json()["id"] == job_id
        client.post(f"cancel/{job_id}")
        assert worker.get(f"{base}/job-stop/ghost-9?gpu=cpu").json() == {"jobsToStop": [job_id]}
        ping = worker.get(f"{base}/ping/ghost-9?gpu=cpu", params={"job_id": job_id, "runpod_version": "1.12.0"})
        assert ping.status_code == 200
        assert worker.get(f"{base}/job-stop/ghost-9?gpu=cpu").json() == {"jobsToStop": [job_id]}
        worker.get(f"{base}/ping/ghost-9?gpu=cpu", params={"runpod_version": "1.12.0"})  # the job is gone
        assert worker.get(f"{base}/job-stop/ghost-9?gpu=cpu").status_code == 204


# ----------------------------------------------------------------------------------------------- strict JSON
@pytest.mark.parametrize(
    "body",
    [
        b'{"input": {"text": "hi", "speed": NaN}}',
        b'{"input": {"text": "hi", "speed": Infinity}}',
        b'{"input": {"text": "hi", "speed": -Infinity}}',
        b'{"input": {"text": "unpaired \\ud800 surrogate"}}',
        b'{"input": {"text": "invalid utf-8 \xff"}}',
        b'{"input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
    ids=["nan", "infinity", "-infinity", "lone surrogate", "invalid utf-8", "deep nesting"],
)
def test_bodies_runpod_would_not_parse_are_400_and_create_no_job(idle, body):
    jobs_before = idle.call(lambda: len(idle.queue.jobs))
    with api(idle) as client:
        for route in ("run", "runsync"):
            response = client.post(route, content=body, headers={"Content-Type": "application/json"})
            assert response.status_code == 400, response.text
            assert "strict JSON" in response.json()["error"] or "deeply" in response.json()["error"]
    assert idle.call(lambda: len(idle.queue.jobs)) == jobs_before


def test_a_result_that_is_not_strict_json_fails_the_job_instead_of_hanging_it(idle):
    worker_headers = {"Authorization": idle.config.worker_key}
    base = idle.endpoint_url
    with api(idle) as client, httpx.Client(headers=worker_headers, timeout=15) as worker:
        client.post("purge-queue")
        job_id = client.post("run", json={"input": {"echo": "x"}}).json()["id"]
        assert worker.get(f"{base}/job-take/ghost-7?gpu=cpu&job_in_progress=0").json()["id"] == job_id
        done = worker.post(
            f"{base}/job-done/ghost-7/{job_id}?gpu=cpu&isStream=false",
            content=b'{"output": {"duration": NaN}}',
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert done.status_code == 200 and done.json() == {"accepted": True}
        status = client.get(f"status/{job_id}")
        assert status.status_code == 200
        assert status.json()["status"] == "FAILED" and "not strict JSON" in status.json()["error"]


def test_a_frozen_worker_is_noticed_as_runpod_would_and_its_job_retried_elsewhere():
    """A worker that stops answering (process frozen, network cut) but does not exit: after two missed ping
    intervals (RunPod's SDK pings every 10 s) its job runs on another worker; the frozen one, thawed, stops it."""
    with running_stack(2, worker_cmd=ECHO_WORKER) as stack, api(stack) as client:
        job_id = client.post("run", json={"input": {"echo": "survivor", "sleep": 3}}).json()["id"]
        victim = wait_status(client, job_id, "IN_PROGRESS")["workerId"]
        group = os.getpgid(stack.workers[victim])
        frozen_at = time.monotonic()
        os.killpg(group, signal.SIGSTOP)
        try:
            done = wait_status(client, job_id, TERMINAL, timeout=60)
            noticed_after = time.monotonic() - frozen_at
        finally:
            os.killpg(group, signal.SIGCONT)
        assert done["status"] == "COMPLETED" and done["workerId"] != victim, done
        assert stack.queue.options.worker_lost_after_s <= noticed_after < stack.queue.options.worker_lost_after_s + 15
