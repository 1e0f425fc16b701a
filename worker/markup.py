"""Pauses in the text: `<break>` tags, blank lines between paragraphs, and texts written as SSML.

`parse(text)` turns a synthesis text into what is spoken and the silences between, in order: strings, and
floats (seconds of silence). The rules:

- `<break time="1.5s"/>` or `<break time="300ms"/>` is that much silence; `<break strength="..."/>` is one of
  BREAK_STRENGTHS' fixed lengths; a bare `<break/>` is `medium`. Each break is at most MAX_BREAK_SECONDS, and all
  pauses of a text together at most MAX_TOTAL_PAUSE_SECONDS (a hostile text of 5 s breaks cannot ask for
  hours of audio).
- A blank line between two paragraphs is PARAGRAPH_SECONDS of silence; a single newline is not a pause (it ends
  a sentence, as before).
- A text that starts with `<speak>` (after an XML declaration, if any) is SSML: `<break>` as above, `<p>`
  paragraphs PARAGRAPH_SECONDS apart, `<s>` sentences; every other tag is dropped and its text kept. Its
  whitespace is XML's: blank lines are not pauses.
- Outside SSML only `<break` is markup: any other `<`, `>` or `&` is text and is spoken as before.

A malformed break (unclosed, an unknown attribute, a bad time or strength, too long) or SSML that is not
well-formed raises MarkupError, whose message says what to fix; the contract turns it into `invalid_input` on the
text field. Adjacent pauses add up, and zero-length ones (`strength="none"`) vanish.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

MAX_BREAK_SECONDS = 5.0
MAX_TOTAL_PAUSE_SECONDS = 120.0
PARAGRAPH_SECONDS = 0.6
# SSML leaves the lengths to the engine; these follow the order of SSML's scale, `medium` about a breath.
BREAK_STRENGTHS = {
    "none": 0.0,
    "x-weak": 0.1,
    "weak": 0.25,
    "medium": 0.5,
    "strong": 0.75,
    "x-strong": 1.0,
}

Segment = str | float
# What the readers produce: text, seconds of silence, or None for a paragraph boundary (a pause only between two
# spoken paragraphs, never at the start or end, however many boundaries meet).
_Item = str | float | None

_BREAK_START = re.compile(r"<break(?=[\s/>]|$)", re.IGNORECASE)
_ATTRIBUTE = r"""\s+([A-Za-z_:][\w:.-]*)\s*=\s*(?:"([^"<]*)"|'([^'<]*)')"""
_BREAK_TAG = re.compile(rf"<break((?:{_ATTRIBUTE})*)\s*/?>(?:\s*</break\s*>)?", re.IGNORECASE)
_ATTRIBUTES = re.compile(_ATTRIBUTE)
_TIME = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)\s*", re.IGNORECASE)
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")
# SSML files often open with an XML declaration (`<?xml version="1.0" encoding="UTF-8"?>`) before `<speak>`.
_SSML_START = re.compile(r"\s*(?:<\?xml\s[^>]*\?>\s*)?<speak[\s>]", re.IGNORECASE)


class MarkupError(ValueError):
    """The text's markup cannot be read; the message says where and what is expected."""


def parse(text: str) -> list[Segment]:
    """The text as strings to speak and seconds of silence between them (see the module's rules)."""
    items = _ssml(text) if _SSML_START.match(text) else _plain(text)
    # Alternating gaps and texts: gaps[i] precedes texts[i], gaps[-1] follows the last text. Blank text between
    # two pauses is no text: their gap items gather.
    gaps: list[list[float | None]] = [[]]
    texts: list[str] = []
    run = ""
    for item in [*items, None]:
        if isinstance(item, str):
            run += item
            continue
        if run.strip():
            texts.append(run)
            gaps.append([])
        run = ""
        gaps[-1].append(item)
    gaps[-1].pop()  # the end marker
    segments: list[Segment] = []
    for i, gap in enumerate(gaps):
        seconds = sum(g for g in gap if g is not None)
        if None in gap and 0 < i < len(texts):
            seconds += PARAGRAPH_SECONDS
        if seconds > 0:
            segments.append(seconds)
        if i < len(texts):
            if segments and isinstance(segments[-1], str):
                segments[-1] += texts[i]  # a zero-length pause is no boundary either
            else:
                segments.append(texts[i])
    total = sum(s for s in segments if isinstance(s, float))
    if total > MAX_TOTAL_PAUSE_SECONDS:
        raise MarkupError(f"the pauses add up to {total:g} s; at most {MAX_TOTAL_PAUSE_SECONDS:g} s per text")
    return segments


