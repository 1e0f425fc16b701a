"""Fuzzing the job contract: hypothesis strategies drawn from the published JSON Schema (what clients are told
the worker accepts), plus mutations of those inputs (what careless or hostile callers send).

Used by tests/worker/test_fuzz.py (a few hundred examples in `make test`) and bench/fuzz.py (the long run).
Both assert the same: every job ends in a success or a coded error, never `internal`; a refused job changes
nothing in the bucket; every stored voice points at audio that exists, and no audio is left unreferenced.

hypothesis-jsonschema would derive strategies from the schema, but its release (0.23.1) fails on current
hypothesis (`'many' object has no attribute 'more'`), so `from_schema` below covers the subset the contract uses.
One field is narrowed, for time and not for coverage: `nfe_step` to 8 (each synthesis runs the tiny model on
CPU). Texts go up to the contract's limit (the chunk planner splits any of them to fit the model); hypothesis
draws mostly short ones, so long texts are still the chunk planner's own tests.
"""

from __future__ import annotations

import base64
import copy
import io
import ipaddress
import json
import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soundfile as sf
from hypothesis import strategies as st

from tests.loopback_http import serve_get
from worker.schema import MAX_REF_TEXT_CHARS, MAX_TEXT_CHARS, ErrorBody, contract_schema

TEXT_MAX_CHARS = MAX_TEXT_CHARS
NFE_MAX = 8
STORED_VOICE = "fuzz-voice"

Json = Any
_json_leaves = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
any_json = st.recursive(
    _json_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


# ------------------------------------------------------------------------------------------------ schema → strategy
def from_schema(
    schema: dict[str, Any], defs: dict[str, Any], overrides: dict[str, st.SearchStrategy]
) -> st.SearchStrategy:
    """A strategy for values valid under `schema` (the contract's subset of JSON Schema)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return overrides[name] if name in overrides else from_schema(defs[name], defs, overrides)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:
        return st.one_of([from_schema(s, defs, overrides) for s in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "string":
        return _string(schema)
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: from_schema(v, defs, overrides) for k, v in props.items() if k in required},
            optional={k: from_schema(v, defs, overrides) for k, v in props.items() if k not in required},
        )
    raise NotImplementedError(f"schema construct not covered: {schema}")


def _string(schema: dict[str, Any]) -> st.SearchStrategy:
    low, high = schema.get("minLength", 0), schema.get("maxLength", 200)
    pattern = schema.get("pattern")
    if pattern and pattern.startswith("^") and pattern.endswith("$"):
        return st.from_regex(pattern, fullmatch=True).filter(lambda s: low <= len(s) <= high)
    text = st.text(min_size=low, max_size=min(high, 200))
    return text.filter(re.compile(pattern).search) if pattern else text


def input_schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    """The contract's input schemas by action, narrowed for time (see the module docstring), and its $defs."""
    contract = contract_schema()
    defs = copy.deepcopy(contract["$defs"])
    synth = defs["SynthesizeInput"]["properties"]
    synth["text"]["maxLength"] = TEXT_MAX_CHARS
    synth["nfe_step"]["maximum"] = NFE_MAX
    return {action: defs[names["input"]] for action, names in contract["actions"].items()}, defs


# ------------------------------------------------------------------------------------------------ the world
def _wav(seconds: float, rate: int = 24000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    # Speech-like: bursts of a tone separated by pauses.
    samples = (0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 0.7 * t) > 0)).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@dataclass
class FuzzWorld:
    """Interesting values the mutations draw from: real audio, bombs, loopback URLs, stored voice names."""

    base_url: str
    good_wav: bytes = field(default_factory=lambda: _wav(3.0))

    def audio_sources(self) -> st.SearchStrategy:
        from tests.worker.test_audio import _bomb_declared_599s_8ch_384k

        def b64(data):
            return base64.b64encode(data).decode()

        pool = [
            {"base64": b64(self.good_wav)},
            {"base64": b64(_bomb_declared_599s_8ch_384k())},
            {"base64": b64(b"not audio at all" * 30)},
            {"base64": "@@@"},
            {"url": f"{self.base_url}/good.wav"},
            {"url": f"{self.base_url}/missing.wav"},
            {"url": "http://169.254.169.254/latest/meta-data/"},
            {"url": "http://[2002:a9fe:a9fe::1]/x.wav"},
            {"url": "http://[::ffff:0:a9fe:a9fe]/x.wav"},
            {"url": "file:///etc/passwd"},
            {"url": "http://no-such-host.invalid/x.wav"},
        ]
        return st.sampled_from(pool)

    def strategies(self) -> st.SearchStrategy:
        """Valid inputs of every action, then mutated ones and outright garbage."""
        schemas, defs = input_schemas()
        overrides = {"AudioSource": self.audio_sources()}
        valid = st.one_of([from_schema(s, defs, overrides) for s in schemas.values()])
        names = st.sampled_from(["default", STORED_VOICE, "missing-voice"])
        valid = valid.flatmap(lambda job: _with_known_names(job, names))
        # Jobs that reach the audio path (fetch, decode, normalise, store) more often than chance would.
        text = st.text(min_size=1, max_size=TEXT_MAX_CHARS).filter(str.strip)
        transcript = st.text(min_size=1, max_size=MAX_REF_TEXT_CHARS).filter(str.strip)
        with_audio = st.one_of(
            st.fixed_dictionaries(
                {"text": text, "ref_audio": self.audio_sources(), "ref_text": transcript},
                optional={"delivery": st.sampled_from(["url", "base64"]), "nfe_step": st.integers(4, NFE_MAX)},
            ),
            st.fixed_dictionaries(
                {"action": st.just("upload_voice"), "name": names, "audio": self.audio_sources(), "text": transcript},
                optional={"overwrite": st.booleans()},
            ),
        )
        return st.one_of(valid, with_audio, valid.flatmap(mutated), any_json, st.lists(any_json, max_size=3))


