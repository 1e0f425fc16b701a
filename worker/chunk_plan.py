"""The chunk plan: how a text is cut into the pieces F5-TTS speaks one at a time.

The same plan serves whole results and streams, so a seed means the same audio in both. It is built so that a
stream starts speaking early and every chunk fits the model:

- A text that fits one chunk is one chunk. Otherwise the first chunk is short: the first sentence, or the first
  clause (then words) of a long first sentence. It is never below a floor: F5 garbles or skips very short inputs, so a short opening ("Hi.") takes the next sentence
  along.
- Later chunks grow up to F5's own character budget (f5-tts's `infer_process`: the reference's bytes per second
  times the ~22 s F5 was trained on, less the reference), which keeps long texts efficient.
- A sentence over the budget is split at clause marks, then at words, then between characters (scripts without
  spaces); never inside a grapheme cluster (accents, CJK, emoji sequences).
- Every chunk, together with the reference, must fit the model's positional range (`max_frames` mel frames, taken
  from the loaded model). F5 sizes the output by the reference's speaking rate; where even the smallest piece
  cannot fit, the caller gets `invalid_input` saying what to change.

A pause the text asks for (a `<break>`, a blank line between paragraphs: worker.markup) is always a chunk
boundary: the passages between pauses are planned one by one, and the silence stands between their chunks.

Emoji are dropped before planning: they are not in F5's vocabulary, and F5 would give each of their UTF-8 bytes
the time of a letter (a 25-byte family emoji became ~2.5 s of noise).

Pure functions, no torch: fast to test, importable anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import regex

from worker import markup
from worker.model_facts import HOP_LENGTH, SAMPLE_RATE
from worker.schema import ContractError, ErrorCode

# f5-tts's infer_process sizes chunks so that reference + chunk is about this long (its `22 - ref_audio_len`).
F5_TARGET_SECONDS = 22.0
# F5's `_infer_basic` speaks any chunk under 10 UTF-8 bytes at speed 0.3, whatever was asked: it is the upstream
# guard against skipped short inputs. The plan must size such chunks with that speed.
F5_SHORT_BYTES = 10
F5_SHORT_SPEED = 0.3

# The floor, in UTF-8 bytes: a first (or last) chunk shorter than this takes its neighbour along. Chosen from
# measurement (`python -m bench.chunk_floor`, docs/benchmarks.md): F5 speaks any chunk under 10 bytes at speed
# 0.3 whatever was asked ("Hi." and "Hello" came out at 0.34 s per character, every chunk from 10 bytes up at
# 0.10), so a chunk with a neighbour must clear 10 bytes; growing "Hi." (3 bytes) to "Hi. How are you today?"
# (22 bytes) cost ~0.3 s (+28 %) of first-chunk time on the tiny model, because every chunk's cost is dominated
# by the reference it carries. 20 clears F5's short-input path by a word or two at that small price.
MIN_CHUNK_BYTES = 20
# The first chunk aims at about this much speech. Its cost (and the wait before the first sound) is the
# reference plus this; later chunks are then generated while it plays. ~3 s is a short sentence or clause; a first
# clause may run to 1.5 times that rather than be cut between words.
FIRST_CHUNK_SECONDS = 3.0
FIRST_CLAUSE_STRETCH = 1.5

# Boundaries, each capturing its separator (whitespace, or nothing after CJK punctuation).
_SENTENCE_END = regex.compile(r"((?<=[.!?…][\"'”’)\]]*)\s+|(?<=[。！？]))")
_CLAUSE_MARK = regex.compile(r"((?<=[,;:—–][\"'”’)\]]*)\s+|(?<=[、，；：]))")
_WHITESPACE = regex.compile(r"(\s+)")
_PICTOGRAPHIC = regex.compile(r"[\p{Extended_Pictographic}\p{Regional_Indicator}]")
_GRAPHEME = regex.compile(r"\X")


def nbytes(text: str) -> int:
    return len(text.encode("utf-8"))


@dataclass(frozen=True)
class Voice:
    """What the plan needs to know about the reference, in F5's own terms."""

    text: str  # the transcript exactly as F5 gets it (already terminated: "... nature. ")
    seconds: float  # reference duration

    @property
    def f5_text(self) -> str:
        # infer_batch_process appends a space when the transcript ends in a one-byte character.
        return self.text + " " if self.text and nbytes(self.text[-1]) == 1 else self.text

    @property
    def frames(self) -> int:
        return int(self.seconds * SAMPLE_RATE) // HOP_LENGTH

    @property
    def bytes_per_second(self) -> float:
        return nbytes(self.text) / self.seconds


