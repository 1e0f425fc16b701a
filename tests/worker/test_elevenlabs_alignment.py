"""ElevenLabs' character alignment (worker/http_server/elevenlabs_alignment.py) from word timings: exactly the
caller's characters, in order, each timed; words' own spans kept; gaps shared; incremental parts add up to the
whole. The same builder on real aligner output is tested through the routes (tests/worker/test_elevenlabs_api.py)."""

from __future__ import annotations

import itertools

import pytest

from worker.http_server.elevenlabs_alignment import AlignmentBuilder, Alignments, align_characters
from worker.word_timing import WordTiming


def timed(word: str, start: float, end: float) -> WordTiming:
    step = (end - start) / len(word)
    chars = tuple((start + i * step, start + (i + 1) * step) for i in range(len(word)))
    return WordTiming(word, start, end, False, chars)


def words_of(spoken: str, start: float = 0.1, length: float = 0.4, gap: float = 0.1) -> list[WordTiming]:
    placed = []
    for i, word in enumerate(spoken.split()):
        at = start + i * (length + gap)
        placed.append(timed(word, at, at + length))
    return placed


def check_timeline(part: Alignments, text: str, duration: float) -> None:
    alignment = part.alignment
    assert "".join(alignment.characters) == text
    assert len(alignment.starts) == len(alignment.ends) == len(text)
    for start, end in zip(alignment.starts, alignment.ends, strict=True):
        assert 0 <= start <= end <= duration + 1e-9
    assert all(a <= b + 1e-9 for a, b in itertools.pairwise(alignment.starts))


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("Hello there, world!", "Hello there, world!"),
        ("  Hello\n\nthere  ", "Hello there"),
        ('Ready? <break time="1.5s"/> Go!', "Ready? Go!"),
        ("<speak>Hi <s>you</s> there</speak>", "Hi you there"),
        ("Smile 😀 now", "Smile now"),
        ("Café au lait, 42 times.", "Café au lait, 42 times."),
    ],
)
def test_every_character_of_the_callers_text_is_timed_in_order(text, spoken):
    words = words_of(spoken)
    duration = words[-1].end + 0.3
    whole = align_characters(text, words, duration)
    check_timeline(whole, text, duration)
    assert whole.normalized.characters == list(spoken)


def test_a_words_characters_keep_the_aligners_spans_and_gaps_are_shared():
    words = [timed("Hi,", 0.2, 0.5), timed("you", 1.0, 1.3)]
    whole = align_characters("Hi,   you.", words, 2.0)
    a = whole.alignment
    assert a.characters[:3] == ["H", "i", ","] and a.starts[0] == 0.2 and a.ends[2] == pytest.approx(0.5)
    # The three spaces share the pause between the words, 0.5 to 1.0 s.
    assert a.starts[3:6] == pytest.approx([0.5, 0.5 + 0.5 / 3, 0.5 + 1 / 3])
    assert a.ends[5] == pytest.approx(1.0) and a.starts[6] == 1.0
    # The trailing period (not in any word here) runs from the last word's end to the end of the speech.
    assert a.starts[-1] == pytest.approx(1.3) and a.ends[-1] == 2.0
    json = whole.to_json()
    assert json["normalized_alignment"]["characters"] == list("Hi, you")
    assert json["alignment"]["character_start_times_seconds"][4] == 0.667  # milliseconds


def test_a_pause_tag_spans_its_silence():
    text = 'One. <break time="2s"/> Two.'
    words = [timed("One.", 0.0, 0.5), timed("Two.", 2.5, 3.0)]
    a = align_characters(text, words, 3.0).alignment
    tag = text.index("<")
    assert a.starts[tag] > 0.5 and a.ends[tag + 10] < 2.5
    assert a.ends[text.index("/>") + 1] < 2.5 <= a.starts[text.index("Two")]


def test_incremental_parts_add_up_to_the_whole():
    text = "First sentence here. And a second one, longer. Third!"
    words = words_of(text)
    duration = words[-1].end + 0.2
    builder = AlignmentBuilder(text)
    parts = Alignments()
    for piece in (words[:3], [], words[3:7], words[7:]):
        parts.extend(builder.add(piece))
    parts.extend(builder.finish(duration))
    assert parts.to_json() == align_characters(text, words, duration).to_json()
    check_timeline(parts, text, duration)


def test_a_word_missing_from_the_text_costs_no_characters():
    text = "Fish and😀chips today"  # the plan drops emoji: the spoken "andchips" is not in the text as written
    words = [timed("Fish", 0.0, 0.3), timed("andchips", 0.4, 0.9), timed("today", 1.0, 1.4)]
    whole = align_characters(text, words, 1.5)
    check_timeline(whole, text, 1.5)
    assert whole.normalized.characters == list("Fish andchips today")
    a = whole.alignment
    assert a.starts[text.index("today")] == 1.0  # the words after it are still found


def test_overlapping_word_times_never_run_backwards():
    words = [timed("one", 0.0, 0.6), timed("two", 0.5, 0.9)]  # a cross-fade can overlap words
    whole = align_characters("one two", words, 1.0)
    check_timeline(whole, "one two", 1.0)
    assert all(a <= b for a, b in itertools.pairwise(whole.normalized.starts))


def test_the_realtime_form_is_milliseconds_relative_to_the_chunk():
    part = AlignmentBuilder("Hi you").add([timed("Hi", 2.0, 2.2), timed("you", 2.5, 2.8)])
    realtime = part.alignment.to_realtime_json(chunk_start=2.0)
    assert realtime["chars"] == list("Hi you")
    assert realtime["charStartTimesMs"] == [0, 100, 200, 500, 600, 700]
    assert realtime["charDurationsMs"] == [100, 100, 300, 100, 100, 100]
