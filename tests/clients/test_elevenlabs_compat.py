"""The official `elevenlabs` SDK, unchanged, against the load-balancer devstack: RunPod's load balancer emulated
in front of a real worker in http mode (tiny model, tiny word aligner), the ElevenLabs API under `/elevenlabs`.
What an ElevenLabs app does once its base URL points here, with the Authorization header RunPod needs.

The errors only a differently set worker gives (its own key, one busy slot, a small body cap) come from a second,
small devstack started once for this module (`guarded`)."""

from __future__ import annotations

import base64
import itertools
import json
import re
from collections.abc import Iterator

import pytest
from elevenlabs import ElevenLabs, VoiceSettings
from elevenlabs.core import ApiError, RequestOptions
from elevenlabs.errors import UnprocessableEntityError
from websockets.sync.client import connect as ws_connect

from devstack.testing import StackHandle, running_stack
from tests.support import REPO_ROOT, decoded_seconds
from worker.model_facts import builtin_audio_file

pytestmark = [pytest.mark.timeout(600), pytest.mark.integration]

TEXT = "Hello from F5, speaking as an ElevenLabs voice."
F5: RequestOptions = {"additional_body_parameters": {"nfe_step": 4}}  # F5-TTS's own fields, as extra body fields
TRANSCRIPT = "Some call me nature, others call me mother nature."  # what f5-tts's example clip says


@pytest.fixture(scope="module")
def client(lb_devstack) -> ElevenLabs:
    # On RunPod the load balancer checks `Authorization: Bearer <RunPod key>`; the SDK's own `xi-api-key` header
    # (its api_key) is what a worker with F5TTS_API_KEY checks instead.
    return ElevenLabs(
        base_url=f"{lb_devstack.base_url}/elevenlabs",
        api_key=lb_devstack.api_key,
        headers={"Authorization": f"Bearer {lb_devstack.api_key}"},
        timeout=120,
    )


def joined(chunks: Iterator[bytes]) -> bytes:
    return b"".join(chunks)


def test_convert_and_stream_are_the_same_bytes_and_the_seed_decides_them(client):
    whole = joined(client.text_to_speech.convert("default", text=TEXT, seed=21, request_options=F5))
    assert decoded_seconds(whole) > 0.5  # mp3_44100_128, ElevenLabs' default
    assert joined(client.text_to_speech.stream("default", text=TEXT, seed=21, request_options=F5)) == whole
    other = joined(client.text_to_speech.convert("default", text=TEXT, seed=22, request_options=F5))
    assert other != whole


def test_telephony_formats_and_speed(client):
    def say(output_format: str, speed: float = 1.0) -> bytes:
        return joined(
            client.text_to_speech.convert(
                "default",
                text=TEXT,
                seed=3,
                model_id="eleven_flash_v2_5",
                output_format=output_format,
                voice_settings=VoiceSettings(speed=speed),
                request_options=F5,
            )
        )

    ulaw = say("ulaw_8000")  # raw μ-law, one byte a sample at 8 kHz
    pcm = say("pcm_16000")  # raw 16-bit at 16 kHz
    assert len(ulaw) / 8000 == pytest.approx(len(pcm) / 2 / 16000, abs=0.01)
    assert len(say("pcm_16000", speed=2.0)) < 0.6 * len(pcm)


def test_timestamps_whole_and_streamed_cover_every_character(client):
    text = "Ready? Set, go! The fox runs far away into the forest to hide from the dog."
    whole = client.text_to_speech.convert_with_timestamps(
        "default", text=text, seed=5, output_format="pcm_24000", request_options=F5
    )
    audio = base64.b64decode(whole.audio_base_64)
    assert whole.alignment is not None and whole.alignment.characters == list(text)
    starts, ends = whole.alignment.character_start_times_seconds, whole.alignment.character_end_times_seconds
    assert all(a <= b for a, b in itertools.pairwise(starts))
    assert starts[0] >= 0 and max(ends) <= len(audio) / 2 / 24000 + 1e-3
    normalized = whole.normalized_alignment
    assert normalized is not None and normalized.characters == list(" ".join(text.split()))  # the words as spoken
    n_starts, n_ends = normalized.character_start_times_seconds, normalized.character_end_times_seconds
    assert len(n_starts) == len(n_ends) == len(normalized.characters)
    assert all(a <= b for a, b in itertools.pairwise(n_starts)) and all(
        s <= e for s, e in zip(n_starts, n_ends, strict=True)
    )
    assert n_starts[0] >= 0 and max(n_ends) <= len(audio) / 2 / 24000 + 1e-3

    chunks = list(
        client.text_to_speech.stream_with_timestamps(
            "default", text=text, seed=5, output_format="pcm_24000", request_options=F5
        )
    )
    assert b"".join(base64.b64decode(c.audio_base_64) for c in chunks) == audio
    streamed = [ch for c in chunks if c.alignment for ch in c.alignment.characters]
    assert streamed == list(text)


