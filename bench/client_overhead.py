"""Client overhead: the generated client's `synthesize` + `read()` vs raw HTTP doing the same job.

    python -m bench.client_overhead [--rounds 15] [--nfe 32]

Both talk to one devstack (RunPod API emulator, one real `python -m worker.handler` on the tiny model, local S3):
- client: `Client.synthesize(text, seed=..., nfe_step=...)` then `result.read()` (downloads the presigned URL).
- raw: an httpx client POSTs the same input to `/runsync?wait=...` (the wait the client asks for too), polls
  `/status` if the job outlasts it, and GETs the `audio_url`.
Both keep their HTTP connections open between jobs; the two alternate, one job at a time.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import httpx
from f5tts_client import Client

from bench._common import (
    BENCH_TEXT,
    TIMING_HEADERS,
    headline,
    interleaved,
    machine_line,
    median,
    paired_ratio,
    print_table,
    quiet_aws_env,
    timing_row,
)
from devstack.testing import running_stack

SEED = 7
RUNSYNC_WAIT_S = 60.0  # the client's default runsync_wait
DONE = "COMPLETED"
UNFINISHED = {"IN_QUEUE", "IN_PROGRESS"}


class RawHttp:
    """What a caller without the SDK writes: POST /runsync, poll /status if needed, GET the audio."""

    def __init__(self, endpoint_url: str, api_key: str) -> None:
        self.endpoint_url = endpoint_url
        self.http = httpx.Client(headers={"Authorization": f"Bearer {api_key}"}, timeout=RUNSYNC_WAIT_S + 30)
        self.downloads = httpx.Client(timeout=30)  # presigned URLs carry their own signature: no API key

    def synthesize(self, job_input: dict[str, Any]) -> bytes:
        response = self.http.post(
            f"{self.endpoint_url}/runsync", params={"wait": int(RUNSYNC_WAIT_S * 1000)}, json={"input": job_input}
        )
        response.raise_for_status()
        state = response.json()
        while state["status"] in UNFINISHED:
            time.sleep(0.25)
            state = self.http.get(f"{self.endpoint_url}/status/{state['id']}").raise_for_status().json()
        if state["status"] != DONE:
            raise SystemExit(f"raw job ended {state['status']}: {state.get('error')}")
        output = state["output"]
        item = output[0] if isinstance(output, list) else output  # the handler's one-item aggregate stream
        return self.downloads.get(item["audio_url"]).raise_for_status().content

    def close(self) -> None:
        self.http.close()
        self.downloads.close()


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved jobs of each (default 15)")
    parser.add_argument("--nfe", type=int, default=32, help="nfe_step of the job (default 32, the contract's default)")
    args = parser.parse_args(argv)

    quiet_aws_env()
    print("== client overhead: Client.synthesize + read() vs raw httpx /runsync + download, through the devstack ==")
    print(machine_line())
    job_input = {"text": BENCH_TEXT, "seed": SEED, "nfe_step": args.nfe}
    with running_stack(workers=1) as stack:
        client = Client(api_key=stack.api_key, endpoint_url=stack.endpoint_url, runsync_wait=RUNSYNC_WAIT_S)
        raw = RawHttp(stack.endpoint_url, stack.api_key)
        try:

            def with_client() -> bytes:
                return client.synthesize(BENCH_TEXT, seed=SEED, nfe_step=args.nfe).read()

            def with_raw() -> bytes:
                return raw.synthesize(job_input)

            if with_client() != with_raw():
                raise SystemExit("the client and the raw call got different audio for the same job")
            print(f"devstack at {stack.endpoint_url}, one worker (tiny model, CPU); both get the same audio")
            for _ in range(2):
                with_client()
                with_raw()
            times = interleaved({"client": with_client, "raw": with_raw}, args.rounds)
        finally:
            client.close()
            raw.close()

    ratio = median(times["client"]) / median(times["raw"])
    print_table(
        TIMING_HEADERS,
        [
            timing_row("client: synthesize + read()", times["client"]),
            timing_row("raw: httpx runsync + GET audio_url", times["raw"]),
        ],
        title="one job end to end, interleaved",
    )
    print(
        f"\nratio of medians {ratio:.3f}; median of per-round ratios {paired_ratio(times['client'], times['raw']):.3f}"
    )
    headline("client_overhead_ratio", ratio)
    return ratio


if __name__ == "__main__":
    main()
