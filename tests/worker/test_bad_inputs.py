"""Table of hostile and careless inputs: each gets its error code, the worker keeps serving, and the bucket
holds no new object afterwards."""

from __future__ import annotations

import base64

import pytest

from worker.schema import ErrorBody

GOOD_TRANSCRIPT = "Some call me nature, others call me mother nature."
DEEP: list = []
_level = DEEP
for _ in range(5000):  # deeper than Python's recursion limit
    _level.append([])
    _level = _level[0]
NOT_AUDIO = base64.b64encode(b"this is plain text, not a sound file " * 20).decode()

CASES = [
    # (id, job input, expected code, expected field or None)
    ("missing text", {}, "invalid_input", "text"),
    ("empty text", {"text": "   "}, "invalid_input", None),
    ("text not a string", {"text": ["a"]}, "invalid_input", "text"),
    ("input not an object", "synthesize this", "invalid_input", None),
    ("unknown action", {"action": "sing", "text": "la"}, "invalid_input", "action"),
    ("unknown field", {"text": "hi", "sped": 2}, "invalid_input", "sped"),
    ("unknown voice", {"text": "hi", "voice": "nobody"}, "voice_not_found", "voice"),
    (
        "voice and ref_audio",
        {"text": "hi", "voice": "default", "ref_audio": {"url": "https://example.com/a.wav"}},
        "invalid_input",
        None,
    ),
    (
        "ref_audio with both url and base64",
        {"text": "hi", "ref_audio": {"url": "https://e.com/a.wav", "base64": "AAAA"}},
        "invalid_input",
        "ref_audio",
    ),
    ("ref_audio without ref_text", {"text": "hi", "ref_audio": {"base64": NOT_AUDIO}}, "invalid_input", "ref_text"),
    (
        "malformed base64",
        {"text": "hi", "ref_audio": {"base64": "@@not base64!!"}, "ref_text": "x"},
        "invalid_input",
        "ref_audio.base64",
    ),
    (
        "oversize base64",
        {"text": "hi", "ref_audio": {"base64": "A" * 3_000_000}, "ref_text": "x"},
        "audio_too_large",
        None,
    ),
    ("non-audio bytes", {"text": "hi", "ref_audio": {"base64": NOT_AUDIO}, "ref_text": "x"}, "audio_unreadable", None),
    (
        "url to loopback",
        {"text": "hi", "ref_audio": {"url": "http://127.0.0.1:9/a.wav"}, "ref_text": "x"},
        "fetch_failed",
        None,
    ),
    (
        "url to cloud metadata",
        {"text": "hi", "ref_audio": {"url": "http://169.254.169.254/latest/meta-data/"}, "ref_text": "x"},
        "fetch_failed",
        None,
    ),
    (
        "url not http",
        {"text": "hi", "ref_audio": {"url": "file:///etc/passwd"}, "ref_text": "x"},
        "invalid_input",
        "ref_audio.url",
    ),
    (
        "url to 6to4-wrapped metadata",
        {"text": "hi", "ref_audio": {"url": "http://[2002:a9fe:a9fe::1]/a.wav"}, "ref_text": "x"},
        "fetch_failed",
        "ref_audio.url",
    ),
    ("deep nesting", {"text": "hi", "seed": DEEP}, "invalid_input", None),
    ("huge action", {"action": "x" * 1_000_000}, "invalid_input", "action"),
    ("huge unknown field", {"text": "hi", "y" * 1_000_000: 1}, "invalid_input", "y" * 80),
    ("voice name traversal", {"text": "hi", "voice": "../x"}, "invalid_input", "voice"),
    (
        "upload name traversal",
        {"action": "upload_voice", "name": "../x", "audio": {"base64": NOT_AUDIO}, "text": "x"},
        "invalid_input",
        "name",
    ),
    (
        "upload name with slash",
        {"action": "upload_voice", "name": "a/b", "audio": {"base64": NOT_AUDIO}, "text": "x"},
        "invalid_input",
        "name",
    ),
    (
        "upload name uppercase",
        {"action": "upload_voice", "name": "Alice", "audio": {"base64": NOT_AUDIO}, "text": "x"},
        "invalid_input",
        "name",
    ),
    (
        "upload without transcript",
        {"action": "upload_voice", "name": "carol", "audio": {"base64": NOT_AUDIO}},
        "invalid_input",
        "text",
    ),
    (
        "upload non-audio",
        {"action": "upload_voice", "name": "carol", "audio": {"base64": NOT_AUDIO}, "text": "x"},
        "audio_unreadable",
        None,
    ),
    (
        "upload over the built-in",
        {"action": "upload_voice", "name": "default", "audio": {"base64": NOT_AUDIO}, "text": "x", "overwrite": True},
        "voice_exists",
        "name",
    ),
    ("delete built-in", {"action": "delete_voice", "name": "default"}, "invalid_input", None),
    ("delete unknown", {"action": "delete_voice", "name": "nobody"}, "voice_not_found", None),
    ("speed too high", {"text": "hi", "speed": 50}, "invalid_input", "speed"),
    ("nfe_step zero", {"text": "hi", "nfe_step": 0}, "invalid_input", "nfe_step"),
    ("nfe_step huge", {"text": "hi", "nfe_step": 10_000}, "invalid_input", "nfe_step"),
    ("negative seed", {"text": "hi", "seed": -1}, "invalid_input", "seed"),
    ("cfg out of range", {"text": "hi", "cfg_strength": -3}, "invalid_input", "cfg_strength"),
    ("unknown format", {"text": "hi", "format": "aiff"}, "invalid_input", "format"),
    ("unknown delivery", {"text": "hi", "delivery": "email"}, "invalid_input", "delivery"),
    ("text too long", {"text": "a" * 6000}, "invalid_input", "text"),
    ("nan speed", {"text": "hi", "speed": float("nan")}, "invalid_input", "speed"),
]