def chunk_frames(chunk: str, voice: Voice, speed: float) -> int:
    """The mel frames F5 allocates to reference + chunk (infer_batch_process's duration estimate), or the
    text's token count if larger (F5 takes the maximum): the sequence length the DiT must cover."""
    chunk_bytes = nbytes(chunk)
    local_speed = F5_SHORT_SPEED if chunk_bytes < F5_SHORT_BYTES else speed
    ref_frames = voice.frames
    duration = ref_frames + int(ref_frames / nbytes(voice.f5_text) * chunk_bytes / local_speed)
    tokens = nbytes(voice.f5_text) + chunk_bytes  # tokens <= bytes (pinyin turns a 3-byte CJK char into <= 2)
    return max(duration, tokens + 1, ref_frames + 1)


def f5_budget(voice: Voice, speed: float) -> int:
    """f5-tts's infer_process budget in UTF-8 bytes: the reference's rate times the time left of ~22 s."""
    return int(nbytes(voice.text) / voice.seconds * (F5_TARGET_SECONDS - voice.seconds) * speed)


def fitting_bytes(voice: Voice, speed: float, max_frames: int) -> int:
    """The largest chunk (in bytes, at least F5_SHORT_BYTES) whose frames fit `max_frames`; 0 if none."""
    ref_frames = voice.frames
    if ref_frames + 1 > max_frames:
        return 0
    per_byte = ref_frames / nbytes(voice.f5_text) / speed
    by_duration = int((max_frames - ref_frames) / per_byte) if per_byte > 0 else max_frames
    by_tokens = max_frames - 1 - nbytes(voice.f5_text)
    best = min(by_duration, by_tokens)
    while best >= F5_SHORT_BYTES and chunk_frames("a" * best, voice, speed) > max_frames:
        best -= 1  # int() rounding in F5's estimate: step down to the exact edge
    return best if best >= F5_SHORT_BYTES else 0


def speakable(text: str) -> str:
    """The text with emoji (and the space before each) removed, whitespace runs collapsed; newlines are kept:
    they end a sentence (lists, lyrics, transcripts)."""
    kept = ""
    for grapheme in _GRAPHEME.findall(text):
        if _PICTOGRAPHIC.search(grapheme):
            kept = kept.rstrip(" \t")
        else:
            kept += grapheme
    lines = (" ".join(line.split()) for line in kept.splitlines())
    return "\n".join(line for line in lines if line)


@dataclass(frozen=True)
class _Atom:
    """A piece of text the plan does not cut further, and whether a space separates it from the piece before
    (False inside a word, between CJK characters, after CJK punctuation)."""

    text: str
    space: bool


def _render(atoms: list[_Atom]) -> str:
    return "".join((" " if atom.space and i else "") + atom.text for i, atom in enumerate(atoms))


def _size(atoms: list[_Atom]) -> int:
    return nbytes(_render(atoms))


def _split(text: str, boundary: regex.Pattern[str], space_first: bool) -> list[_Atom]:
    """`text` cut at `boundary` (whitespace, or nothing after CJK punctuation), each part remembering whether
    whitespace separated it from the one before."""
    parts = boundary.split(text)  # the boundary pattern captures the separator: [part, sep, part, sep, ...]
    atoms, space = [], space_first
    for i in range(0, len(parts), 2):
        if parts[i].strip():
            atoms.append(_Atom(parts[i].strip(), space))
        space = bool(parts[i + 1]) if i + 1 < len(parts) else False
    return atoms


