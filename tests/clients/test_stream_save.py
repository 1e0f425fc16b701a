"""`AudioStream.save()` / `AsyncAudioStream.save()`: one playable file written as the chunks arrive."""

from __future__ import annotations

import io
import wave

import pytest

from tests.clients.fake_runpod import Plan, stream_chunk, stream_end

pytestmark = pytest.mark.anyio


def pcm_wav(frames: int, value: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(24000)
        w.writeframes(value.to_bytes(2, "little", signed=True) * frames)
    return buffer.getvalue()


async def test_save_joins_the_chunks_into_one_wav_as_they_arrive(make_client, fake, tmp_path):
    fake.plan(Plan(stream=[[stream_chunk(0, pcm_wav(100, 7))], [stream_chunk(1, pcm_wav(300, 9))], [stream_end(2)]]))
    target = tmp_path / "out.wav"
    stream = make_client().synthesize_stream("One. Two.", seed=3)
    summary = stream.save(target)
    summary = await summary if hasattr(summary, "__await__") else summary
    assert summary.chunks == 2 and stream.finished
    with wave.open(str(target)) as w:
        assert w.getnframes() == 400
        frames = w.readframes(400)
    assert frames == (7).to_bytes(2, "little") * 100 + (9).to_bytes(2, "little") * 300
