"""The chunk plan (worker.chunk_plan) and the cross-fade (worker.crossfade): pure functions, no model."""

from __future__ import annotations

import unicodedata

import pytest
import regex

from worker.chunk_plan import (
    MIN_CHUNK_BYTES,
    Voice,
    chunk_frames,
    f5_budget,
    nbytes,
    plan_chunks,
)
from worker.schema import ContractError, ErrorCode

# f5-tts's example reference: its transcript as F5 gets it, and its length.
DEFAULT_VOICE = Voice("Some call me nature, others call me mother nature. ", 5.33)
DIT_MAX_FRAMES = 8192  # F5's DiT text embedding (f5_tts/model/backbones/dit.py precompute_max_pos)

FIVE_SENTENCES = (
    "The old lighthouse keeper climbed the spiral stairs every evening, long before the sun touched the sea. "
    "He polished the great lens until it shone, then lit the lamp and watched the beam sweep across the water. "
    "Ships passing in the night would see the light and know that the rocks were near. "
    "Some of the sailors waved, though they knew he could not see them from so far away. "
    "When the morning came, he put out the lamp, wrote a line in his logbook, and went down to sleep."
)


def plan(text: str, speed: float = 1.0, voice: Voice = DEFAULT_VOICE) -> list[str]:
    return plan_chunks(text, voice, speed, DIT_MAX_FRAMES)


def graphemes(text: str) -> list[str]:
    return regex.findall(r"\X", text)


def assert_fits(chunks: list[str], speed: float = 1.0, voice: Voice = DEFAULT_VOICE) -> None:
    for chunk in chunks:
        assert chunk and chunk == chunk.strip()
        assert chunk_frames(chunk, voice, speed) <= DIT_MAX_FRAMES


def test_first_chunk_of_a_multi_sentence_text_is_its_first_sentence() -> None:
    text = "The lamp was lit at dusk. " + FIVE_SENTENCES
    chunks = plan(text)
    assert chunks[0] == "The lamp was lit at dusk."
    assert len(chunks) > 2
    assert " ".join(chunks).split() == text.split()  # nothing lost, nothing reordered
    assert_fits(chunks)


def test_a_long_first_sentence_opens_with_its_first_clause() -> None:
    chunks = plan("Every evening at dusk, the old keeper climbed the spiral stairs to the lamp room. " + FIVE_SENTENCES)
    assert chunks[0] == "Every evening at dusk,"
    assert chunks[1].startswith("the old keeper climbed the spiral stairs to the lamp room.")


def test_a_long_first_clause_opens_with_its_first_words_and_later_chunks_grow_to_the_budget() -> None:
    chunks = plan(FIVE_SENTENCES)
    assert chunks[0] == "The old lighthouse keeper"  # its first clause (66 characters) would delay the first sound
    assert nbytes(chunks[0]) >= MIN_CHUNK_BYTES
    budget = f5_budget(DEFAULT_VOICE, 1.0)
    assert all(nbytes(c) <= budget for c in chunks)
    assert max(nbytes(c) for c in chunks[1:]) > budget * 0.6  # later chunks are packed, not sentence by sentence
    assert " ".join(chunks).split() == FIVE_SENTENCES.split()


def test_a_first_sentence_below_the_floor_takes_the_next_one_along() -> None:
    chunks = plan("Hi. How are you doing today? " + FIVE_SENTENCES)
    assert chunks[0] == "Hi. How are you doing today?"
    assert nbytes(chunks[0]) >= MIN_CHUNK_BYTES


def test_very_short_texts_are_one_chunk() -> None:
    assert plan("Hi.") == ["Hi."]
    assert plan("  Hello  ") == ["Hello"]


def test_a_text_that_fits_one_chunk_is_not_split() -> None:
    # Splitting would cost a whole job one more pass over the reference for a small gain in time to first audio.
    text = "The quick brown fox jumps over the lazy dog, and then it runs far away into the quiet green hills."
    assert nbytes(text) <= f5_budget(DEFAULT_VOICE, 1.0)
    assert plan(text) == [text]


def test_a_short_last_sentence_rides_with_the_chunk_before() -> None:
    chunks = plan(FIVE_SENTENCES + " Yes.")
    assert chunks[-1].endswith("went down to sleep. Yes.")