def _plain(text: str) -> list[_Item]:
    items: list[_Item] = []
    for i, paragraph in enumerate(_PARAGRAPH_BREAK.split(text)):
        if i:
            items.append(None)
        at = 0
        for start in _BREAK_START.finditer(paragraph):
            tag = _BREAK_TAG.match(paragraph, start.start())
            if tag is None:
                raise MarkupError(
                    f"malformed <break> tag at {paragraph[start.start() : start.start() + 30]!r}; "
                    'write <break time="500ms"/>, <break time="1.5s"/> or <break strength="medium"/>'
                )
            items += [paragraph[at : start.start()], _break_seconds(_attributes(tag.group(1)))]
            at = tag.end()
        items.append(paragraph[at:])
    return items


def _attributes(source: str) -> dict[str, str]:
    found = _ATTRIBUTES.finditer(source)
    return {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3) for m in found}


def _break_seconds(attributes: dict[str, str]) -> float:
    """The silence a break asks for: `time` if given (SSML gives it precedence), else `strength`, else medium."""
    unknown = set(attributes) - {"time", "strength"}
    if unknown:
        raise MarkupError(f"<break> takes only `time` and `strength`, not {', '.join(sorted(unknown))[:60]}")
    if "time" in attributes:
        time = _TIME.fullmatch(attributes["time"])
        if time is None:
            raise MarkupError(f'<break time={attributes["time"][:20]!r}> is not a time; write "500ms" or "1.5s"')
        seconds = float(time.group(1)) / (1000 if time.group(2).lower() == "ms" else 1)
        if seconds > MAX_BREAK_SECONDS:
            raise MarkupError(f"<break time={attributes['time'][:20]!r}> is too long; at most {MAX_BREAK_SECONDS:g} s")
        return seconds
    strength = attributes.get("strength", "medium")
    if strength not in BREAK_STRENGTHS:
        raise MarkupError(f"<break strength={strength[:20]!r}> is not one of {', '.join(BREAK_STRENGTHS)}")
    return BREAK_STRENGTHS[strength]


def _ssml(text: str) -> list[_Item]:
    if "<!" in text:
        # No DOCTYPE (entity definitions), CDATA or comments: nothing a speech text needs, and entity
        # expansion is the classic way to make a small XML document huge.
        raise MarkupError("SSML here takes no <!DOCTYPE>, <![CDATA[ or <!-- -->")
    reader = _SsmlReader()
    parser = ET.XMLParser(target=reader)
    try:
        parser.feed(text.lstrip())  # an XML declaration must be the document's very first characters
        parser.close()
    except ET.ParseError as exc:
        raise MarkupError(f"the SSML is not well-formed XML: {exc}") from None
    return reader.items


def _local(name: str) -> str:
    return name.rsplit("}", 1)[-1].lower()  # without its namespace


class _SsmlReader:
    """An XMLParser target: called in document order, so nesting depth costs no recursion."""

    def __init__(self) -> None:
        self.items: list[_Item] = []

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        self._boundary(tag)
        if _local(tag) == "break":
            self.items.append(_break_seconds({_local(k): v for k, v in attrib.items()}))

    def end(self, tag: str) -> None:
        self._boundary(tag)

    def data(self, text: str) -> None:
        self.items.append(text)

    def _boundary(self, tag: str) -> None:
        if _local(tag) == "p":
            self.items.append(None)
        elif _local(tag) == "s":
            self.items.append("\n")  # a sentence boundary for the chunk plan, never a pause
