"""Streaming: time to the first streamed chunk vs the whole job, and streamed vs whole total time.

    python -m bench.streaming [--rounds 3] [--long-rounds 1] [--nfe 32]

On the devstack (RunPod API emulator, one real `python -m worker.handler` on the tiny model, local S3), through
the client SDK, for a 5-sentence text (~560 characters) and a ~2,000-character text:
- streamed: `Client.synthesize_stream(...)`, time from the call to the first chunk in hand (time to first audio,
  TTFA), and to the last;
- whole: `Client.synthesize(...)` then `read()` (the caller has the audio), the same seed and options.
The two alternate, one job at a time. Prints `ttfa_ratio <x>` (5-sentence text: first chunk ÷ whole job; target
<= 0.15) and `stream_total_ratio <x>` (5-sentence text: streamed total ÷ whole job; target <= 1.10).
"""

from __future__ import annotations

import argparse
import time

from f5tts_client import Client

from bench._common import headline, machine_line, median, print_table, quiet_aws_env, timing_row
from devstack.testing import running_stack

SEED = 7
FIVE_SENTENCES = (
    "The old lighthouse keeper climbed the spiral stairs every evening, long before the sun touched the sea. "
    "He polished the great lens until it shone, then lit the lamp and watched the long beam sweep across the dark water. "
    "Ships passing in the night would see the light and know that the rocks were near, whatever the weather. "
    "Some of the sailors waved from the deck as they passed, though they knew he could not see them from so far away. "
    "When the morning came, he put out the lamp, wrote a line in his logbook about the night, and went down to sleep until noon."
)
LONG_TEXT = (
    FIVE_SENTENCES + " "
    "In winter the storms came in from the west, and the waves broke over the rocks so high that the spray reached "
    "the gallery. On those nights he did not sleep at all, but sat by the lamp with a pot of tea and listened to the "
    "wind. The keeper's daughter lived in the town across the bay, and once a month she rowed out with bread, "
    "letters and news. She told him who had married, who had left for the city, and which boats had come home "
    "late. He listened, nodded, and asked the same question every time: had anyone seen the light go out? Nobody "
    "ever had, and that was the whole of his pride. Years later, when the lamp was made automatic and the keeper "
    "moved to a small house by the harbour, he still woke at dusk and looked out of the window. The beam swept "
    "across the water as it always had, steady and patient, and he would watch it for a while before he went back "
    "to bed. Children from the town sometimes knocked on his door to ask about the storms, and he told them about "
    "the night the mast of a fishing boat came out of the fog a stone's throw from the rocks. The boat turned in "
    "time, he said, because the light was where it should be. Then he would give them each a biscuit and send "
    "them home before dark, and they would run along the harbour wall, counting the seconds between the flashes. "
    "He kept the old logbooks on a shelf above the fire, one for every year, and on quiet evenings he read them "
    "again, remembering each storm by the way his handwriting shook."
)


def measure(client: Client, text: str, nfe: int, rounds: int, warm: bool) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"first chunk": [], "streamed total": [], "whole": []}
    chunks = 0

    def streamed() -> None:
        nonlocal chunks
        started = time.perf_counter()
        first = None
        with client.synthesize_stream(text, seed=SEED, nfe_step=nfe) as stream:
            for chunk in stream:
                if first is None:
                    first = time.perf_counter() - started
                chunks = chunk.index + 1
        assert first is not None, "the stream ended without a chunk"
        times["first chunk"].append(first)
        times["streamed total"].append(time.perf_counter() - started)
        print(f"  streamed: first chunk {first:.2f} s, total {times['streamed total'][-1]:.2f} s", flush=True)

    def whole() -> None:
        started = time.perf_counter()
        client.synthesize(text, seed=SEED, nfe_step=nfe).read()
        times["whole"].append(time.perf_counter() - started)
        print(f"  whole: {times['whole'][-1]:.2f} s", flush=True)

    if warm:
        streamed()  # the worker's first job, the connections: not timed
        times = {name: [] for name in times}
    for round_index in range(rounds):
        for run in (streamed, whole) if round_index % 2 == 0 else (whole, streamed):
            run()
    times["chunks"] = [chunks]
    return times


def main(argv: list[str] | None = None) -> tuple[float, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved jobs of each kind per text (default 3)")
    parser.add_argument("--long-rounds", type=int, default=1, help="rounds for the 2,000-character text (default 1)")
    parser.add_argument("--nfe", type=int, default=32, help="nfe_step of the jobs (default 32, the contract's default)")
    args = parser.parse_args(argv)

    quiet_aws_env()
    print("== streaming: time to first chunk and total time, streamed vs whole, through the devstack ==")
    print(machine_line(), flush=True)
    results: dict[str, dict[str, list[float]]] = {}
    with running_stack(workers=1) as stack:
        client = Client(api_key=stack.api_key, endpoint_url=stack.endpoint_url)
        try:
            print(f"devstack at {stack.endpoint_url}, one worker (tiny model, CPU), nfe_step {args.nfe}", flush=True)
            for name, text, rounds in (
                ("5 sentences", FIVE_SENTENCES, args.rounds),
                ("2,000 characters", LONG_TEXT, args.long_rounds),
            ):
                print(f"{name}:", flush=True)
                results[name] = measure(client, text, args.nfe, rounds, warm=not results)
        finally:
            client.close()

    rows = []
    for name, times in results.items():
        text = FIVE_SENTENCES if name == "5 sentences" else LONG_TEXT
        label = f"{name} ({len(text)} chars, {times['chunks'][0]} chunks)"
        rows += [timing_row(f"{label}: {kind}", times[kind]) for kind in ("first chunk", "streamed total", "whole")]
    print_table(["job", "median s", "min s", "max s", "runs"], rows, title="client-side wall time, interleaved")
    for name, times in results.items():
        whole = median(times["whole"])
        print(
            f"{name}: first chunk ÷ whole {median(times['first chunk']) / whole:.3f}, "
            f"streamed total ÷ whole {median(times['streamed total']) / whole:.3f}"
        )
    five = results["5 sentences"]
    ttfa = median(five["first chunk"]) / median(five["whole"])
    total = median(five["streamed total"]) / median(five["whole"])
    headline("stream_total_ratio", total)
    headline("ttfa_ratio", ttfa)
    return ttfa, total


if __name__ == "__main__":
    main()