def test_voices_add_list_search_get_speak_delete(client):
    clip = builtin_audio_file().read_bytes()
    added = client.voices.ivc.create(
        name="Nature Clip",
        files=[("nature.wav", clip, "audio/wav")],
        description="The f5-tts example clip.",
        labels={"transcript": TRANSCRIPT, "accent": "american"},
        request_options={"max_retries": 0},
    )
    assert added.voice_id == "nature-clip"
    try:
        assert "nature-clip" in [v.voice_id for v in client.voices.get_all().voices]
        voice = client.voices.get("nature-clip")  # as it was added: its description and labels kept
        assert voice.labels == {"transcript": TRANSCRIPT, "accent": "american"}
        assert voice.description == "The f5-tts example clip."
        searched = client.voices.search(search="nature")  # GET /v2/voices
        assert [v.voice_id for v in searched.voices] == ["nature-clip"] and searched.has_more is False
        assert searched.voices[0].description == voice.description
        assert [v.voice_id for v in client.voices.search(search="nobody").voices] == []
        audio = joined(client.text_to_speech.convert("nature-clip", text=TEXT, seed=1, request_options=F5))
        assert decoded_seconds(audio) > 0.3
        with pytest.raises(ApiError) as caught:
            client.voices.ivc.create(
                name="nature clip",
                files=[("nature.wav", clip, "audio/wav")],
                labels={"transcript": TRANSCRIPT},
                request_options={"max_retries": 0},  # the SDK retries a 409, and its retry loses the form
            )
        assert caught.value.status_code == 409
        assert caught.value.body["detail"]["status"] == "voice_exists"
    finally:
        assert client.voices.delete("nature-clip").status == "ok"
    for gone in (client.voices.get, client.voices.delete):  # GET and DELETE of a voice that is not there
        with pytest.raises(ApiError) as caught:
            gone("nature-clip", request_options={"max_retries": 0})
        assert caught.value.status_code == 404
        assert caught.value.body["detail"] | {"message": ""} == {
            "status": "voice_not_found",
            "message": "",
            "param": "voice_id",
        }


def test_a_voice_without_its_transcript_gets_a_400_that_says_how_to_send_it(client):
    with pytest.raises(ApiError) as caught:
        client.voices.ivc.create(name="no-transcript", files=[("x.wav", builtin_audio_file().read_bytes())])
    assert caught.value.status_code == 400
    detail = caught.value.body["detail"]
    assert detail["status"] == "invalid_input" and detail["param"] == "labels"
    assert 'labels={"transcript"' in detail["message"]


def test_errors_have_elevenlabs_shape_with_our_codes(client, lb_devstack):
    with pytest.raises(ApiError) as caught:
        joined(client.text_to_speech.convert("nobody", text=TEXT))
    assert caught.value.status_code == 404
    assert caught.value.body == {
        "detail": {"status": "voice_not_found", "message": caught.value.body["detail"]["message"], "param": "voice_id"}
    }
    with pytest.raises(ApiError) as caught:
        client.text_to_speech.convert_with_timestamps("default", text=TEXT, output_format="mp3_1_1")
    assert caught.value.status_code == 400 and caught.value.body["detail"]["param"] == "output_format"
    with pytest.raises(UnprocessableEntityError) as unprocessable:
        joined(
            client.text_to_speech.stream(
                "default", text=TEXT, request_options={"additional_body_parameters": {"nfe_steps": 4}}
            )
        )
    assert unprocessable.value.body["detail"]["status"] == "invalid_input"
    # A wrong RunPod key is refused by the load balancer itself, before any worker.
    wrong = ElevenLabs(base_url=f"{lb_devstack.base_url}/elevenlabs", headers={"Authorization": "Bearer wrong"})
    with pytest.raises(ApiError) as caught:
        wrong.models.list()
    assert caught.value.status_code == 401


def test_the_models_list_has_the_one_tts_model(client):
    models = client.models.list()
    assert [m.model_id for m in models] == ["f5-tts"] and models[0].can_do_text_to_speech


