"""Word timings by forced alignment: the audio F5 made, aligned against the text it was asked to speak.

F5 has no durations of its own, so a CTC acoustic model listens to each chunk's audio and
`torchaudio.functional.forced_align` finds where each letter of the known text falls. The model is torchaudio's
WAV2VEC2_ASR_BASE_960H (MIT licence; see worker/model_facts.py for why not MMS_FA), loaded from the directory
`worker.prefetch` bakes (config.json + model.safetensors) through torchaudio's own model builders; tests load
random weights of a small model of the same family the same way (`worker.tiny.build_tiny_aligner`).

Which words are aligned and how the others are timed is worker/word_timing.py's rule. `Aligner.time_words` never
fails: a chunk whose alignment fails gets estimates for all its words, and the log says why.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchaudio

from worker.model_facts import ALIGNER_CONFIG, ALIGNER_WEIGHTS
from worker.word_timing import WordTiming, estimate_all, fill_estimates, split_words, timed_from_letters, word_letters

log = logging.getLogger("worker.aligner")

# torchaudio 2.8 marks forced_align deprecated (its move to maintenance, pytorch/audio#3902); that deprecation
# was withdrawn and the function is kept in 2.9 and later. Only this one warning is silenced.
warnings.filterwarnings(
    "ignore", message=r"torchaudio\.functional\._alignment\.forced_align has been deprecated", category=UserWarning
)

# The public torchaudio builders an aligner directory may name: the production model is `wav2vec2_base` with a
# letter head; the tests' tiny model is `wav2vec2_model` with small dimensions.
BUILDERS = {"wav2vec2_base": torchaudio.models.wav2vec2_base, "wav2vec2_model": torchaudio.models.wav2vec2_model}
BLANK = "-"  # CTC blank: label 0 of the bundle
SEPARATOR = "|"  # word separator of the bundle's labels


class AlignerLoadError(RuntimeError):
    """The aligner directory is missing, incomplete or not an aligner; the message names the file."""


class AlignmentError(RuntimeError):
    """A chunk could not be aligned (e.g. more letters than the audio has frames)."""


def read_aligner_config(directory: Path) -> dict[str, Any]:
    path = directory / ALIGNER_CONFIG
    try:
        config = json.loads(path.read_text())
        builder, labels = config["builder"], config["labels"]
        int(config["sample_rate"])
    except FileNotFoundError as exc:
        raise AlignerLoadError(f"aligner config not found: {path} (bake it with `python -m worker.prefetch`)") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AlignerLoadError(f"{path} is not an aligner config: {type(exc).__name__}: {exc}") from exc
    if builder not in BUILDERS:
        raise AlignerLoadError(f"{path}: unknown builder {builder!r} (known: {', '.join(BUILDERS)})")
    if labels[:2] != [BLANK, SEPARATOR]:
        raise AlignerLoadError(f"{path}: labels must start with the blank {BLANK!r} and the separator {SEPARATOR!r}")
    return dict(config)


class Aligner:
    """One loaded CTC model; build it once per process with `Aligner.load`, use it on the inference thread."""

    def __init__(self, model: torch.nn.Module, labels: list[str], sample_rate: int, device: str) -> None:
        self.model = model
        self.index = {label: i for i, label in enumerate(labels)}
        self.sample_rate = sample_rate
        self.device = device

    @classmethod
    def load(cls, directory: Path, device: str) -> Aligner:
        started = time.perf_counter()
        directory = Path(directory)
        config = read_aligner_config(directory)
        weights = directory / ALIGNER_WEIGHTS
        if not weights.is_file():
            raise AlignerLoadError(f"aligner weights not found: {weights}")
        from safetensors.torch import load_file

        try:
            model = BUILDERS[config["builder"]](**config.get("kwargs", {}))
            model.load_state_dict(load_file(str(weights)), strict=True)
        except Exception as exc:
            raise AlignerLoadError(f"loading the aligner from {weights} failed: {type(exc).__name__}: {exc}") from exc
        model = model.to(device).eval()
        log.info("loaded the word aligner from %s on %s in %.1f s", directory, device, time.perf_counter() - started)
        return cls(model, list(config["labels"]), int(config["sample_rate"]), device)

    def time_words(self, samples: np.ndarray, sample_rate: int, text: str) -> list[WordTiming]:
        """Every word of `text` with its times in `samples` (seconds from their start). Never raises: when the
        alignment fails, every word is estimated and the log says why."""
        duration = samples.size / sample_rate
        try:
            return self.align(samples, sample_rate, text)
        except Exception as exc:
            log.warning("word alignment failed, times of %r are estimated: %s: %s", text[:40], type(exc).__name__, exc)
            return estimate_all(text, duration)

    def align(self, samples: np.ndarray, sample_rate: int, text: str) -> list[WordTiming]:
        """Like `time_words`, but a failed alignment raises AlignmentError (or torch's error)."""
        words = split_words(text)
        duration = samples.size / sample_rate
        letters = [word_letters(word) for word in words]
        aligned_words = [(i, "".join(parts)) for i, parts in enumerate(letters) if parts is not None]
        if not aligned_words:
            return estimate_all(text, duration)
        spans = self._letter_spans(samples, sample_rate, [letters for _, letters in aligned_words])
        aligned: list[WordTiming | None] = [None] * len(words)
        for (i, _), word_spans in zip(aligned_words, spans, strict=True):
            aligned[i] = timed_from_letters(words[i], word_spans)
        return fill_estimates(words, aligned, duration)

    @torch.inference_mode()
    def _letter_spans(self, samples: np.ndarray, sample_rate: int, words: list[str]) -> list[list[tuple[float, float]]]:
        """For each word (its letters, all in the alphabet), the (start, end) seconds of each letter."""
        wave = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)).to(self.device).unsqueeze(0)
        if sample_rate != self.sample_rate:
            wave = torchaudio.functional.resample(wave, sample_rate, self.sample_rate)
        emission, _ = self.model(wave)
        log_probs = torch.log_softmax(emission.float(), dim=-1)
        tokens = [self.index[c] for c in SEPARATOR.join(words)]
        frames = log_probs.size(1)
        repeats = sum(a == b for a, b in itertools.pairwise(tokens))
        if frames < len(tokens) + repeats:
            raise AlignmentError(f"{frames} audio frames cannot hold {len(tokens)} letters")
        targets = torch.tensor([tokens], dtype=torch.int32, device=self.device)
        path, scores = torchaudio.functional.forced_align(log_probs, targets, blank=self.index[BLANK])
        token_spans = torchaudio.functional.merge_tokens(path[0], scores[0].exp(), blank=self.index[BLANK])
        if len(token_spans) != len(tokens):  # one span per target token, in order: CTC's own guarantee
            raise AlignmentError(f"{len(token_spans)} spans for {len(tokens)} letters")
        seconds_per_frame = samples.size / sample_rate / frames
        spans = iter(token_spans)
        result = []
        for word_index, word in enumerate(words):
            if word_index:
                next(spans)  # the separator between two words
            result.append(
                [(span.start * seconds_per_frame, span.end * seconds_per_frame) for span in (next(spans) for _ in word)]
            )
        return result
