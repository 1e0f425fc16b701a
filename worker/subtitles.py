"""Subtitles from word timings: words grouped into readable cues, written as SRT or WebVTT (plain functions).

A cue holds at most MAX_CUE_CHARS characters and MAX_CUE_SECONDS seconds. Cues break at sentence ends: a
sentence that fits is one cue (short whole sentences share one); a longer one is cut at its clause marks (, ; :
—) where a cut leaves both sides at least a third of a line, else between words. Every word is in exactly one
cue, in order; a single word over the limits is a cue of its own. Both formats are a few lines per cue, so they
are written here rather than through a library.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import regex

from worker.word_timing import WordTiming

MAX_CUE_CHARS = 42
MAX_CUE_SECONDS = 7.0
_SENTENCE_END = regex.compile(r"[.!?…。！？][\"'”’)\]]*$")
_CLAUSE_END = regex.compile(r"[,;:—–、，；：][\"'”’)\]]*$")


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str


def _fits(words: Sequence[WordTiming]) -> bool:
    return len(" ".join(w.word for w in words)) <= MAX_CUE_CHARS and words[-1].end - words[0].start <= MAX_CUE_SECONDS


def _sentences(words: Sequence[WordTiming]) -> list[list[WordTiming]]:
    sentences: list[list[WordTiming]] = [[]]
    for word in words:
        sentences[-1].append(word)
        if _SENTENCE_END.search(word.word):
            sentences.append([])
    return [s for s in sentences if s]


def _lines(sentence: list[WordTiming]) -> list[list[WordTiming]]:
    """A sentence cut into cues that fit: greedily by words, moving each cut back to the last clause mark when
    that leaves the cue at least a third full."""
    lines: list[list[WordTiming]] = []
    current: list[WordTiming] = []
    for word in sentence:
        if current and not _fits([*current, word]):
            cut = next(
                (
                    i + 1
                    for i in range(len(current) - 1, 0, -1)
                    if _CLAUSE_END.search(current[i].word)
                    and len(" ".join(w.word for w in current[: i + 1])) >= MAX_CUE_CHARS / 3
                ),
                len(current),
            )
            lines.append(current[:cut])
            current = current[cut:]
            if current and not _fits([*current, word]):
                lines.append(current)
                current = []
        current.append(word)
    return [*lines, current] if current else lines


def group_cues(words: Sequence[WordTiming]) -> list[Cue]:
    groups: list[list[WordTiming]] = []
    whole = False  # whether the last group is made of whole sentences
    for sentence in _sentences(words):
        lines = _lines(sentence)
        if len(lines) == 1 and whole and _fits(groups[-1] + lines[0]):
            groups[-1] += lines[0]
            continue
        groups += lines
        whole = len(lines) == 1
    return [Cue(g[0].start, max(g[-1].end, g[0].start), " ".join(w.word for w in g)) for g in groups]


def _timestamp(seconds: float, decimal: str) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def render(words: Sequence[WordTiming], fmt: str) -> str:
    """The subtitle file's text: `fmt` is "srt" or "vtt"."""
    cues = group_cues(words)
    if fmt == "srt":
        blocks = [
            f"{i}\n{_timestamp(c.start, ',')} --> {_timestamp(c.end, ',')}\n{c.text}\n" for i, c in enumerate(cues, 1)
        ]
        return "\n".join(blocks)
    # WebVTT: cue text is HTML-like, so &, < and > are escaped (which also keeps "-->" out of it).
    blocks = [
        f"{_timestamp(c.start, '.')} --> {_timestamp(c.end, '.')}\n"
        + c.text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        + "\n"
        for c in cues
    ]
    return "\n".join(["WEBVTT\n", *blocks])