def test_the_docs_example_runs_as_written(lb_devstack, tmp_path, monkeypatch):
    """docs/http.md's ElevenLabs example, against the devstack: its URL and key are the devstack's."""
    docs = (REPO_ROOT / "docs" / "http.md").read_text()
    section = docs[docs.index("## ElevenLabs SDK and apps") :]
    block = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert block, "docs/http.md has lost its ElevenLabs example"
    code = block.group(1).replace("https://<ENDPOINT_ID>.api.runpod.ai", lb_devstack.base_url)
    code = code.replace("<RUNPOD_API_KEY>", lb_devstack.api_key)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "alice.wav").write_bytes(builtin_audio_file().read_bytes())
    namespace: dict[str, object] = {}
    try:
        exec(compile(code, "docs/http.md", "exec"), namespace)
    finally:
        client = namespace.get("client")
        if isinstance(client, ElevenLabs):
            client.voices.delete("alice-smith")
    assert decoded_seconds((tmp_path / "hello.mp3").read_bytes()) > 0.3


# ------------------------------------------------------------------------------------------------ a guarded worker
WORKER_KEY = "worker-own-key"


@pytest.fixture(scope="module")
def guarded() -> Iterator[StackHandle]:
    """A load-balancer devstack whose worker checks its own key (F5TTS_API_KEY), has one synthesis slot that a
    request waits 0.2 s for, and takes request bodies up to 1 MB."""
    worker_env = {
        "F5TTS_API_KEY": WORKER_KEY,
        "F5TTS_CONCURRENCY": "1",
        "F5TTS_BUSY_WAIT_S": "0.2",
        "F5TTS_MAX_REQUEST_BYTES": str(2**20),
    }
    with running_stack(1, endpoint_type="load_balancer", worker_env=worker_env) as stack:
        yield stack


def guarded_client(stack: StackHandle, worker_key: str = WORKER_KEY) -> ElevenLabs:
    return ElevenLabs(
        base_url=f"{stack.base_url}/elevenlabs",
        api_key=worker_key,  # sent as xi-api-key: the worker's own key
        headers={"Authorization": f"Bearer {stack.api_key}"},  # RunPod's, checked by the load balancer
        timeout=120,
    )


def test_a_wrong_xi_api_key_is_the_workers_own_401_in_elevenlabs_shape(guarded):
    assert [m.model_id for m in guarded_client(guarded).models.list()] == ["f5-tts"]  # the right key passes
    with pytest.raises(ApiError) as caught:
        guarded_client(guarded, worker_key="wrong").models.list(request_options={"max_retries": 0})
    assert caught.value.status_code == 401
    assert caught.value.body["detail"]["status"] == "invalid_api_key"
    assert "xi-api-key" in caught.value.body["detail"]["message"] and WORKER_KEY not in json.dumps(caught.value.body)


def test_a_body_over_the_workers_cap_is_a_413_in_elevenlabs_shape(guarded):
    clip = builtin_audio_file().read_bytes()
    padded = clip + b"\0" * (2**20 + 1 - len(clip))  # over 1 MB, well under the load balancer's 30 MB
    with pytest.raises(ApiError) as caught:
        guarded_client(guarded).voices.ivc.create(
            name="too-big", files=[("big.wav", padded, "audio/wav")], labels={"transcript": TRANSCRIPT}
        )
    assert caught.value.status_code == 413
    assert (
        caught.value.body["detail"]["status"] == "audio_too_large" and "1 MB" in caught.value.body["detail"]["message"]
    )


def test_with_every_slot_busy_a_request_gets_503_overloaded_with_retry_after(guarded):
    # A realtime session holds the one slot from its first message to its close.
    headers = {"Authorization": f"Bearer {guarded.api_key}", "xi-api-key": WORKER_KEY}
    ws_url = guarded.base_url.replace("http://", "ws://") + "/elevenlabs/v1/text-to-speech/default/stream-input"
    with ws_connect(ws_url, additional_headers=headers, proxy=None, open_timeout=60) as holder:
        holder.send(json.dumps({"text": " ", "nfe_step": 4}))
        holder.send(json.dumps({"text": TEXT, "flush": True}))
        assert "audio" in json.loads(holder.recv(timeout=120))  # speaking: the slot is the session's
        with pytest.raises(ApiError) as caught:
            joined(
                guarded_client(guarded).text_to_speech.convert("default", text=TEXT, request_options={"max_retries": 0})
            )
        holder.send(json.dumps({"text": ""}))
    assert caught.value.status_code == 503
    assert caught.value.body["detail"]["status"] == "overloaded"
    assert caught.value.headers is not None and int(caught.value.headers["retry-after"]) > 0
    joined(guarded_client(guarded).text_to_speech.convert("default", text=TEXT, request_options=F5))  # free again