@pytest.mark.parametrize(
    "text",
    [
        " ".join(["word"] * 1000),  # 5,000 chars of words, no punctuation (issue #13)
        "lorem ipsum dolor sit amet " * 30,  # 810 chars, one unpunctuated sentence
        "\n".join(["a line of a song without any punctuation at all"] * 40),  # lyrics: lines are sentences
    ],
)
def test_unpunctuated_text_splits_at_words_within_the_budget(text: str) -> None:
    chunks = plan(text)
    assert len(chunks) > 1
    # within the budget; the last may carry a short tail over it (see test_a_short_last_sentence_rides...)
    assert all(nbytes(c) <= f5_budget(DEFAULT_VOICE, 1.0) for c in chunks[:-1])
    assert nbytes(chunks[-1]) <= f5_budget(DEFAULT_VOICE, 1.0) + MIN_CHUNK_BYTES
    assert " ".join(chunks).split() == text.split()
    assert_fits(chunks)


def test_clause_marks_come_before_words() -> None:
    sentence = ", ".join(["the sailors waved from the deck of the ship"] * 8) + "."
    chunks = plan("Hello there, friend of mine. " + sentence)
    assert all(c.endswith((",", ".")) for c in chunks[1:])  # every later chunk ends at a clause mark


def test_cjk_without_punctuation_splits_between_characters() -> None:
    text = "我们今天去公园散步然后回家吃饭" * 20  # 300 CJK characters, no punctuation, no spaces
    chunks = plan(text)
    assert len(chunks) > 1 and "".join(chunks) == text  # no space inserted between CJK characters
    assert_fits(chunks)


def test_no_chunk_splits_a_grapheme_cluster() -> None:
    decomposed = unicodedata.normalize("NFD", "é") * 200  # e + combining acute, 200 times, no spaces
    thai = "สวัสดีครับ" * 40
    for text in (decomposed, thai):
        chunks = plan(text)
        assert len(chunks) > 1 and "".join(chunks) == text
        assert [g for c in chunks for g in graphemes(c)] == graphemes(text)


def test_emoji_are_not_spoken() -> None:
    assert plan("Good morning 👋🏽, sunshine ☀️! 🇫🇷 is lovely 👨‍👩‍👧‍👦.") == ["Good morning, sunshine! is lovely."]


@pytest.mark.parametrize("text", ["😀" * 5000, "👨‍👩‍👧‍👦" * 700, " \n\t "])
def test_a_text_of_emoji_only_is_refused_with_a_coded_error(text: str) -> None:
    with pytest.raises(ContractError) as caught:
        plan(text)
    assert caught.value.code == ErrorCode.invalid_input and caught.value.body.field == "text"
    assert "nothing to speak" in caught.value.body.message


def test_a_long_run_at_the_slowest_speed_fits_the_model() -> None:
    text = "a" * 241  # issue #13: one 241-byte chunk at speed 0.3 needed 8211 frames, over the DiT's 8192
    assert chunk_frames(text, DEFAULT_VOICE, 0.3) > DIT_MAX_FRAMES
    chunks = plan(text, speed=0.3)
    assert len(chunks) > 1 and "".join(chunks) == text
    assert_fits(chunks, speed=0.3)


def test_a_reference_that_leaves_no_room_gets_a_coded_error_naming_speed() -> None:
    # 12 s of reference for a four-letter transcript: F5 gives each byte ~0.7 s at speed 0.3, so no chunk the
    # size F5 accepts (10 bytes and up) fits 87 s. At speed 1 the same reference works.
    sparse = Voice("Hi. ", 12.0)
    with pytest.raises(ContractError) as caught:
        plan("a few words to speak here", speed=0.3, voice=sparse)
    assert caught.value.code == ErrorCode.invalid_input and caught.value.body.field == "speed"
    assert "raise speed" in caught.value.body.message
    chunks = plan("a few words to speak here", speed=1.0, voice=sparse)
    assert_fits(chunks, voice=sparse)


def test_an_unsplittable_cluster_over_the_limit_gets_a_coded_error() -> None:
    zalgo = "a" + "\u0301" * 2000  # one grapheme cluster of 4,001 bytes
    with pytest.raises(ContractError) as caught:
        plan(zalgo, speed=0.3)
    assert caught.value.code == ErrorCode.invalid_input and caught.value.body.field == "speed"
