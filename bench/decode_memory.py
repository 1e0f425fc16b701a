"""Peak memory of decoding hostile reference audio: `python -m bench.decode_memory`.

Each case runs `audio.prepare_reference` (what synthesize's ref_audio and upload_voice do) in a fresh process
and prints its peak RSS above the idle process (imports done, bytes in memory). The bombs are the ones the
tests build (tests/worker/test_audio.py), plus the largest input within the budget as the honest upper end.
Target: under 300 MB above idle for every case.
"""

from __future__ import annotations

import base64
import subprocess
import sys

CHILD = r"""
import base64, resource, sys, time
from worker import audio
from worker.schema import ContractError
data = base64.b64decode(sys.stdin.buffer.read())
idle = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
try:
    audio.prepare_reference(data, None)
    outcome = "accepted"
except ContractError as exc:
    outcome = exc.code.value
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"{(peak - idle) / 1024:.0f} {time.perf_counter() - started:.2f} {outcome}")
"""


def cases() -> dict[str, bytes]:
    from tests.worker import test_audio as t

    # The largest input within the budget: 599 s of stereo 48 kHz sound (a tone with pauses), which is
    # decoded in full and then clipped.
    tone = [
        "ffmpeg",
        "-v",
        "error",
        "-f",
        "lavfi",
        "-i",
        "sine=f=220:r=48000",
        "-af",
        "volume='lt(mod(t,3),2)':eval=frame",
    ]
    stereo = subprocess.run(
        [*tone, "-t", "599", "-ac", "2", "-f", "flac", "pipe:1"], capture_output=True, check=True, timeout=120
    ).stdout
    return {
        "flac declaring 599 s x 8 ch x 384 kHz": t._bomb_declared_599s_8ch_384k(),
        "flac declaring 599 s x 8 ch x 192 kHz": t._declaring(
            t._ffmpeg_silence("flac", 1, 192000, "7.1"), 599 * 192000
        ),
        "flac declaring no length, 30 s x 8 ch x 384 kHz": t._bomb_undeclared_30s_8ch_384k(),
        "m4a 100 s x 8 ch x 96 kHz": t._bomb_m4a_8ch_96k(),
        "flac 599 s stereo 48 kHz tone (within the budget)": stereo,
    }


def main() -> None:
    print(f"{'case':<52} {'bytes':>9} {'peak MB over idle':>18} {'seconds':>8}  outcome")
    worst = 0.0
    for name, data in cases().items():
        result = subprocess.run(
            [sys.executable, "-c", CHILD], input=base64.b64encode(data), capture_output=True, check=True
        )
        over_mb, seconds, outcome = result.stdout.decode().split()
        worst = max(worst, float(over_mb))
        print(f"{name:<52} {len(data):>9} {over_mb:>18} {seconds:>8}  {outcome}")
    print(f"decode_peak_mb_over_idle {worst:.0f}")


if __name__ == "__main__":
    main()
