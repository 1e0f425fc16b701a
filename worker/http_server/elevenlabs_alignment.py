"""ElevenLabs' character alignment, from the word aligner's timings (worker/word_timing.py's `WordTiming`).

ElevenLabs answers `with-timestamps` requests with two alignments, each three parallel lists (`characters`,
`character_start_times_seconds`, `character_end_times_seconds`):

- `alignment`: exactly the characters of the caller's text, in order, every one of them: a timed word's
  characters get their own spans (the aligner's letters; punctuation a zero-length span where it sits), and the
  characters between words (spaces, newlines, `<break>` tags, emoji the model does not speak) share the gap
  between the words around them, so a pause's tag spans its silence;
- `normalized_alignment`: the text as it was spoken: the timed words joined by single spaces, each space spanning
  the gap between its words.

`AlignmentBuilder` is incremental, for streams: `add` takes the next words (a piece's, in order, on the whole
speech's timeline) and returns the alignment of the characters they complete; `finish` returns the characters
left after the last word. Concatenated, the parts are the whole speech's alignment. The REST routes give them in
seconds on the whole speech's timeline (`to_json`); the realtime WebSocket protocol in milliseconds relative to
each audio chunk (`to_realtime_json`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from worker.word_timing import WordTiming

DECIMALS = 3  # milliseconds: what ElevenLabs gives


@dataclass
class CharacterAlignment:
    """Characters and when each is spoken, in seconds: ElevenLabs' `CharacterAlignmentResponseModel`."""

    characters: list[str] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)

    def append(self, character: str, start: float, end: float) -> None:
        self.characters.append(character)
        self.starts.append(start)
        self.ends.append(end)

    def spread(self, text: str, start: float, end: float) -> None:
        """`text`'s characters, sharing [start, end] equally."""
        step = (end - start) / len(text) if text else 0.0
        for i, character in enumerate(text):
            self.append(character, start + i * step, start + (i + 1) * step)

    def extend(self, other: CharacterAlignment) -> None:
        self.characters += other.characters
        self.starts += other.starts
        self.ends += other.ends

    def to_json(self) -> dict[str, Any]:
        return {
            "characters": list(self.characters),
            "character_start_times_seconds": [round(t, DECIMALS) for t in self.starts],
            "character_end_times_seconds": [round(t, DECIMALS) for t in self.ends],
        }

    def to_realtime_json(self, chunk_start: float) -> dict[str, Any]:
        """The realtime (WebSocket) protocol's form: whole milliseconds, relative to the audio chunk that starts
        `chunk_start` seconds into the speech, as durations rather than end times."""
        starts = [max(round((t - chunk_start) * 1000), 0) for t in self.starts]
        ends = [max(round((t - chunk_start) * 1000), 0) for t in self.ends]
        return {
            "chars": list(self.characters),
            "charStartTimesMs": starts,
            "charDurationsMs": [max(end - start, 0) for start, end in zip(starts, ends, strict=True)],
        }


@dataclass
class Alignments:
    """One part of a speech's alignments: of the caller's text, and of the text as spoken."""

    alignment: CharacterAlignment = field(default_factory=CharacterAlignment)
    normalized: CharacterAlignment = field(default_factory=CharacterAlignment)

    def extend(self, other: Alignments) -> None:
        self.alignment.extend(other.alignment)
        self.normalized.extend(other.normalized)

    def to_json(self) -> dict[str, Any]:
        """The two keys ElevenLabs' with-timestamps responses carry."""
        return {"alignment": self.alignment.to_json(), "normalized_alignment": self.normalized.to_json()}


class AlignmentBuilder:
    """Aligns exactly the characters of `text` from the speech's word timings, words given in order."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._position = 0  # the caller's text up to here is aligned
        self._time = 0.0  # ... and spoken by this time
        self._words = 0  # words spoken so far (for the normalized text's spaces)

    def add(self, words: Sequence[WordTiming]) -> Alignments:
        """The alignment of the text up to the end of the last of `words` (the characters before each word
        included), and of the spoken words."""
        part = Alignments()
        for word in words:
            start = max(word.start, self._time)
            if self._words:
                part.normalized.append(" ", self._time, start)
            self._words += 1
            for character, (s, e) in zip(word.word, word.chars, strict=True):
                part.normalized.append(character, max(s, self._time), max(e, self._time))
            # Words are whitespace-separated pieces of the spoken text, which is the caller's text less its
            # markup (and emoji): each is found in the caller's text, in order. One that is not (a word made of
            # a tag's text in SSML) has no characters of its own there; the text around it is spread over time.
            at = self._text.find(word.word, self._position)
            if at >= 0:
                part.alignment.spread(self._text[self._position : at], self._time, start)
                for character, (s, e) in zip(word.word, word.chars, strict=True):
                    part.alignment.append(character, max(s, self._time), max(e, self._time))
                self._position = at + len(word.word)
            self._time = max(self._time, word.end)
        return part

    def finish(self, duration: float) -> Alignments:
        """The characters after the last word, over the rest of the speech (`duration` seconds in all)."""
        part = Alignments()
        part.alignment.spread(self._text[self._position :], self._time, max(duration, self._time))
        self._position = len(self._text)
        return part


def align_characters(text: str, words: Sequence[WordTiming], duration: float) -> Alignments:
    """The whole speech's alignments: every character of `text`, from its words and its duration."""
    builder = AlignmentBuilder(text)
    whole = builder.add(words)
    whole.extend(builder.finish(duration))
    return whole
