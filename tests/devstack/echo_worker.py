"""A fast RunPod worker for the emulator tests: the real `runpod.serverless.start` loop, configured like the real
worker (a generator handler, `return_aggregate_stream`, `concurrency_modifier`), with a handler that does what the
job's input asks instead of loading a model:

    {"echo": x}         one item {"echo": x, "index": 0, "worker": <RUNPOD_POD_ID>}
    {"chunks": n}       n items, `chunk_sleep` seconds apart (streaming)
    {"sleep": s}        sleeps s seconds first (a long job)
    {"raise": "msg"}    raises (the SDK turns it into a failed job)
    {"error": "msg"}    yields {"error": "msg"} (the real worker's coded-error convention)

Run: `python tests/devstack/echo_worker.py`; ECHO_CONCURRENCY sets how many jobs it runs at once.
"""

import asyncio
import os

import runpod


async def handler(job):
    params = job["input"] if isinstance(job["input"], dict) else {}
    await asyncio.sleep(float(params.get("sleep", 0)))
    if "raise" in params:
        raise RuntimeError(params["raise"])
    if "error" in params:
        yield {"error": params["error"]}
        return
    for index in range(int(params.get("chunks", 1))):
        if index:
            await asyncio.sleep(float(params.get("chunk_sleep", 0)))
        yield {"echo": params.get("echo"), "index": index, "worker": os.environ.get("RUNPOD_POD_ID")}


if __name__ == "__main__":
    concurrency = int(os.environ.get("ECHO_CONCURRENCY", "1"))
    runpod.serverless.start(
        {"handler": handler, "return_aggregate_stream": True, "concurrency_modifier": lambda _current: concurrency}
    )
