"""`f5tts say --stream -o -`: audio to stdout (a player's pipe) as each chunk arrives; `--progress` off a terminal."""

from __future__ import annotations

import io
import wave

import httpx
import pytest
from f5tts_client import Client, JobState, cli
from typing_extensions import Buffer

from tests.clients.fake_runpod import API_KEY, ENDPOINT_URL, FakeRunPod, Plan, stream_chunk, stream_end, synth_output
from tests.clients.helpers import FAST, pcm_wav


class Pipe(io.BufferedIOBase):
    """stdout as a pipe into a player: not seekable; records how many /stream polls had been answered at each
    write, to show that audio leaves before the stream has ended."""

    name = "<pipe>"  # what TextIOWrapper reports as its file's name

    def __init__(self, fake: FakeRunPod) -> None:
        self.fake, self.data = fake, bytearray()
        self.polls_at_write: list[int] = []

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data: Buffer, /) -> int:
        self.data += data
        self.polls_at_write.append(self.fake.count("GET", "stream"))
        return memoryview(data).nbytes


@pytest.fixture
def fake() -> FakeRunPod:
    return FakeRunPod()


@pytest.fixture
def run_cli(fake: FakeRunPod, monkeypatch):
    monkeypatch.setenv("RUNPOD_API_KEY", API_KEY)
    monkeypatch.setenv("F5TTS_ENDPOINT_URL", ENDPOINT_URL)
    pipe = Pipe(fake)
    stdout = io.TextIOWrapper(pipe, write_through=True)
    stderr = io.StringIO()

    def factory(**options):
        return Client(http_client=httpx.Client(transport=httpx.MockTransport(fake)), **{**options, **FAST})

    def run(*argv: str) -> tuple[int, Pipe, str]:
        # Patched here, not at fixture setup: pytest's own capture re-installs sys.stdout when the test starts.
        with monkeypatch.context() as patch:
            patch.setattr("sys.stdout", stdout)
            patch.setattr("sys.stderr", stderr)
            code = cli.main(list(argv), client_factory=factory)
        return code, pipe, stderr.getvalue()

    return run


def test_stream_to_stdout_plays_as_chunks_arrive(run_cli, fake: FakeRunPod) -> None:
    fake.plan(
        Plan(stream=[[stream_chunk(0, pcm_wav(2400, 100))], [stream_chunk(1, pcm_wav(4800, 200))], [stream_end(2)]])
    )
    code, pipe, err = run_cli("say", "One. Two.", "--stream", "-o", "-")
    assert code == 0, err
    # One WAV stream: an open-ended header (a pipe cannot be patched), then each chunk's PCM as it came.
    with wave.open(io.BytesIO(bytes(pipe.data))) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (24000, 1, 2)
        frames = w.readframes(7200)
    assert frames == (100).to_bytes(2, "little") * 2400 + (200).to_bytes(2, "little") * 4800
    assert pipe.polls_at_write[0] < pipe.polls_at_write[-1]  # the first chunk left before the second was asked for
    assert "in 2 chunks" in err  # the summary goes to stderr: stdout carries the audio


def test_whole_result_to_stdout(run_cli, fake: FakeRunPod) -> None:
    fake.plan(Plan(final={"status": "COMPLETED", "output": [synth_output(format="wav")]}))
    code, pipe, err = run_cli("say", "Hello.", "-o", "-")
    assert code == 0, err
    assert bytes(pipe.data).startswith(b"RIFF") and "voice" in err


def test_progress_flag_writes_plain_lines_off_a_terminal() -> None:
    log = io.StringIO()
    progress = cli.Progress(log, enabled=True)
    for status in ("IN_QUEUE", "IN_QUEUE", "IN_PROGRESS"):
        progress.job_state(JobState(id="j1", status=status))
    progress.done()
    lines = log.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == ["job j1 queued", "job j1 running"]  # one line per change
    assert "\033" not in log.getvalue() and "\r" not in log.getvalue()
