"""`AudioStream.save()` / `AsyncAudioStream.save()`: one playable file written as the chunks arrive; the stream's
polling after a long-polled answer."""

from __future__ import annotations

import time
import wave

import pytest

from tests.clients.fake_runpod import Plan, stream_chunk, stream_end
from tests.clients.helpers import collect, pcm_wav

pytestmark = pytest.mark.anyio


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


async def test_an_answer_the_api_held_is_followed_without_a_sleep(make_client, fake, flavour, monkeypatch):
    """A long-polled `/stream` (the API held the request for its wait) is asked again at once; with a 5 s poll
    interval, three empty answers would otherwise take 15 s."""
    module = f"f5tts_client._{flavour}._stream"
    monkeypatch.setattr(f"{module}.LONG_POLL_S", 0.0)  # every answer counts as held by the API
    fake.plan(Plan(stream=[[], [], [], [stream_chunk(0, pcm_wav(10, 1))], [stream_end(1)]]))
    stream = make_client(poll_interval=5.0, poll_interval_max=5.0).synthesize_stream("One.")
    started = time.monotonic()
    chunks = await collect(stream)
    assert [c.index for c in chunks] == [0] and time.monotonic() - started < 2.0
