"""A tiny random-weight F5-TTS checkpoint, Vocos vocoder and word aligner, loadable through the real loaders.

Tests, the devstack demo and the benches run the whole worker with it on a CPU in well under a second per
sentence: same file formats, same code paths, no download. It speaks noise, of course.

    python -m worker.tiny DEST      # builds DEST (or reuses it) and prints the KEY=VALUE environment
"""

from __future__ import annotations

import json
import os
import sys
from importlib.resources import files
from pathlib import Path

import torch
import yaml

from worker.model_facts import HOP_LENGTH, N_FFT, N_MELS, SAMPLE_RATE

MODEL_NAME = "F5TTS_tiny"
SEED = 1234
# Bumped when what is built changes, so an old directory is rebuilt instead of reused.
FORMAT_VERSION = 3

TINY_ARCH = {
    "dim": 64,
    "depth": 2,
    "heads": 2,
    "dim_head": 32,
    "ff_mult": 2,
    "text_dim": 32,
    "text_mask_padding": True,
    "qk_norm": None,
    "conv_layers": 1,
    "pe_attn_head": None,
    "attn_backend": "torch",
    "attn_mask_enabled": False,
    "checkpoint_activations": False,
}


def vocos_config(dim: int, intermediate_dim: int, num_layers: int) -> dict:
    """A Vocos configuration in the layout of charactr/vocos-mel-24khz's config.yaml (the vocoder f5-tts uses, on
    F5's mel settings), with a backbone of the given size."""
    return {
        "feature_extractor": {
            "class_path": "vocos.feature_extractors.MelSpectrogramFeatures",
            "init_args": {
                "sample_rate": SAMPLE_RATE,
                "n_fft": N_FFT,
                "hop_length": HOP_LENGTH,
                "n_mels": N_MELS,
                "padding": "center",
            },
        },
        "backbone": {
            "class_path": "vocos.models.VocosBackbone",
            "init_args": {
                "input_channels": N_MELS,
                "dim": dim,
                "intermediate_dim": intermediate_dim,
                "num_layers": num_layers,
            },
        },
        "head": {
            "class_path": "vocos.heads.ISTFTHead",
            "init_args": {"dim": dim, "n_fft": N_FFT, "hop_length": HOP_LENGTH, "padding": "same"},
        },
    }


TINY_VOCOS = vocos_config(dim=64, intermediate_dim=128, num_layers=1)  # one layer, 64 wide

# A wav2vec 2.0 of the production aligner's family (torchaudio.models.wav2vec2_model) with the same feature
# extractor strides (so the same 20 ms frames) and the same 29 letter labels, but 32 channels and one layer.
ALIGNER_LABELS = ["-", "|", *"ETAONIHSRDLUMWCFGYPBVK'XJQZ"]
TINY_ALIGNER = {
    "extractor_mode": "group_norm",
    "extractor_conv_layer_config": [
        (32, 10, 5),
        (32, 3, 2),
        (32, 3, 2),
        (32, 3, 2),
        (32, 3, 2),
        (32, 2, 2),
        (32, 2, 2),
    ],
    "extractor_conv_bias": False,
    "encoder_embed_dim": 32,
    "encoder_projection_dropout": 0.0,
    "encoder_pos_conv_kernel": 16,
    "encoder_pos_conv_groups": 4,
    "encoder_num_layers": 1,
    "encoder_num_heads": 2,
    "encoder_attention_dropout": 0.0,
    "encoder_ff_interm_features": 64,
    "encoder_ff_interm_dropout": 0.0,
    "encoder_dropout": 0.0,
    "encoder_layer_norm_first": False,
    "encoder_layer_drop": 0.0,
    "aux_num_out": len(ALIGNER_LABELS),
}

MANIFEST = "tiny.json"  # written last: its presence (with the right version) means the directory is complete


def _env(dest: Path, model_name: str) -> dict[str, str]:
    return {
        "F5TTS_MODEL": model_name,
        "F5TTS_MODEL_CFG": str(dest / f"{model_name}.yaml"),
        "F5TTS_CKPT_FILE": str(dest / "model.safetensors"),
        "F5TTS_VOCAB_FILE": str(dest / "vocab.txt"),
        "F5TTS_VOCODER_DIR": str(dest / "vocos"),
        "F5TTS_ALIGNER_DIR": str(dest / "aligner"),
    }


def build_tiny_checkpoint(dest: Path) -> dict[str, str]:
    """Build the tiny model under `dest` (reused when already complete); returns the env vars selecting it."""
    env = build_random_checkpoint(dest, model_name=MODEL_NAME, arch=TINY_ARCH, vocos_config=TINY_VOCOS, seed=SEED)
    return {**env, "F5TTS_DEVICE": "cpu"}


