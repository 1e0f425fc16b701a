"""Every action end to end through WorkerService: the real f5-tts loaders on the tiny checkpoint, a real S3
protocol server (moto, loopback) reached with boto3, presigned URLs fetched over HTTP."""

from __future__ import annotations

import base64
import io
import json

import httpx
import numpy as np
import pytest
import soundfile as sf

from worker.schema import ErrorBody

pytestmark = pytest.mark.timeout(300)

SENTENCES = (
    "The quick brown fox jumps over the lazy dog. "
    "A second sentence follows the first one, so the text needs more than one chunk. "
    "Here is a third sentence, longer again, to be sure that chunking happens at least twice. "
    "And a fourth, because streaming must yield several pieces of audio before it ends."
)


def run_one(service, job_input):
    items = list(service.run(job_input))
    assert len(items) == 1, items
    return items[0]


def error_of(item) -> ErrorBody:
    assert set(item) == {"error"}, item
    return ErrorBody.model_validate_json(item["error"])


def decode(data: bytes) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    return samples, rate


def test_health_reports_model_and_storage(s3_service):
    out = run_one(s3_service, {"action": "health"})
    assert out["status"] == "ok"
    assert out["storage"] == "s3"
    assert out["sample_rate"] == 24000
    assert out["device"] == "cpu"


def test_synthesize_default_voice_delivers_presigned_url(s3_service, bucket_keys):
    out = run_one(s3_service, {"text": "Hello world.", "seed": 7})
    assert out["voice"] == "default" and out["seed"] == 7 and out["chunks"] == 1
    assert out["key"].startswith("generated/") and out["key"].endswith(".wav")
    assert out["key"] in bucket_keys()
    response = httpx.get(out["audio_url"], timeout=10)
    assert response.status_code == 200
    samples, rate = decode(response.content)
    assert rate == out["sample_rate"] == 24000
    assert abs(len(samples) / rate - out["duration"]) < 0.01
    assert out["timings"]["inference_s"] > 0 and out["timings"]["total_s"] >= out["timings"]["inference_s"]


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "ogg"])
def test_every_format_decodes_with_the_reported_duration(s3_service, fmt, ffprobe_duration):
    out = run_one(s3_service, {"text": "Every format must decode.", "format": fmt, "delivery": "base64", "seed": 1})
    data = base64.b64decode(out["audio_base64"])
    assert out["format"] == fmt
    assert abs(ffprobe_duration(data) - out["duration"]) < 0.08


def test_same_seed_same_audio(s3_service):
    job = {"text": "Reproducible.", "seed": 123, "delivery": "base64"}
    first, second = run_one(s3_service, job), run_one(s3_service, job)
    assert first["audio_base64"] == second["audio_base64"]


def test_very_short_text_still_yields_audio(s3_service):
    out = run_one(s3_service, {"text": "Hi.", "delivery": "base64"})
    samples, _ = decode(base64.b64decode(out["audio_base64"]))
    assert len(samples) > 0 and out["duration"] > 0


def test_long_text_is_chunked(s3_service):
    out = run_one(s3_service, {"text": SENTENCES * 2, "delivery": "base64", "nfe_step": 4})
    assert out["chunks"] > 1


