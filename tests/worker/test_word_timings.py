"""Word timings and subtitles (issue #17) through the real path: tiny F5 inference, then the real aligner code
(torchaudio's wav2vec 2.0 builder and forced_align) on the tiny random-weight aligner. The times of a random
model are meaningless; order, bounds, completeness, streamed = whole and the estimated marks are not."""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.worker.test_streaming import FAST, STORY, error_of
from worker.aligner import Aligner
from worker.config import ModelSettings, Settings, StorageSettings, WorkerSettings
from worker.engine import Engine
from worker.schema import ErrorCode
from worker.service import WorkerService
from worker.subtitles import MAX_CUE_CHARS, MAX_CUE_SECONDS, group_cues, render
from worker.word_timing import WordTiming, char_letters, split_words, word_letters

pytestmark = pytest.mark.timeout(300)

MIXED = "Hello, world — it's 3 o'clock in Zürich & Tōkyō. 東京 is 40 km away!"


def service_with(engine: Engine, tmp_path: Path, model: ModelSettings) -> WorkerService:
    settings = Settings(
        model=model,
        storage=StorageSettings(_env_file=None),
        worker=WorkerSettings(_env_file=None, data_dir=tmp_path),
    )
    service = WorkerService(settings, engine_factory=lambda: engine)
    service.start()
    return service


@pytest.fixture
def word_service(engine: Engine, tmp_path: Path, make_model_settings: Callable[..., ModelSettings]) -> WorkerService:
    return service_with(engine, tmp_path, make_model_settings(warmup=False))


@pytest.fixture(scope="module")
def aligner(tiny_model_env: dict[str, str]) -> Aligner:
    return Aligner.load(Path(tiny_model_env["F5TTS_ALIGNER_DIR"]), "cpu")


def assert_timeline(words: list[dict], text: str, duration: float) -> None:
    """Every word of the text, in order, each within the audio, none starting before the one before ends."""
    assert [w["word"] for w in words] == split_words(text)
    previous_end = 0.0
    for word in words:
        assert previous_end <= word["start"] <= word["end"] <= duration, (word, duration)
        previous_end = word["end"]


# ------------------------------------------------------------------------------------------------ the rule
def test_normalisation_rule() -> None:
    assert word_letters("Café!") == ["C", "A", "F", "E", ""]
    assert word_letters("it’s") == ["I", "T", "'", "S"]
    assert char_letters("ß") == "SS"
    for unaligned in ("3", "40", "&", "東京", "—", "km²", "AT&T"):
        assert word_letters(unaligned) is None, unaligned


def test_aligner_times_every_word_and_marks_the_unalignable(aligner: Aligner) -> None:
    wave = np.random.default_rng(0).standard_normal(24000 * 4).astype(np.float32) * 0.1
    words = aligner.align(wave, 24000, MIXED)
    assert [w.word for w in words] == split_words(MIXED)
    estimated = {w.word for w in words if w.estimated}
    assert estimated == {"—", "3", "&", "東京", "40"}
    for before, after in itertools.pairwise(words):
        assert 0 <= before.start <= before.end <= after.start <= after.end <= 4.0
    for word in words:  # one span per character, inside the word
        assert len(word.chars) == len(word.word)
        assert all(word.start <= s <= e <= word.end for s, e in word.chars)


def test_a_failed_alignment_estimates_every_word_and_says_why(aligner: Aligner, caplog) -> None:
    wave = np.zeros(2400, dtype=np.float32)  # 0.1 s: five frames cannot hold the letters
    text = "far too many letters for a tenth of a second"
    with caplog.at_level(logging.WARNING, logger="worker.aligner"):
        words = aligner.time_words(wave, 24000, text)
    assert [w.word for w in words] == split_words(text) and all(w.estimated for w in words)
    assert words[0].start == 0.0 and words[-1].end == pytest.approx(0.1)
    assert "cannot hold" in caplog.text


# ------------------------------------------------------------------------------------------------ jobs
@pytest.mark.parametrize("options", [{}, {"remove_silence": True}, {"cross_fade_duration": 0.0}])
def test_whole_and_streamed_words_are_the_same(word_service: WorkerService, options: dict) -> None:
    job = {"text": STORY, "seed": 5, "word_timestamps": True, **FAST, **options}
    [whole] = list(word_service.run(job))
    *chunks, end = list(word_service.run({**job, "stream": True}))

    assert_timeline(whole["words"], STORY, whole["duration"])
    assert len(chunks) >= 3 and "words" not in end
    streamed = [word for chunk in chunks for word in chunk["words"]]
    assert streamed == whole["words"]  # same words, same times
    for chunk in chunks:
        assert [w["word"] for w in chunk["words"]] == split_words(chunk["text"])
    assert not any(w["estimated"] for w in whole["words"])  # plain English: every word aligned


def test_words_and_subtitles_only_when_asked(word_service: WorkerService) -> None:
    [plain] = list(word_service.run({"text": "Just audio.", **FAST}))
    assert "words" not in plain and "subtitles" not in plain
    [subs_only] = list(word_service.run({"text": "Only subtitles.", "subtitle_format": "vtt", **FAST}))
    assert "words" not in subs_only and subs_only["subtitles"].startswith("WEBVTT\n")


