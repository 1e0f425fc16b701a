"""Streams and whole results from one generator (WorkerService.speak), through the real f5-tts inference on the
tiny checkpoint: the same audio in both, a plan that starts early, and every text the contract accepts either
spoken or refused with a coded error (issues #11 and #13)."""

from __future__ import annotations

import base64
import io
import threading

import numpy as np
import pytest
import soundfile as sf

from worker.schema import ErrorBody, ErrorCode, SynthesizeInput
from worker.service import JobCancelled, WorkerService

pytestmark = pytest.mark.timeout(300)

FAST = {"nfe_step": 4, "delivery": "base64"}
# Four chunks with the default voice: a first sentence, then three packed to F5's budget.
STORY = (
    "The lamp was lit at dusk. "
    "He polished the great lens until it shone, then lit the lamp and watched the beam sweep across the water. "
    "Ships passing in the night would see the light and know that the rocks were near. "
    "Some of the sailors waved, though they knew he could not see them from so far away. "
    "When the morning came, he put out the lamp, wrote a line in his logbook, and went down to sleep."
)


def pcm16(encoded: str) -> np.ndarray:
    samples, _ = sf.read(io.BytesIO(base64.b64decode(encoded)), dtype="int16")
    return samples


def error_of(items: list[dict]) -> ErrorBody:
    assert len(items) == 1 and set(items[0]) == {"error"}, items
    return ErrorBody.model_validate_json(items[0]["error"])


@pytest.mark.parametrize(
    "options",
    [{}, {"cross_fade_duration": 0.0}, {"remove_silence": True}],
    ids=["default-cross-fade", "no-cross-fade", "remove-silence"],
)
def test_streamed_pieces_joined_equal_the_whole_result(local_service: WorkerService, options: dict) -> None:
    job = {"text": STORY, "seed": 11, "format": "wav", **FAST, **options}
    [whole] = list(local_service.run(job))
    *chunks, end = list(local_service.run({**job, "stream": True}))

    assert whole["chunks"] == end["chunks"] == len(chunks) >= 3
    assert chunks[0]["text"] == "The lamp was lit at dusk."  # the first sentence speaks first
    joined = np.concatenate([pcm16(c["audio_base64"]) for c in chunks])
    assert np.array_equal(joined, pcm16(whole["audio_base64"]))  # sample for sample, 16-bit
    assert end["duration"] == whole["duration"] and end["seed"] == whole["seed"] == 11


def test_the_cross_fade_is_in_the_stream(local_service: WorkerService) -> None:
    """Against a stream without fade: the joins differ there and only there, and the faded stream is shorter by
    the overlaps (three joins of 0.15 s)."""
    job = {"text": STORY, "seed": 5, "format": "wav", "stream": True, **FAST}
    faded = [pcm16(c["audio_base64"]) for c in list(local_service.run(job))[:-1]]
    plain = [pcm16(c["audio_base64"]) for c in list(local_service.run({**job, "cross_fade_duration": 0}))[:-1]]
    overlap = int(0.15 * 24000)
    assert sum(p.size for p in plain) - sum(f.size for f in faded) == overlap * (len(plain) - 1)
    # Piece 0 ends where the fade into chunk 1 begins: what it holds is chunk 0 untouched.
    assert np.array_equal(faded[0], plain[0][:-overlap])
    assert not np.array_equal(faded[1][:overlap], plain[0][-overlap:])


@pytest.mark.parametrize("text", ["Hi.", "Hello", "Okay"])
def test_very_short_texts_produce_audio_streamed_and_whole(local_service: WorkerService, text: str) -> None:
    [whole] = list(local_service.run({"text": text, "seed": 2, **FAST}))
    [chunk, end] = list(local_service.run({"text": text, "seed": 2, "stream": True, **FAST}))
    assert whole["chunks"] == end["chunks"] == 1 and chunk["text"] == text
    assert pcm16(whole["audio_base64"]).size > 0 and whole["duration"] > 0
    assert np.array_equal(pcm16(chunk["audio_base64"]), pcm16(whole["audio_base64"]))


def test_a_5000_character_unpunctuated_text_streams_all_its_chunks_in_order(local_service: WorkerService) -> None:
    # Issue #13's first row: 1,000 words without punctuation used to be one chunk far over the model's range.
    text = " ".join(["word"] * 999 + ["ends"])  # 4,999 characters
    assert len(text) <= 5000
    items = list(local_service.run({"text": text, "stream": True, "format": "mp3", **FAST}))
    *chunks, end = items
    assert end["type"] == "end" and end["chunks"] == len(chunks) > 20
    assert [c["index"] for c in chunks] == list(range(len(chunks)))
    assert " ".join(c["text"] for c in chunks).split() == text.split()
    assert all(c["duration"] > 0 for c in chunks)


@pytest.mark.parametrize(
    ("text", "speed"),
    [
        ("lorem ipsum dolor sit amet " * 30, 1.0),  # 810 characters, no punctuation
        ("我们今天去公园散步然后回家吃饭" * 20, 1.0),  # 300 CJK characters, no punctuation, no spaces
        ("a" * 241, 0.3),  # one unbreakable run at the slowest speed
    ],
    ids=["lorem-x30", "cjk-300", "a241-speed0.3"],
)
def test_texts_that_crashed_synthesis_now_synthesize(local_service: WorkerService, text: str, speed: float) -> None:
    [out] = list(local_service.run({"text": text, "speed": speed, "seed": 1, **FAST}))
    assert "error" not in out, out
    assert out["chunks"] > 1 and out["duration"] > 0 and pcm16(out["audio_base64"]).size > 0


@pytest.mark.parametrize("text", ["😀" * 5000, "👨‍👩‍👧‍👦" * 700], ids=["5000-emoji", "700-zwj-families"])
def test_emoji_only_texts_get_a_coded_error(local_service: WorkerService, text: str) -> None:
    error = error_of(list(local_service.run({"text": text, **FAST})))
    assert error.code == ErrorCode.invalid_input and error.field == "text"
    assert "nothing to speak" in error.message


def test_speak_refuses_before_any_audio_and_stops_between_pieces(local_service: WorkerService) -> None:
    """The interface the HTTP mode builds on: errors come from speak() itself; pieces are lazy and cancellable."""
    from worker.schema import ContractError

    cancelled = threading.Event()
    with pytest.raises(ContractError):
        local_service.speak(SynthesizeInput(text="🎉🎉"), cancelled)

    speech = local_service.speak(SynthesizeInput(text=STORY, seed=4, nfe_step=4), cancelled)
    assert (speech.voice, speech.seed, speech.sample_rate, speech.chunks) == ("default", 4, 24000, 0)
    first = next(speech.pieces)
    assert first.index == 0 and first.text == "The lamp was lit at dusk." and first.samples.dtype == np.float32
    cancelled.set()
    with pytest.raises(JobCancelled):
        next(speech.pieces)
    assert speech.chunks == 1 and speech.inference_s > 0
