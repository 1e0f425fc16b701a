"""Time to first audio byte: the http serving mode (load balancer) vs the queue path's first `/stream` chunk.

    python -m bench.ttfb [--rounds 7] [--nfe 4]

Two devstacks side by side, each with one real worker on the tiny model (same model, same machine):
- http: `POST /v1/audio/speech` (response_format pcm) through the load-balancer emulator; timed until the first
  body byte arrives.
- queue: `POST /run` with `stream: true` through the queue emulator, then `GET /stream/<id>` polled every 50 ms
  (tighter than the SDK's default) until the first chunk item arrives.
The same text (three text chunks of the built-in voice) and seed; the two alternate, one request at a time, and
each request is read to its end before the next starts. Prints `ttfb_ratio <http / queue>` (medians of paired
rounds): below 1 means the load balancer's first audio comes sooner.
"""

from __future__ import annotations

import argparse
import time

import httpx

from bench._common import headline, interleaved, machine_line, paired_ratio, print_table, quiet_aws_env, timing_row
from devstack.testing import running_stack

TEXT = " ".join(["The fox runs far away into the forest to hide from the dog."] * 6)  # 3 chunks of the default voice
SEED = 7


def http_first_byte(client: httpx.Client, base_url: str, nfe: int, first: list[float]) -> None:
    body = {
        "model": "f5-tts",
        "input": TEXT,
        "voice": "default",
        "response_format": "pcm",
        "seed": SEED,
        "nfe_step": nfe,
    }
    count = len(first)
    started = time.perf_counter()
    with client.stream("POST", f"{base_url}/v1/audio/speech", json=body) as response:
        response.raise_for_status()
        for _ in response.iter_raw():  # read to the end, so that the next request finds the worker idle
            if len(first) == count:
                first.append(time.perf_counter() - started)


def queue_first_chunk(client: httpx.Client, endpoint_url: str, nfe: int, first: list[float]) -> None:
    job = {"text": TEXT, "seed": SEED, "nfe_step": nfe, "stream": True, "format": "wav", "delivery": "base64"}
    started = time.perf_counter()
    job_id = client.post(f"{endpoint_url}/run", json={"input": job}).raise_for_status().json()["id"]
    got_first = False
    while True:
        answer = client.get(f"{endpoint_url}/stream/{job_id}").raise_for_status().json()
        if not got_first and answer.get("stream"):
            first.append(time.perf_counter() - started)
            got_first = True
        if answer["status"] not in ("IN_QUEUE", "IN_PROGRESS"):
            if not got_first:
                raise SystemExit(f"queue job ended {answer['status']} without a chunk")
            return
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--nfe", type=int, default=4)
    args = parser.parse_args()
    quiet_aws_env()
    print(machine_line())
    with running_stack(1) as queue_stack, running_stack(1, endpoint_type="load_balancer") as lb_stack:
        queue_http = httpx.Client(headers={"Authorization": f"Bearer {queue_stack.api_key}"}, timeout=300)
        lb_http = httpx.Client(headers={"Authorization": f"Bearer {lb_stack.api_key}"}, timeout=300)
        firsts: dict[str, list[float]] = {"http": [], "queue": []}
        contenders = {
            "http": lambda: http_first_byte(lb_http, lb_stack.base_url, args.nfe, firsts["http"]),
            "queue": lambda: queue_first_chunk(queue_http, queue_stack.endpoint_url, args.nfe, firsts["queue"]),
        }
        for run in contenders.values():  # warm both workers up on this text (first-use allocations)
            run()
        firsts = {"http": [], "queue": []}
        totals = interleaved(contenders, args.rounds)
    rows = [timing_row(f"{name} first audio", firsts[name], 1000) for name in firsts]
    rows += [timing_row(f"{name} whole request", totals[name], 1000) for name in totals]
    print_table(
        ["ms", "median", "min", "max", "runs"], rows, title=f"time to first audio, {len(TEXT)} chars, nfe {args.nfe}"
    )
    headline("ttfb_ratio", paired_ratio(firsts["http"], firsts["queue"]))


if __name__ == "__main__":
    main()