def test_subtitles_of_a_job(word_service: WorkerService) -> None:
    job = {"text": STORY, "seed": 2, "word_timestamps": True, "subtitle_format": "srt", **FAST}
    [whole] = list(word_service.run(job))
    *_, end = list(word_service.run({**job, "stream": True}))
    assert end["subtitles"] == whole["subtitles"]

    blocks = whole["subtitles"].strip().split("\n\n")
    cue_texts = []
    for number, block in enumerate(blocks, 1):
        index, times, text = block.split("\n")
        assert index == str(number)
        start, stop = (parse_srt_time(t) for t in times.split(" --> "))
        assert 0 <= start <= stop <= whole["duration"] + 0.001
        assert stop - start <= MAX_CUE_SECONDS
        assert len(text) <= MAX_CUE_CHARS
        cue_texts.append(text)
    assert " ".join(cue_texts).split() == split_words(STORY)  # every word, in order
    assert cue_texts[0] == "The lamp was lit at dusk."  # a sentence that fits is a cue


def parse_srt_time(stamp: str) -> float:
    hours, minutes, seconds, millis = map(int, re.split(r"[:,]", stamp))
    return hours * 3600 + minutes * 60 + seconds + millis / 1000


def test_unknown_subtitle_format_is_invalid_input(word_service: WorkerService) -> None:
    error = error_of(list(word_service.run({"text": "Hi there, friend.", "subtitle_format": "ass"})))
    assert error.code == ErrorCode.invalid_input and error.field == "subtitle_format"


def test_without_an_aligner_the_audio_comes_with_estimated_words(
    engine: Engine, tmp_path: Path, make_model_settings: Callable[..., ModelSettings], caplog
) -> None:
    service = service_with(engine, tmp_path, make_model_settings(warmup=False, aligner_dir=tmp_path / "nowhere"))
    with caplog.at_level(logging.WARNING, logger="worker"):
        [result] = list(service.run({"text": MIXED, "word_timestamps": True, **FAST}))
    assert result["audio_base64"] and result["duration"] > 0
    assert_timeline(result["words"], MIXED, result["duration"])
    assert all(w["estimated"] for w in result["words"])
    assert "aligner" in caplog.text and "nowhere" in caplog.text


def test_the_aligner_loads_at_start_when_configured(
    engine: Engine, tmp_path: Path, make_model_settings: Callable[..., ModelSettings]
) -> None:
    service = service_with(engine, tmp_path, make_model_settings(warmup=False, aligner_preload=True))
    assert service._aligner is not None  # loaded by start(), before any job


# ------------------------------------------------------------------------------------------------ subtitles
def timed(text: str, seconds_per_word: float = 0.3) -> list[WordTiming]:
    return [
        WordTiming(word, i * seconds_per_word, (i + 1) * seconds_per_word, False, ())
        for i, word in enumerate(text.split())
    ]


def test_cues_keep_to_the_limits_and_prefer_sentence_and_clause_ends() -> None:
    text = (
        "Hi. How are you? I walked along the river for a long while, watching the boats go by, "
        "and then I went home. Supercalifragilisticexpialidociouslyextraordinarily long."
    )
    cues = group_cues(timed(text))
    assert " ".join(c.text for c in cues).split() == text.split()
    assert cues[0].text == "Hi. How are you?"  # short whole sentences share a cue
    assert cues[1].text == "I walked along the river for a long while,"  # cut at the clause mark
    for cue in cues:
        assert cue.end - cue.start <= MAX_CUE_SECONDS
        assert len(cue.text) <= MAX_CUE_CHARS or " " not in cue.text  # only a lone long word may exceed
    slow = group_cues(timed("one two three four five six", seconds_per_word=2.0))
    assert [c.text for c in slow] == ["one two three", "four five six"]  # 7 s at most


def test_vtt_escapes_and_srt_numbers() -> None:
    words = timed("Fish & chips <b>now</b>")
    vtt = render(words, "vtt")
    assert vtt == "WEBVTT\n\n00:00:00.000 --> 00:00:01.200\nFish &amp; chips &lt;b&gt;now&lt;/b&gt;\n"
    assert render(words, "srt") == "1\n00:00:00,000 --> 00:00:01,200\nFish & chips <b>now</b>\n"


# ------------------------------------------------------------------------------------------------ http mode
@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_native_post_job_carries_words_and_subtitles(word_service: WorkerService) -> None:
    import httpx

    from worker.config import HttpSettings
    from worker.http_server import create_app

    settings = Settings(
        model=word_service.settings.model,
        storage=word_service.settings.storage,
        worker=word_service.settings.worker,
        http=HttpSettings(_env_file=None),
    )
    app = create_app(word_service, settings, start_service=False)
    job = {"text": STORY, "seed": 4, "word_timestamps": True, "subtitle_format": "srt", **FAST}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://worker") as client:
        whole = (await client.post("/job", json={"input": job})).json()
        streamed = await client.post("/job", json={"input": {**job, "stream": True}})
        bad = await client.post("/job", json={"input": {**job, "subtitle_format": "sub"}})
    assert_timeline(whole["words"], STORY, whole["duration"])
    *chunks, end = [json.loads(line) for line in streamed.text.splitlines()]
    assert [w for c in chunks for w in c["words"]] == whole["words"]
    assert end["subtitles"] == whole["subtitles"] and whole["subtitles"].startswith("1\n00:00:")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_input"
    assert "subtitle_format" in json.dumps(bad.json())


def test_the_cross_fader_says_where_each_wave_starts_on_the_joined_timeline() -> None:
    from worker.crossfade import CrossFader

    fader = CrossFader(1000, 0.1)  # 100-sample fades
    joined = []
    for size in (500, 300, 50):
        joined.append(fader.push(np.ones(size, dtype=np.float32)))
        start = fader.wave_start
        assert start == {500: 0, 300: 400, 50: 650}[size]  # each overlaps the last by min(fade, its size)
    joined.append(fader.finish())
    assert sum(part.size for part in joined) == 700 == start + 50  # the last wave ends where the audio ends
