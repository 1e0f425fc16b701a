"""The chunk plan: how a text is cut into the pieces F5-TTS speaks one at a time.

The same plan serves whole results and streams, so a seed means the same audio in both. It is built so that a
stream starts speaking early and every chunk fits the model:

- The first chunk is short: the first sentence, or the first clause (then words) of a long first sentence. It is
  never below a floor: F5 garbles or skips very short inputs, so a short opening ("Hi.") takes the next sentence
  along.
- Later chunks grow up to F5's own character budget (f5-tts's `infer_process`: the reference's bytes per second
  times the ~22 s F5 was trained on, less the reference), which keeps long texts efficient.
- A sentence over the budget is split at clause marks, then at words, then between characters (scripts without
  spaces); never inside a grapheme cluster (accents, CJK, emoji sequences).
- Every chunk, together with the reference, must fit the model's positional range (`max_frames` mel frames, taken
  from the loaded model). F5 sizes the output by the reference's speaking rate; where even the smallest piece
  cannot fit, the caller gets `invalid_input` saying what to change.

Emoji are dropped before planning: they are not in F5's vocabulary, and F5 would give each of their UTF-8 bytes
the time of a letter (a 25-byte family emoji became ~2.5 s of noise).

Pure functions, no torch: fast to test, importable anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import regex

from worker.schema import ContractError, ErrorCode

# f5-tts's mel settings (utils_infer: 24 kHz, hop 256): a frame is ~10.7 ms.
SAMPLE_RATE = 24000
HOP_LENGTH = 256
# f5-tts's infer_process sizes chunks so that reference + chunk is about this long (its `22 - ref_audio_len`).
F5_TARGET_SECONDS = 22.0
# F5's `_infer_basic` speaks any chunk under 10 UTF-8 bytes at speed 0.3, whatever was asked: it is the upstream
# guard against skipped short inputs. The plan must size such chunks with that speed.
F5_SHORT_BYTES = 10
F5_SHORT_SPEED = 0.3

# The floor, in UTF-8 bytes: a first (or last) chunk shorter than this takes its neighbour along. Chosen from
# measurement (docs/benchmarks.md, "Chunk plan"): on the tiny model the cost of a chunk is dominated by the
# reference it carries (every chunk re-reads the whole reference), so growing a 3-byte "Hi." to ~20 bytes added
# 3-6% to the first chunk's time, while a chunk under 10 bytes is the one F5 itself distrusts (it forces speed 0.3
# on it, stretching "Hi." to about three times its length). 20 keeps every chunk that has a neighbour clear of
# F5's short-input path with room for a short word, at a few percent of time to first audio.
MIN_CHUNK_BYTES = 20
# The first chunk aims at about this much speech. Its cost (and the wait before the first sound) is the
# reference plus this; later chunks are then generated while it plays. ~4 s is one short sentence or clause.
FIRST_CHUNK_SECONDS = 4.0

_SENTENCE_END = regex.compile(r"(?<=[.!?…][\"'”’)\]]*)\s+|(?<=[。！？])")
_CLAUSE_MARK = regex.compile(r"(?<=[,;:—–][\"'”’)\]]*)\s+|(?<=[、，；：])")
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
    """The text with emoji removed and whitespace runs collapsed (newlines kept: they end a sentence)."""
    kept = "".join(g for g in _GRAPHEME.findall(text) if not _PICTOGRAPHIC.search(g))
    lines = (" ".join(line.split()) for line in kept.splitlines())
    return "\n".join(line for line in lines if line)


def _join(left: str, right: str) -> str:
    """Two pieces as f5-tts's chunk_text joins them: a space after a one-byte character (Latin scripts), none
    after a wider one (CJK runs on)."""
    if not left:
        return right
    if not right:
        return left
    return left + (" " if nbytes(left[-1]) == 1 else "") + right


def _pack(parts: list[str], limit: int, joiner=_join) -> list[str]:
    """Greedily join consecutive parts while the result stays within `limit` bytes."""
    packed: list[str] = []
    for part in parts:
        if packed and nbytes(joiner(packed[-1], part)) <= limit:
            packed[-1] = joiner(packed[-1], part)
        else:
            packed.append(part)
    return packed


def split_sentences(text: str) -> list[str]:
    return [s.strip() for line in text.splitlines() for s in _SENTENCE_END.split(line) if s.strip()]


def pieces(segment: str, limit: int) -> list[str]:
    """`segment` cut into pieces of at most `limit` bytes: at clause marks, else at words, else between grapheme
    clusters. A single cluster over `limit` stays whole (the fit check then decides)."""
    if nbytes(segment) <= limit:
        return [segment]
    for splitter in (_CLAUSE_MARK.split, str.split):
        parts = [p.strip() for p in splitter(segment) if p.strip()]
        if len(parts) > 1:
            return _pack([p for part in parts for p in pieces(part, limit)], limit)
    return _pack(_GRAPHEME.findall(segment), limit, joiner=lambda a, b: a + b)


def plan_chunks(text: str, voice: Voice, speed: float, max_frames: int) -> list[str]:
    """The chunks F5 speaks for `text`, in order; raises ContractError(invalid_input) when the text has nothing
    to speak or cannot be cut into pieces that fit the model with this reference and speed."""
    sentences = split_sentences(speakable(text))
    if not sentences:
        raise ContractError(
            ErrorCode.invalid_input, "the text has nothing to speak (emoji and whitespace are not spoken)", "text"
        )
    hard = fitting_bytes(voice, speed, max_frames)
    if hard == 0:
        raise _too_slow(voice, speed, max_frames)
    budget = min(max(f5_budget(voice, speed), 2 * MIN_CHUNK_BYTES), hard)
    first_cap = min(max(int(FIRST_CHUNK_SECONDS * voice.bytes_per_second * speed), MIN_CHUNK_BYTES), budget)

    # The first chunk: the first sentence; of a long one, its first clause; of a long clause, its first words.
    head, rest = _opening(sentences.pop(0), first_cap)
    if rest:
        sentences.insert(0, rest)
    while nbytes(head) < MIN_CHUNK_BYTES and sentences:  # below the floor: take the next sentence along
        room = max(first_cap, 2 * MIN_CHUNK_BYTES) - nbytes(head) - 1
        taken, *left = pieces(sentences.pop(0), max(room, 1))
        if nbytes(_join(head, taken)) > budget:  # not even a word fits next to it: leave it for the next chunk
            sentences.insert(0, _join_all([taken, *left]))
            break
        head = _join(head, taken)
        if left:
            sentences.insert(0, _join_all(left))
    chunks = [head]

    # Later chunks: whole sentences packed up to the budget; a longer sentence in pieces.
    later = _pack([p for sentence in sentences for p in pieces(sentence, budget)], budget)
    if later and nbytes(later[-1]) < MIN_CHUNK_BYTES:
        # A short last chunk ("Yes.") rides with the one before when the model has room: F5 would otherwise
        # speak it at speed 0.3.
        previous = later[-2] if len(later) > 1 else chunks[-1]
        if nbytes(_join(previous, later[-1])) <= min(budget + MIN_CHUNK_BYTES, hard):
            merged = _join(previous, later.pop())
            if later:
                later[-1] = merged
            else:
                chunks[-1] = merged
    chunks += later

    for chunk in chunks:
        if chunk_frames(chunk, voice, speed) > max_frames:
            raise _too_slow(voice, speed, max_frames, chunk)
    return chunks


def _opening(sentence: str, first_cap: int) -> tuple[str, str]:
    """(first chunk, rest of the sentence): the whole sentence if within `first_cap`, else its first clause (up to
    twice `first_cap`: a natural break is worth a little wait), else its first words up to `first_cap`."""
    if nbytes(sentence) <= first_cap:
        return sentence, ""
    clauses = [c.strip() for c in _CLAUSE_MARK.split(sentence) if c.strip()]
    if len(clauses) > 1 and nbytes(clauses[0]) <= 2 * first_cap:
        return clauses[0], _join_all(clauses[1:])
    head, *rest = pieces(clauses[0], first_cap)
    return head, _join_all([*rest, *clauses[1:]])


def _join_all(parts: list[str]) -> str:
    joined = ""
    for part in parts:
        joined = _join(joined, part)
    return joined


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