def _atoms(text: str, limit: int, space_first: bool = False) -> list[_Atom]:
    """`text` as atoms of at most `limit` bytes, as coarse as possible: whole, else clauses, else words, else
    grapheme clusters. A single cluster over `limit` stays whole (the fit check then decides)."""
    if nbytes(text) <= limit:
        return [_Atom(text, space_first)]
    for boundary in (_CLAUSE_MARK, _WHITESPACE):
        parts = _split(text, boundary, space_first)
        if len(parts) > 1:
            return [atom for part in parts for atom in _atoms(part.text, limit, part.space)]
    clusters = _GRAPHEME.findall(text)
    return [_Atom(clusters[0], space_first)] + [_Atom(c, False) for c in clusters[1:]]


def _pack(atoms: list[_Atom], limit: int) -> list[list[_Atom]]:
    """Consecutive atoms grouped greedily, each group within `limit` bytes (an atom over it stands alone)."""
    groups: list[list[_Atom]] = []
    size = 0
    for atom in atoms:
        grown = size + (1 if atom.space else 0) + nbytes(atom.text)
        if groups and grown <= limit:
            groups[-1].append(atom)
            size = grown
        else:
            groups.append([atom])
            size = nbytes(atom.text)
    return groups


def terminated_transcript(ref_text: str) -> str:
    """The reference transcript as f5-tts's preprocess_ref_audio_text leaves it: ending in '. ' (or '。'), so
    the generated text starts as a new sentence."""
    if ref_text.endswith((". ", "。")):
        return ref_text
    return ref_text + " " if ref_text.endswith(".") else ref_text + ". "


@dataclass(frozen=True)
class PlannedChunk:
    """A chunk of the plan and the silence after it (a break or paragraph of the text: worker.markup); only the
    first chunk of a plan has silence before it (a text that opens with a break)."""

    text: str
    pause_before: float = 0.0
    pause_after: float = 0.0


def plan_speech(text: str, voice: Voice, speed: float, max_frames: int) -> list[PlannedChunk]:
    """The plan for a synthesis text with its pauses: each passage between two pauses planned on its own (so
    every pause is a chunk boundary), only the first with a short opening chunk. Raises ContractError
    (invalid_input, field `text`) for bad markup and as `plan_chunks` does."""
    try:
        segments = markup.parse(text)
    except markup.MarkupError as exc:
        raise ContractError(ErrorCode.invalid_input, f"text: {exc}", "text") from None
    planned: list[PlannedChunk] = []
    lead = 0.0
    for segment in segments:
        if isinstance(segment, float):
            if planned:
                planned[-1] = replace(planned[-1], pause_after=planned[-1].pause_after + segment)
            else:
                lead += segment
        elif speakable(segment):  # a passage of emoji only is not spoken; its pauses still are
            chunks = plan_chunks(segment, voice, speed, max_frames, opening=not planned)
            planned += [PlannedChunk(chunk) for chunk in chunks]
    if not planned:
        plan_chunks("", voice, speed, max_frames)  # raises: nothing to speak
    planned[0] = replace(planned[0], pause_before=lead)
    return planned


