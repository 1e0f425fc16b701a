"""Word timings without torch: which letters of a word the aligner can time, estimates for the rest, and the
placing of a chunk's words on the delivered audio's timeline.

The rule for characters outside the aligner's alphabet (upper-case English letters and the apostrophe):
- A word is its whitespace-separated piece of the text, punctuation included ("Hello," is one word).
- Its letters are normalised first: Unicode NFKD, accents stripped, upper-cased ("café" -> "CAFE", curly
  apostrophes become "'"). Punctuation is silent and ignored.
- A word with anything else in it (a digit, a symbol such as & % $ @ # + =, a letter of another script) or with
  no letter at all is not aligned: it is timed in proportion to its length between its aligned neighbours (the
  chunk's edges where it has none) and marked `estimated`. So is every word of a chunk whose alignment failed.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace

# The aligner's alphabet, without its word separator: what a word must consist of (after normalisation) to be aligned.
ALIGNABLE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ'")
_APOSTROPHES = {"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"}
# Punctuation that is read out ("and", "percent", "at"...): a word holding one is estimated, not aligned.
_SPOKEN_PUNCTUATION = frozenset("&%@#§/\\")


@dataclass(frozen=True)
class WordTiming:
    """One word of the text and when it is spoken, in seconds; `chars` holds (start, end) for each character of
    `word` (punctuation gets a zero-length span where it sits), for callers that time characters."""

    word: str
    start: float
    end: float
    estimated: bool
    chars: tuple[tuple[float, float], ...]

    def shifted(self, offset: float, floor: float) -> WordTiming:
        """The same word `offset` seconds later, no time of it before `floor`."""

        def place(t: float) -> float:
            return max(t + offset, floor)

        return replace(
            self,
            start=place(self.start),
            end=place(self.end),
            chars=tuple((place(s), place(e)) for s, e in self.chars),
        )


def split_words(text: str) -> list[str]:
    return text.split()


def char_letters(char: str) -> str | None:
    """The aligner letters `char` is read as ("" for silent punctuation), or None if it cannot be aligned."""
    char = _APOSTROPHES.get(char, char)
    decomposed = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c)).upper()
    if decomposed and all(c in ALIGNABLE for c in decomposed):
        return decomposed
    if unicodedata.category(char).startswith("P") and char not in _SPOKEN_PUNCTUATION:
        return ""
    return None


def word_letters(word: str) -> list[str] | None:
    """Per character of `word`, the letters the aligner times it by; None when the word is not aligned (a
    character outside the alphabet, or no letter at all)."""
    letters = [char_letters(c) for c in word]
    if any(part is None for part in letters) or not any(letters):
        return None
    return [part or "" for part in letters]


def spoken_length(word: str) -> int:
    """The weight of a word in a proportional estimate: its characters that are not silent punctuation."""
    return sum(1 for c in word if char_letters(c) != "")


def timed_from_letters(word: str, letter_spans: Sequence[tuple[float, float]]) -> WordTiming:
    """An aligned word from the spans of its letters (in the order `word_letters` gives them)."""
    spans = iter(letter_spans)
    chars: list[tuple[float, float]] = []
    last_end = letter_spans[0][0]
    for part in word_letters(word) or []:
        own = [next(spans) for _ in part]
        span = (own[0][0], own[-1][1]) if own else (last_end, last_end)
        chars.append(span)
        last_end = span[1]
    return WordTiming(word, letter_spans[0][0], letter_spans[-1][1], False, tuple(chars))


def _estimated(word: str, start: float, end: float) -> WordTiming:
    step = (end - start) / max(len(word), 1)
    chars = tuple((start + i * step, start + (i + 1) * step) for i in range(len(word)))
    return WordTiming(word, start, end, True, chars)


def fill_estimates(words: Sequence[str], aligned: Sequence[WordTiming | None], duration: float) -> list[WordTiming]:
    """Every word timed: the aligned ones as they are, each run of the others spread over the gap between its
    aligned neighbours (0 and `duration` at the edges) in proportion to `spoken_length`."""
    timed: list[WordTiming] = []
    i = 0
    while i < len(words):
        if (word := aligned[i]) is not None:
            timed.append(word)
            i += 1
            continue
        j = i
        while j < len(words) and aligned[j] is None:
            j += 1
        gap_start = timed[-1].end if timed else 0.0
        following = aligned[j] if j < len(words) else None
        gap_end = max(following.start if following is not None else duration, gap_start)
        weights = [spoken_length(w) for w in words[i:j]]
        per_unit = (gap_end - gap_start) / sum(weights) if sum(weights) else 0.0
        at = gap_start
        for word_text, weight in zip(words[i:j], weights, strict=True):
            timed.append(_estimated(word_text, at, at + weight * per_unit))
            at += weight * per_unit
        i = j
    return timed


def estimate_all(text: str, duration: float) -> list[WordTiming]:
    """Every word of `text` estimated over [0, duration]: what a chunk gets when its alignment fails."""
    words = split_words(text)
    return fill_estimates(words, [None] * len(words), duration)


class WordTimeline:
    """Places each chunk's words on the delivered audio's timeline, chunk after chunk: shifted by where the
    chunk's audio starts there (the one place that offset is applied), never starting before the words
    already placed end (neighbouring chunks overlap by their cross-fade)."""

    def __init__(self) -> None:
        self._end = 0.0

    def place(self, words: Sequence[WordTiming], start_s: float) -> list[WordTiming]:
        placed = []
        for word in words:
            word = word.shifted(start_s, self._end)
            placed.append(word)
            self._end = word.end
        return placed