def _with_known_names(job: dict, names: st.SearchStrategy) -> st.SearchStrategy:
    keys = [k for k in ("voice", "name") if k in job and job[k] is not None]
    if not keys:
        return st.just(job)
    return st.fixed_dictionaries({k: st.one_of(names, st.just(job[k])) for k in keys}).map(lambda d: {**job, **d})


def _deep(depth: int) -> Json:
    value: Json = []
    for _ in range(depth):
        value = [value]
    return value


MUTATIONS: list[Callable[[dict, st.DrawFn], dict]] = [
    lambda job, draw: {k: v for k, v in job.items() if k != draw(st.sampled_from(sorted(job) or ["x"]))},
    lambda job, draw: {**job, draw(st.text(min_size=1, max_size=30)): draw(any_json)},
    lambda job, draw: {**job, draw(st.sampled_from(sorted(job) or ["text"])): draw(any_json)},
    lambda job, draw: {
        **job,
        "action": draw(st.text(max_size=50) | st.sampled_from(["synthesize", "health", None, 1])),
    },
    lambda job, draw: {**job, draw(st.sampled_from(sorted(job) or ["text"])): _deep(draw(st.integers(30, 3000)))},
    # Over every length limit of the contract (texts within the limits are sized by TEXT_MAX_CHARS above).
    lambda job, draw: {
        **job,
        draw(st.sampled_from(sorted(job) or ["text"])): "x" * draw(st.integers(MAX_TEXT_CHARS + 1, 200_000)),
    },
    lambda job, draw: {
        **job,
        draw(st.sampled_from(["speed", "seed", "nfe_step", "cfg_strength"])): draw(
            st.sampled_from([float("nan"), float("inf"), -1e308, 2**70, True, "1"])
        ),
    },
    lambda job, draw: {**job, "text": draw(st.sampled_from(["   ", "\u200b", "\x00", "\ud800", "🙂" * 50, ""]))},
    lambda job, draw: {**job, "ref_audio": draw(any_json), "ref_text": draw(st.text(max_size=30) | st.none())},
]


@st.composite
def mutated(draw: st.DrawFn, job: dict) -> dict:
    for _ in range(draw(st.integers(1, 2))):
        job = draw(st.sampled_from(MUTATIONS))(dict(job), draw)
    return job


# ------------------------------------------------------------------------------------------------ running and checking
def outcome_of(items: list[Any]) -> str:
    """`ok`, or the error code; raises AssertionError on anything else (uncoded errors, `internal`, junk)."""
    assert items, "the job yielded nothing"
    assert all(isinstance(item, dict) for item in items), items
    errors = [item for item in items if "error" in item]
    if not errors:
        json.dumps(items, allow_nan=False)  # what RunPod could carry back
        return "ok"
    assert len(items) == 1, f"an error after results: {items!r:.300}"
    body = ErrorBody.model_validate_json(errors[0]["error"])  # coded: the error string is an ErrorBody
    assert body.code.value != "internal", f"internal error: {body.message}"
    return body.code.value


def check_bucket(keys: list[str], read: Callable[[str], bytes]) -> None:
    """Every voice's metadata points at audio that exists, and every voice audio object is referenced."""
    audio = {k for k in keys if k.startswith("voices/") and k.endswith(".wav")}
    referenced = set()
    for key in keys:
        if key.startswith("voices/") and key.endswith("/meta.json"):
            meta = json.loads(read(key))
            target = key.rsplit("/", 1)[0] + "/" + meta["audio"]
            assert target in audio, f"{key} points at missing audio {target}"
            referenced.add(target)
    assert audio == referenced, f"unreferenced audio: {sorted(audio - referenced)}"
    assert all(k.startswith(("voices/", "generated/")) for k in keys), keys


@contextmanager
def offline_dns() -> Iterator[None]:
    """Host names resolve to nothing (tests run offline; a resolver timeout would only slow the fuzz down)."""
    real = socket.getaddrinfo

    def resolve(host, *args, **kwargs):
        try:
            ipaddress.ip_address(str(host).strip("[]").split("%")[0])
        except ValueError:
            if host != "localhost":
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
        return real(host, *args, **kwargs)

    socket.getaddrinfo = resolve
    try:
        yield
    finally:
        socket.getaddrinfo = real


def audio_server(good_wav: bytes):
    """Loopback HTTP: /good.wav is a real clip, anything else 404; a context manager yielding the base URL."""
    return serve_get(lambda path: (200, good_wav) if path == "/good.wav" else (404, b"no"))