def plan_chunks(text: str, voice: Voice, speed: float, max_frames: int, opening: bool = True) -> list[str]:
    """The chunks F5 speaks for `text`, in order; raises ContractError(invalid_input) when the text has nothing
    to speak or cannot be cut into pieces that fit the model with this reference and speed. Without `opening`
    (a passage after a pause, not the start of the speech) the first chunk is not kept short."""
    sentences = [a for line in speakable(text).splitlines() for a in _split(line, _SENTENCE_END, True)]
    if not sentences:
        raise ContractError(
            ErrorCode.invalid_input, "the text has nothing to speak (emoji and whitespace are not spoken)", "text"
        )
    hard = fitting_bytes(voice, speed, max_frames)
    if hard == 0:
        raise _too_slow(voice, speed, max_frames)
    budget = min(max(f5_budget(voice, speed), 2 * MIN_CHUNK_BYTES), hard)
    first_cap = min(max(int(FIRST_CHUNK_SECONDS * voice.bytes_per_second * speed), MIN_CHUNK_BYTES), budget)

    whole = _render(sentences)
    if nbytes(whole) <= budget:
        # One chunk holds it all: splitting would gain a stream a little time to first audio but cost every job
        # one more pass over the reference (~a third more work for a one-sentence text).
        return _checked([whole], voice, speed, max_frames)

    if not opening:
        atoms = [atom for sentence in sentences for atom in _atoms(sentence.text, budget, sentence.space)]
        return _checked(_merged_last(_pack(atoms, budget), budget, hard), voice, speed, max_frames)

    # The first chunk: the first sentence; of a long one, its first clause; of a long clause, its first words.
    head, rest = _opening(sentences[0].text, first_cap)
    stream = _atoms(rest, budget, True) if rest else []
    stream += [atom for sentence in sentences[1:] for atom in _atoms(sentence.text, budget, sentence.space)]
    while _size(head) < MIN_CHUNK_BYTES and stream:  # below the floor: take what follows along
        nxt = stream.pop(0)
        if _size([*head, nxt]) <= FIRST_CLAUSE_STRETCH * first_cap:  # a whole sentence is worth a little wait
            head.append(nxt)
        elif len(finer := _atoms(nxt.text, first_cap, nxt.space)) > 1:
            stream[:0] = finer  # too big to join whole: try its clauses, words or characters
        else:
            stream.insert(0, nxt)
            break
    return _checked(_merged_last([head, *_pack(stream, budget)], budget, hard), voice, speed, max_frames)


def _merged_last(chunks: list[list[_Atom]], budget: int, hard: int) -> list[str]:
    """The chunks rendered, a short last chunk ("Yes.") riding with the one before when the model has room (a
    little over the budget, which is F5's soft target, never over the hard limit): F5 would otherwise speak it
    at speed 0.3."""
    last_fits = len(chunks) > 1 and _size(chunks[-2] + chunks[-1]) <= min(budget + MIN_CHUNK_BYTES, hard)
    if last_fits and _size(chunks[-1]) < MIN_CHUNK_BYTES:
        chunks[-2:] = [chunks[-2] + chunks[-1]]
    return [_render(chunk) for chunk in chunks]


def _checked(chunks: list[str], voice: Voice, speed: float, max_frames: int) -> list[str]:
    for chunk in chunks:
        if chunk_frames(chunk, voice, speed) > max_frames:
            raise _too_slow(voice, speed, max_frames, chunk)
    return chunks


def _opening(sentence: str, first_cap: int) -> tuple[list[_Atom], str]:
    """(first chunk's atoms, rest of the sentence): the whole sentence if within `first_cap`, else its first
    clause (up to FIRST_CLAUSE_STRETCH times `first_cap`: a natural break is worth a little wait), else its first words (or
    characters) up to `first_cap`."""
    if nbytes(sentence) <= first_cap:
        return [_Atom(sentence, False)], ""
    clauses = _split(sentence, _CLAUSE_MARK, False)
    if len(clauses) > 1 and nbytes(clauses[0].text) <= FIRST_CLAUSE_STRETCH * first_cap:
        return clauses[:1], _render(clauses[1:])
    head, *rest = _pack(_atoms(sentence, first_cap), first_cap)
    return head, _render([atom for group in rest for atom in group])


def _too_slow(voice: Voice, speed: float, max_frames: int, chunk: str | None = None) -> ContractError:
    limit_s = max_frames * HOP_LENGTH / SAMPLE_RATE
    what = (
        f"the piece {chunk[:20]!r} ({nbytes(chunk)} bytes) cannot be split further and"
        if chunk
        else "even a short piece"
    )
    return ContractError(
        ErrorCode.invalid_input,
        f"{what} would need more than the model's {limit_s:.0f} s of audio with this {voice.seconds:.1f} s reference "
        f"at speed {speed:g}; raise speed, or use a shorter reference clip whose transcript matches it",
        "speed",
    )