def test_streaming_yields_several_chunks_then_a_summary(s3_service):
    items = list(s3_service.run({"text": SENTENCES, "stream": True, "nfe_step": 4, "seed": 3}))
    chunks, end = items[:-1], items[-1]
    assert len(chunks) > 1
    assert [c["index"] for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk["type"] == "chunk"
        samples, rate = decode(base64.b64decode(chunk["audio_base64"]))
        assert abs(len(samples) / rate - chunk["duration"]) < 0.01
    assert end["type"] == "end" and end["chunks"] == len(chunks) and end["seed"] == 3
    assert abs(end["duration"] - sum(c["duration"] for c in chunks)) < 0.01


def test_voice_upload_use_list_delete(s3_service, bucket_keys, reference_wav):
    audio_b64 = base64.b64encode(reference_wav).decode()
    uploaded = run_one(
        s3_service,
        {
            "action": "upload_voice",
            "name": "alice",
            "audio": {"base64": audio_b64},
            "text": "Some call me nature, others call me mother nature.",
        },
    )
    assert uploaded["name"] == "alice" and not uploaded["builtin"] and uploaded["sample_rate"] == 24000
    assert any(k.startswith("voices/alice/") and k.endswith("meta.json") for k in bucket_keys())

    again = run_one(
        s3_service, {"action": "upload_voice", "name": "alice", "audio": {"base64": audio_b64}, "text": "x y z."}
    )
    assert error_of(again).code == "voice_exists"

    listed = run_one(s3_service, {"action": "list_voices"})["voices"]
    by_name = {v["name"]: v for v in listed}
    assert by_name["default"]["builtin"] and not by_name["alice"]["builtin"]

    spoken = run_one(s3_service, {"text": "Now in Alice's voice.", "voice": "alice", "delivery": "base64"})
    assert spoken["voice"] == "alice" and spoken["duration"] > 0

    deleted = run_one(s3_service, {"action": "delete_voice", "name": "alice"})
    assert deleted == {"name": "alice", "deleted": True}
    assert not [k for k in bucket_keys() if k.startswith("voices/alice/")]
    assert error_of(run_one(s3_service, {"text": "Gone.", "voice": "alice"})).code == "voice_not_found"


def test_inline_reference_by_base64(s3_service, reference_wav):
    out = run_one(
        s3_service,
        {
            "text": "Cloned from an inline clip.",
            "ref_audio": {"base64": base64.b64encode(reference_wav).decode()},
            "ref_text": "Some call me nature, others call me mother nature.",
            "delivery": "base64",
        },
    )
    assert out["voice"] == "inline" and out["duration"] > 0


def test_local_mode_without_bucket_uses_base64_and_local_voices(local_service, reference_wav):
    out = run_one(local_service, {"text": "No bucket here."})
    assert "audio_base64" in out and "audio_url" not in out
    assert error_of(run_one(local_service, {"text": "x", "delivery": "url"})).code == "invalid_input"
    run_one(
        local_service,
        {
            "action": "upload_voice",
            "name": "bob",
            "audio": {"base64": base64.b64encode(reference_wav).decode()},
            "text": "Some call me nature, others call me mother nature.",
        },
    )
    assert "bob" in {v["name"] for v in run_one(local_service, {"action": "list_voices"})["voices"]}


def test_inline_result_over_the_limit_is_refused(tiny_limit_service):
    out = run_one(tiny_limit_service, {"text": "This result is larger than the inline limit.", "delivery": "base64"})
    assert error_of(out).code == "output_too_large"


def test_model_failure_is_kept_and_returned_to_every_job(failed_service):
    for job in ({"text": "hi"}, {"action": "health"}, {"action": "list_voices"}):
        body = error_of(run_one(failed_service, job))
        assert body.code == "model_unavailable"
        assert "no such checkpoint" in body.message


def test_an_unexpected_failure_is_internal_with_a_plain_message_and_the_log_has_the_traceback(
    s3_service, monkeypatch, caplog
):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("secret detail of the failure")

    monkeypatch.setattr(s3_service.voices, "list", broken)
    with caplog.at_level("ERROR", logger="worker"):
        body = json.loads(run_one(s3_service, {"action": "list_voices"})["error"])
    assert body == {"code": "internal", "message": "internal error; see the worker log", "field": None}
    assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records)


class _StopAfterFirstChunk:
    """A `cancelled` flag that RunPod 'sets' once the first chunk has been computed."""

    def __init__(self) -> None:
        self.checks = 0

    def is_set(self) -> bool:
        self.checks += 1
        return self.checks > 1


def test_a_stopped_job_ends_between_chunks_without_result_or_object(s3_service, bucket_keys):
    before = bucket_keys()
    flag = _StopAfterFirstChunk()
    items = list(s3_service.run({"text": SENTENCES, "nfe_step": 4, "delivery": "url"}, flag))
    assert items == []
    assert flag.checks == 2, "the job must stop at the first check after RunPod stopped it"
    assert bucket_keys() == before
    assert run_one(s3_service, {"action": "health"})["status"] == "ok"