def build_random_checkpoint(
    dest: Path, *, model_name: str, arch: dict, vocos_config: dict, seed: int
) -> dict[str, str]:
    """Random weights for any DiT architecture and Vocos configuration, in the published files' formats (the
    GPU benchmark builds a full-size F5TTS_v1_Base with it); reused when already complete."""
    dest = Path(dest).resolve()
    env = _env(dest, model_name)
    manifest = dest / MANIFEST
    if _complete(manifest, env):
        return env
    dest.mkdir(parents=True, exist_ok=True)
    manifest.unlink(missing_ok=True)

    _atomic_write(Path(env["F5TTS_VOCAB_FILE"]), files("f5_tts").joinpath("infer/examples/vocab.txt").read_bytes())
    _write_model_config(Path(env["F5TTS_MODEL_CFG"]), model_name, arch)
    # Forked RNG: building seeds torch without disturbing the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        parameters = _write_checkpoint(Path(env["F5TTS_CKPT_FILE"]), Path(env["F5TTS_VOCAB_FILE"]), arch)
        _write_vocos(Path(env["F5TTS_VOCODER_DIR"]), vocos_config)
        build_random_aligner(Path(env["F5TTS_ALIGNER_DIR"]), builder="wav2vec2_model", kwargs=TINY_ALIGNER)
    manifest.write_text(
        json.dumps({"version": FORMAT_VERSION, "model": model_name, "seed": seed, "parameters": parameters}) + "\n"
    )
    return env


def checkpoint_parameters(dest: Path) -> int:
    """The DiT parameter count recorded when `dest` was built."""
    return json.loads((Path(dest) / MANIFEST).read_text())["parameters"]


def _complete(manifest: Path, env: dict[str, str]) -> bool:
    if not manifest.is_file() or json.loads(manifest.read_text()).get("version") != FORMAT_VERSION:
        return False
    paths = ("F5TTS_MODEL_CFG", "F5TTS_CKPT_FILE", "F5TTS_VOCAB_FILE", "F5TTS_VOCODER_DIR", "F5TTS_ALIGNER_DIR")
    return all(Path(env[key]).exists() for key in paths)


def _write_model_config(path: Path, model_name: str, arch: dict) -> None:
    """f5-tts's F5TTS_v1_Base.yaml (training sections included, so the file is a real f5-tts config) with the
    given architecture."""
    config = yaml.safe_load(files("f5_tts").joinpath("configs/F5TTS_v1_Base.yaml").read_text())
    config["model"]["name"] = model_name
    config["model"]["arch"] = dict(arch)
    _atomic_write(path, yaml.safe_dump(config, sort_keys=False).encode())


def _write_checkpoint(path: Path, vocab_file: Path, arch: dict) -> int:
    """Random weights in the layout of a published checkpoint: EMA keys (`ema_model.` prefix) plus EMA's
    `initted` and `step` entries, which f5-tts's load_checkpoint strips."""
    from safetensors.torch import save_file

    from worker.lean_imports import import_f5_infer

    f5 = import_f5_infer()
    from f5_tts.model import CFM, DiT

    vocab_char_map, vocab_size = f5.get_tokenizer(str(vocab_file), "custom")
    model = CFM(
        transformer=DiT(**arch, text_num_embeds=vocab_size, mel_dim=f5.n_mel_channels),
        mel_spec_kwargs={
            "n_fft": f5.n_fft,
            "hop_length": f5.hop_length,
            "win_length": f5.win_length,
            "n_mel_channels": f5.n_mel_channels,
            "target_sample_rate": f5.target_sample_rate,
            "mel_spec_type": "vocos",
        },
        vocab_char_map=vocab_char_map,
    )
    with torch.no_grad():
        # DiT zero-initialises its adaptive-norm gates, which would make every block an identity. Small random
        # values instead make the tiny model exercise each layer.
        for param in model.parameters():
            if not param.any():
                param.normal_(0.0, 0.02)
    tensors = {f"ema_model.{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    tensors["initted"] = torch.tensor(True)
    tensors["step"] = torch.tensor(0)
    tmp = _tmp_path(path)
    save_file(tensors, str(tmp))
    tmp.chmod(0o644)  # safetensors creates it owner-only; the devstack's worker processes may run as other users
    os.replace(tmp, path)
    return sum(p.numel() for p in model.transformer.parameters())


def _write_vocos(directory: Path, vocos_config: dict) -> None:
    """config.yaml + pytorch_model.bin, as in the charactr/vocos-mel-24khz snapshot load_vocoder reads."""
    from vocos import Vocos

    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "config.yaml"
    _atomic_write(config_path, yaml.safe_dump(vocos_config, sort_keys=False).encode())
    vocoder = Vocos.from_hparams(str(config_path))
    tmp = _tmp_path(directory / "pytorch_model.bin")
    torch.save(vocoder.state_dict(), tmp)
    os.replace(tmp, directory / "pytorch_model.bin")


def build_random_aligner(dest: Path, *, builder: str, kwargs: dict) -> Path:
    """Random weights for a word aligner built by torchaudio.models.`builder`(**kwargs), in the directory format
    `worker.prefetch` bakes the real one in (the tiny one above; the bench builds a full-size `wav2vec2_base`).
    Seeded by the caller (build_random_checkpoint forks and seeds torch's RNG)."""
    import torchaudio

    from worker.prefetch import write_aligner_dir

    model = getattr(torchaudio.models, builder)(**kwargs)
    return write_aligner_dir(dest, model, builder=builder, kwargs=kwargs, labels=ALIGNER_LABELS)


def _tmp_path(path: Path) -> Path:
    # Per process: two processes building the same directory (devstack workers starting together) each
    # write their own file and atomically replace the target with identical content.
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = _tmp_path(path)
    tmp.write_bytes(data)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m worker.tiny DEST", file=sys.stderr)
        return 2
    for key, value in build_tiny_checkpoint(Path(args[0])).items():
        print(f"{key}={value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
