"""The long fuzz run: `python -m bench.fuzz [N]` (default 10,000 inputs) through a WorkerService.

The same strategies and checks as tests/worker/test_fuzz.py (tests/worker/fuzzing.py): inputs from the contract's
JSON Schema, mutated ones and garbage, run on the tiny model with a moto S3 bucket on loopback. It does not stop
at the first failure: it counts every outcome and prints the table, then `fuzz_uncoded_errors <n>`, the number of
jobs that ended in anything but a success or a coded error other than `internal` (or broke the bucket's
consistency). That number must be 0.
"""

from __future__ import annotations

import base64
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench._common import quiet_aws_env
from devstack.model import tiny_model_env


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    total = int(args[0]) if args else 10_000
    quiet_aws_env()
    os.environ.update(tiny_model_env())
    os.environ["HF_HUB_OFFLINE"] = "1"

    import logging

    from hypothesis import HealthCheck, Phase, given, settings

    from tests.worker.fuzzing import STORED_VOICE, FuzzWorld, audio_server, check_bucket, offline_dns, outcome_of
    from tests.worker.helpers import make_service
    from tests.worker.s3_server import running_s3_server
    from worker.config import ModelSettings
    from worker.engine import Engine

    logging.basicConfig(level=logging.CRITICAL)  # refused jobs log at INFO; the counts are the output
    last_traceback: list[str] = [""]

    class KeepTraceback(logging.Handler):
        """The worker logs an `internal` job's traceback at ERROR: keep it for the failure list."""

        def emit(self, record: logging.LogRecord) -> None:
            last_traceback[0] = self.format(record)

    worker_log = logging.getLogger("worker")
    worker_log.setLevel(logging.ERROR)
    worker_log.addHandler(KeepTraceback(logging.ERROR))
    engine = Engine.load(ModelSettings(_env_file=None))
    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    started = time.monotonic()
    with (
        running_s3_server() as s3,
        offline_dns(),
        audio_server(FuzzWorld("").good_wav) as base_url,
        tempfile.TemporaryDirectory(prefix="fuzz-") as workdir,
    ):
        bucket = s3.create_bucket()
        world = FuzzWorld(base_url)
        service = make_service(engine, bucket.settings(), Path(workdir), allow_private_urls=True, fetch_timeout_s=3.0)
        stored = {"base64": base64.b64encode(world.good_wav).decode()}
        [saved] = service.run({"action": "upload_voice", "name": STORED_VOICE, "audio": stored, "text": "A voice."})
        assert "error" not in saved, saved

        def read(key: str) -> bytes:
            return bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read()

        @settings(
            max_examples=total,
            deadline=None,
            database=None,
            phases=[Phase.generate],  # every input counted once; no shrinking (nothing raises)
            suppress_health_check=list(HealthCheck),
        )
        @given(world.strategies())
        def run_one(job_input: dict[str, Any]) -> None:
            before = bucket.keys()
            last_traceback[0] = ""
            try:
                outcome = outcome_of(list(service.run(job_input)))
                after = bucket.keys()
                if outcome != "ok" and after != before:
                    raise AssertionError("a refused job changed the bucket")
                if after != before:
                    check_bucket(after, read)
                # Checked, a job's generated audio is removed again: the bucket (listed twice per job) stays
                # small, so the run does not slow down as it goes.
                for key in set(after) - set(before):
                    if key.startswith("generated/"):
                        bucket.client.delete_object(Bucket=bucket.name, Key=key)
            except AssertionError as exc:
                outcome = "UNCODED / inconsistent"
                failures.append(f"{exc}"[:300] + f" <- {job_input!r:.200}\n{last_traceback[0][-3000:]}")
            outcomes[outcome] += 1
            done = sum(outcomes.values())
            if done % 500 == 0:
                print(f"  {done} inputs, {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)

        run_one()
    print(f"{'outcome':<26} {'jobs':>7}")
    for outcome, count in outcomes.most_common():
        print(f"{outcome:<26} {count:>7}")
    print(f"{'total':<26} {sum(outcomes.values()):>7}   ({time.monotonic() - started:.0f} s)")
    for failure in failures[:20]:
        print("FAILED:", failure)
    print(f"fuzz_uncoded_errors {len(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