@pytest.mark.parametrize("job_input, code, field", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_its_code_and_changes_nothing(s3_service, bucket_keys, job_input, code, field):
    before = bucket_keys()
    items = list(s3_service.run(job_input))
    assert len(items) == 1 and set(items[0]) == {"error"}, items
    # Caller input is echoed cut short: a megabyte of it makes an error of a few hundred characters.
    assert len(items[0]["error"]) < 600
    body = ErrorBody.model_validate_json(items[0]["error"])
    assert body.code == code, body
    if field is not None:
        assert body.field == field, body
    assert body.message and "Traceback" not in body.message
    assert bucket_keys() == before, "a refused job must leave the bucket as it was"
    # ... and the worker keeps serving.
    health = list(s3_service.run({"action": "health"}))
    assert health[0]["status"] == "ok"


def test_storage_unreachable_is_a_storage_error_and_the_worker_keeps_serving(unreachable_storage_service):
    items = list(unreachable_storage_service.run({"text": "Nowhere to put this.", "delivery": "url"}))
    body = ErrorBody.model_validate_json(items[0]["error"])
    assert body.code == "storage_error"
    store = unreachable_storage_service.store
    # A plain message: no credential, and no endpoint, bucket or key (the worker's log has those).
    for internal in ("test-secret-never-shown", "AKIAUNREACHABLE", store.endpoint_url, "nowhere", "generated/"):
        assert internal not in body.message, body.message
    health = list(unreachable_storage_service.run({"action": "health"}))
    assert health[0]["status"] == "ok"


@pytest.mark.parametrize("action", ["synthesize", "upload_voice"])
def test_a_decode_bomb_is_audio_too_large_for_both_actions(s3_service, bucket_keys, action):
    from tests.worker.test_audio import _bomb_declared_599s_8ch_384k

    bomb = {"base64": base64.b64encode(_bomb_declared_599s_8ch_384k()).decode()}
    job = (
        {"text": "hi", "ref_audio": bomb, "ref_text": "x"}
        if action == "synthesize"
        else {"action": "upload_voice", "name": "bomb", "audio": bomb, "text": "x"}
    )
    before = bucket_keys()
    items = list(s3_service.run(job))
    body = ErrorBody.model_validate_json(items[0]["error"])
    assert (body.code, body.field) == ("audio_too_large", "ref_audio" if action == "synthesize" else "audio")
    assert bucket_keys() == before


@pytest.mark.parametrize("blank", [" ", "\t\n", "\u3000", "\x1c"], ids=["space", "tab-newline", "ideographic", "x1c"])
@pytest.mark.parametrize("action", ["synthesize", "upload_voice"])
def test_a_blank_transcript_is_a_missing_transcript(s3_service, bucket_keys, reference_wav, action, blank):
    # Real audio, so the job gets past decoding: a blank transcript used to slip past the "transcript required"
    # check (it is not None) into a transcription that is switched off (`internal` in the 10,000-input fuzz).
    audio = {"base64": base64.b64encode(reference_wav).decode()}
    job = (
        {"text": "hi", "ref_audio": audio, "ref_text": blank}
        if action == "synthesize"
        else {"action": "upload_voice", "name": "blank", "audio": audio, "text": blank, "overwrite": True}
    )
    before = bucket_keys()
    [item] = list(s3_service.run(job))
    body = ErrorBody.model_validate_json(item["error"])
    assert (body.code, body.field) == ("invalid_input", "ref_text" if action == "synthesize" else "text"), body
    assert "blank" in body.message, body.message
    assert bucket_keys() == before
