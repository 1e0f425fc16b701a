"""Pauses the text asks for (issue #23): `<break>` tags, blank lines between paragraphs and SSML texts
(worker.markup), planned as chunk boundaries (worker.chunk_plan) and delivered as digital silence of their length
on the timeline of the result, the stream and the word timings, through the real f5-tts inference on the tiny
checkpoint in both serving modes (the service the queue handler runs, and the http server's app)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence

import numpy as np
import pytest
import soundfile as sf

from tests.worker.helpers import make_service
from tests.worker.test_chunk_plan import DEFAULT_VOICE, DIT_MAX_FRAMES
from tests.worker.test_http_server import app_client, assert_openai_error
from worker.chunk_plan import PlannedChunk, plan_speech
from worker.config import StorageSettings
from worker.engine import ChunkRequest, Engine
from worker.markup import BREAK_STRENGTHS, MAX_BREAK_SECONDS, PARAGRAPH_SECONDS, MarkupError, parse
from worker.schema import ContractError, ErrorBody, ErrorCode
from worker.service import WorkerService

pytestmark = pytest.mark.timeout(300)

RATE = 24000
TOLERANCE_S = 0.02
FAST = {"nfe_step": 4, "delivery": "base64", "format": "wav", "seed": 4}
# Three passages: a 700 ms break, a paragraph, and a strong break at the very end.
PAUSED = 'First part here.<break time="700ms"/>Second part now.\n\nThird part at last. <break strength="strong" />'
PAUSES_S = [0.7, PARAGRAPH_SECONDS, BREAK_STRENGTHS["strong"]]


# ------------------------------------------------------------------------------------------------ markup
@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ('One <break time="1.5s"/> two', ["One ", 1.5, " two"]),
        ("One<break time='250ms'></break>two", ["One", 0.25, "two"]),
        ("One <BREAK/> two", ["One ", BREAK_STRENGTHS["medium"], " two"]),
        ('One <break strength="x-strong"/><break time="2s"/> two', ["One ", 3.0, " two"]),  # adjacent: added
        ('One <break strength="none"/>two', ["One two"]),  # no pause, no boundary
        ('<break time="1s"/>Hi.', [1.0, "Hi."]),
        ("Para one.\n\nPara two.\nSame para.", ["Para one.", PARAGRAPH_SECONDS, "Para two.\nSame para."]),
        ("\n\nEdges are no pause.\n \n", ["Edges are no pause."]),
        ("Tom & Jerry < 3 cats > 2 dogs <b>", ["Tom & Jerry < 3 cats > 2 dogs <b>"]),  # plain text stays text
        ("My <breakfast> is <break-dance>.", ["My <breakfast> is <break-dance>."]),
        (
            '<speak>Tom &amp; <emphasis level="strong">Jerry</emphasis>.<break time="400ms"/>Done.</speak>',
            ["Tom & Jerry.", 0.4, "Done."],
        ),
        (
            "<speak><p>One.</p>\n\n<p><s>Two</s><s>Three</s></p></speak>",
            ["One.", PARAGRAPH_SECONDS, "\nTwo\n\nThree\n"],
        ),
        ('<?xml version="1.0"?><speak>One.<break time="300ms"/>Two.</speak>', ["One.", 0.3, "Two."]),
        (
            ' <?xml version="1.0" encoding="UTF-8"?>\n<speak version="1.1" xmlns="http://www.w3.org/2001/10/synthesis">'
            'Tom &amp; Jerry.<break strength="weak"/>Done.</speak>',
            ["Tom & Jerry.", BREAK_STRENGTHS["weak"], "Done."],
        ),
    ],
)
def test_texts_read_as_speech_and_silences(text: str, segments: list) -> None:
    assert parse(text) == segments


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('Wait <break time="5.5s"/> done', f"at most {MAX_BREAK_SECONDS:g} s"),
        ('Wait <break time="5001ms"/> done', f"at most {MAX_BREAK_SECONDS:g} s"),
        ("Wait <break time=5s/> done", "malformed <break>"),
        ('Wait <break time="5s" done', "malformed <break>"),
        ("Wait <break", "malformed <break>"),
        ('Wait <break time="soon"/>', "not a time"),
        ('Wait <break time="-1s"/>', "not a time"),
        ('Wait <break strength="huge"/>', "not one of none, x-weak"),
        ('Wait <break pause="1s"/>', "only `time` and `strength`"),
        ("<speak>Unclosed <emphasis>tag</speak>", "not well-formed"),
        ("<speak>One</speak> and after", "not well-formed"),
        ('<?xml version="1.0"?><speak>Unclosed <emphasis>tag</speak>', "not well-formed"),
        ('<speak><!DOCTYPE x [<!ENTITY a "aaaa">]>&a;</speak>', "no <!DOCTYPE>"),
        ('<speak>Long <break time="9s"/></speak>', f"at most {MAX_BREAK_SECONDS:g} s"),
        ('Many <break time="5s"/>' * 25, "add up to 125 s"),
    ],
)
def test_bad_markup_says_what_to_fix(text: str, says: str) -> None:
    with pytest.raises(MarkupError, match=None) as raised:
        parse(text)
    assert says in str(raised.value)


# ------------------------------------------------------------------------------------------------ the plan
def test_every_pause_is_a_chunk_boundary_and_only_the_speech_opens_short() -> None:
    long_passage = " ".join(["The keeper climbed the stairs and lit the lamp before the sun went down."] * 6)
    planned = plan_speech(
        f'<break time="1s"/>Hello there, my good friend. {long_passage}\n\n{long_passage}',
        DEFAULT_VOICE,
        1,
        DIT_MAX_FRAMES,
    )
    assert planned[0] == PlannedChunk("Hello there, my good friend.", pause_before=1.0)
    pauses = [chunk.pause_after for chunk in planned]
    boundary = pauses.index(PARAGRAPH_SECONDS)
    assert pauses.count(PARAGRAPH_SECONDS) == 1 and sum(pauses) == PARAGRAPH_SECONDS
    assert " ".join(c.text for c in planned[: boundary + 1]).endswith("sun went down.")
    # The passage after the pause is packed to F5's budget from its start: no short opening chunk there.
    assert len(planned[boundary + 1].text) > len(planned[0].text) * 3


def test_a_text_of_pauses_and_emoji_has_nothing_to_speak() -> None:
    with pytest.raises(ContractError) as raised:
        plan_speech('<break time="1s"/>\n\n🎉<break/>', DEFAULT_VOICE, 1, DIT_MAX_FRAMES)
    assert raised.value.code == ErrorCode.invalid_input and raised.value.body.field == "text"


# ------------------------------------------------------------------------------------------------ the audio
def pcm16(encoded: str | bytes) -> np.ndarray:
    data = base64.b64decode(encoded) if isinstance(encoded, str) else encoded
    samples, _ = sf.read(io.BytesIO(data), dtype="int16")
    return samples


def silences(samples: np.ndarray, at_least_s: float = 0.05) -> list[tuple[float, float]]:
    """(start, length) in seconds of each run of digital silence (exact zeros) of at least `at_least_s`."""
    zero = np.concatenate([[False], samples == 0, [False]])
    edges = np.flatnonzero(np.diff(zero.astype(np.int8)))
    runs = [(start, end - start) for start, end in zip(edges[::2], edges[1::2], strict=True)]
    return [(start / RATE, length / RATE) for start, length in runs if length >= at_least_s * RATE]


def assert_pauses(samples: np.ndarray, expected_s: list[float]) -> list[tuple[float, float]]:
    found = silences(samples)
    assert [length for _, length in found] == pytest.approx(expected_s, abs=TOLERANCE_S), found
    return found


def test_breaks_are_silence_of_their_length_streamed_and_whole(local_service: WorkerService) -> None:
    [whole] = list(local_service.run({"text": PAUSED, **FAST}))
    *pieces, end = list(local_service.run({"text": PAUSED, "stream": True, **FAST}))

    samples = pcm16(whole["audio_base64"])
    assert_pauses(samples, PAUSES_S)
    assert np.abs(samples).max() > 300  # speech around the silences
    assert whole["duration"] == end["duration"] == pytest.approx(samples.size / RATE, abs=1e-3)
    # A pause comes with the chunk before it, as soon as that chunk is known: three passages, three pieces, each
    # ending in its silence.
    assert [p["text"] for p in pieces] == ["First part here.", "Second part now.", "Third part at last."]
    for piece, pause in zip(pieces, PAUSES_S, strict=True):
        [(start, length)] = silences(pcm16(piece["audio_base64"]))
        assert length == pytest.approx(pause, abs=TOLERANCE_S)
        assert start + length == pytest.approx(piece["duration"], abs=1e-3)
    assert np.array_equal(np.concatenate([pcm16(p["audio_base64"]) for p in pieces]), samples)


def test_pauses_stand_between_chunks_sampled_in_one_call(engine: Engine, tmp_path, monkeypatch) -> None:
    """With batching on (F5TTS_MAX_BATCH 4): the passages after the first are sampled in one model call, and each
    pause is still silence of its length, the stream still the whole result sample for sample."""
    service = make_service(engine, StorageSettings(_env_file=None), tmp_path, max_batch=4, batch_wait_ms=50.0)
    sizes: list[int] = []
    real = engine.sample

    def counted(requests: Sequence[ChunkRequest]) -> list[np.ndarray]:
        sizes.append(len(requests))
        return real(requests)

    monkeypatch.setattr(engine, "sample", counted)
    [whole] = list(service.run({"text": PAUSED, **FAST}))
    *pieces, end = list(service.run({"text": PAUSED, "stream": True, **FAST}))
    assert sizes == [1, 2, 1, 2]  # per job: the first chunk alone, then the two passages after it together
    samples = pcm16(whole["audio_base64"])
    assert_pauses(samples, PAUSES_S)
    assert whole["duration"] == end["duration"] == pytest.approx(samples.size / RATE, abs=1e-3)
    for piece, pause in zip(pieces, PAUSES_S, strict=True):
        [(start, length)] = silences(pcm16(piece["audio_base64"]))
        assert length == pytest.approx(pause, abs=TOLERANCE_S)
        assert start + length == pytest.approx(piece["duration"], abs=1e-3)  # each piece ends in its pause
    assert np.array_equal(np.concatenate([pcm16(p["audio_base64"]) for p in pieces]), samples)


def test_a_leading_break_and_cross_fades_elsewhere(local_service: WorkerService) -> None:
    """A break before the speech is silence at its start; a long passage's own chunks still cross-fade (the
    pause replaces the fade only where it stands), and remove_silence does not remove asked-for pauses."""
    story = (
        "The lamp was lit at dusk. He polished the great lens until it shone, then lit the lamp and watched "
        "the beam sweep across the water. Ships passing in the night would see the light and know."
    )
    text = f'<break time="300ms"/>{story}<break time="1.2s"/>The end.'
    [whole] = list(local_service.run({"text": text, "remove_silence": True, **FAST}))
    *pieces, end = list(local_service.run({"text": text, "stream": True, "remove_silence": True, **FAST}))
    samples = pcm16(whole["audio_base64"])
    found = assert_pauses(samples, [0.3, 1.2])
    assert found[0][0] == 0.0
    assert len(pieces) == end["chunks"] == whole["chunks"] >= 3
    assert np.array_equal(np.concatenate([pcm16(p["audio_base64"]) for p in pieces]), samples)


def test_word_timings_stand_after_the_silence(local_service: WorkerService) -> None:
    [whole] = list(local_service.run({"text": PAUSED, "word_timestamps": True, **FAST}))
    silent = silences(pcm16(whole["audio_base64"]))
    words = {w["word"]: w for w in whole["words"]}
    for before, after, (start, length) in zip(
        ["here.", "now.", "last."], ["Second", "Third", None], silent, strict=True
    ):
        assert words[before]["end"] <= start + TOLERANCE_S  # spoken before the silence ...
        if after is not None:
            assert words[after]["start"] >= start + length - TOLERANCE_S  # ... and the next passage after it


@pytest.mark.parametrize(
    ("text", "says"),
    [('Too long <break time="6s"/>', "at most 5 s"), ("Unclosed <break time", "malformed <break>")],
)
def test_bad_tags_get_invalid_input_naming_the_text(local_service: WorkerService, text: str, says: str) -> None:
    for job in ({"text": text, **FAST}, {"text": text, "stream": True, **FAST}):
        [item] = list(local_service.run(job))
        error = ErrorBody.model_validate_json(item["error"])
        assert error.code == ErrorCode.invalid_input and error.field == "text" and says in error.message


# ------------------------------------------------------------------------------------------------ http mode
@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_http_routes_deliver_the_pauses_streamed_and_whole(local_service: WorkerService) -> None:
    body = {"model": "tts-1", "input": PAUSED, "voice": "default", "seed": 4, "nfe_step": 4, "response_format": "wav"}
    job = {"text": PAUSED, **FAST}
    async with app_client(local_service, local_service.settings) as client:
        speech = await client.post("/v1/audio/speech", json=body)
        native = await client.post("/job", json={"input": job})
        streamed = await client.post("/job", json={"input": {**job, "stream": True}})
        bad = await client.post("/v1/audio/speech", json={**body, "input": 'Hi <break time="7s"/>'})
        bad_job = await client.post("/job", json={"input": {**job, "text": "Hi <break"}})
    assert speech.status_code == native.status_code == streamed.status_code == 200, speech.text
    # The OpenAI route streams its wav as it is generated (a header of unknown length): read the samples raw.
    speech_samples = np.frombuffer(speech.content[44:], dtype="<i2")
    assert_pauses(speech_samples, PAUSES_S)
    whole = pcm16(native.json()["audio_base64"])
    assert_pauses(whole, PAUSES_S)
    items = [json.loads(line) for line in streamed.text.splitlines()]
    joined = np.concatenate([pcm16(i["audio_base64"]) for i in items if i["type"] == "chunk"])
    assert np.array_equal(joined, whole)
    # The same audio on the OpenAI route; its streaming encoder rounds to 16 bits its own way (one step apart).
    assert speech_samples.size == whole.size and np.abs(speech_samples.astype(int) - whole).max() <= 1
    error = assert_openai_error(bad, 400, "invalid_input", "input")
    assert "at most 5 s" in error["message"]
    assert_openai_error(bad_job, 400, "invalid_input", "text")
