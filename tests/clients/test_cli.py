"""The `f5tts` command line: format from the extension, streaming into one playable file, the progress line, and
exit codes and messages a shell user can act on. Scripted API first (precise), then the real devstack."""

from __future__ import annotations

import functools
import io
import json
import os
import subprocess
import sys
import wave

import httpx
import pytest
from f5tts_client import JobState, cli

from tests.clients.fake_runpod import FakeRunPod, Plan, stream_chunk, stream_end, synth_output
from tests.clients.helpers import pcm_wav
from worker.model_facts import BUILTIN_REFERENCE_TEXT, builtin_audio_file


def sent(fake: FakeRunPod) -> dict:
    return fake.jobs[max(fake.jobs)]["input"]


@pytest.mark.parametrize(
    ("output", "fmt"), [("out.mp3", "mp3"), ("out.OGG", "ogg"), ("out.opus", "ogg"), ("out.flac", "flac")]
)
def test_say_picks_the_format_from_the_extension(run_cli, fake, tmp_path, output, fmt):
    fake.plan(Plan(final={"status": "COMPLETED", "output": [synth_output(format=fmt)]}))
    code, out, err = run_cli("say", "Hello.", "--voice", "alice", "--speed", "1.5", "-o", str(tmp_path / output))
    assert code == 0, err
    assert sent(fake) == {"action": "synthesize", "text": "Hello.", "voice": "alice", "speed": 1.5, "format": fmt}
    assert (tmp_path / output).read_bytes().startswith(b"RIFF")  # what the (fake) API sent, as is
    assert "1.25 s" in out and "voice default" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["say", "Hi", "-o", "out.xyz"], "cannot tell the audio format"),
        (["say", "Hi", "-o", "out.mp3", "--format", "wav"], "looks like mp3"),
        (["say", "Hi", "--stream", "-o", "out.flac"], "flac cannot be streamed"),
        (["say", "Hi", "--nfe-step", "1000", "-o", "out.wav"], "nfe_step"),  # refused before sending
    ],
)
def test_usage_errors_exit_2_with_a_message(run_cli, fake, argv, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _out, err = run_cli(*argv)
    assert code == cli.EXIT_USAGE
    assert message in err and err.startswith("f5tts: error:")
    assert fake.accepted_jobs == 0


@pytest.mark.parametrize(
    ("error", "exit_code", "hint"),
    [
        ('{"code": "voice_not_found", "message": "voice \'bob\' does not exist", "field": "voice"}', 4, "voices list"),
        ('{"code": "voice_exists", "message": "voice \'bob\' already exists", "field": "name"}', 5, "--overwrite"),
        ('{"code": "model_unavailable", "message": "model failed to load"}', 7, "log"),
        ("handler: boom \ntraceback: ...", 1, None),
    ],
)
def test_worker_errors_map_to_exit_codes_and_hints(run_cli, fake, error, exit_code, hint, tmp_path):
    fake.plan(Plan(final={"status": "FAILED", "error": error}))
    code, _out, err = run_cli("voices", "add", "bob", str(tmp_path / "missing.wav"))
    assert code == cli.EXIT_USAGE and "cannot read audio file" in err  # a missing file never reaches the API
    clip = tmp_path / "bob.wav"
    clip.write_bytes(pcm_wav(10))
    code, _out, err = run_cli("voices", "add", "bob", str(clip), "--text", "Hi.")
    assert code == exit_code
    assert (hint in err) if hint else "hint" not in err
    assert "Traceback" not in err and "traceback" not in err


def test_configuration_and_connection_errors(run_cli, fake, monkeypatch):
    fake.fault("POST", "runsync", *[httpx.ConnectError] * 10)
    code, _out, err = run_cli("health")
    assert code == cli.EXIT_UNAVAILABLE and "cannot reach the API" in err
    monkeypatch.delenv("F5TTS_ENDPOINT_URL")
    monkeypatch.delenv("F5TTS_ENDPOINT_ID", raising=False)
    assert cli.main(["health"]) == cli.EXIT_CONFIG


def test_a_job_outlasting_the_timeout_exits_6_and_says_it_may_still_finish(run_cli, fake, tmp_path):
    fake.plan(Plan(pending=10_000))
    code, _out, err = run_cli("say", "Hi", "-o", str(tmp_path / "x.wav"), "--timeout", "0.3")  # after the command
    assert code == cli.EXIT_TIMEOUT
    assert "job-1" in err and "may still finish" in err
    assert not (tmp_path / "x.wav").exists()


def test_voices_list_and_json(run_cli, fake):
    voices = [
        {"name": "default", "text": BUILTIN_REFERENCE_TEXT, "duration": 5.333, "sample_rate": 24000, "builtin": True},
        {"name": "alice", "text": "Hi.", "duration": 2.0, "sample_rate": 24000},
    ]
    fake.plan(*[Plan(final={"status": "COMPLETED", "output": [{"voices": voices}]})] * 2)
    code, out, _err = run_cli("voices", "list")
    assert code == 0
    assert out.splitlines()[0].split() == ["NAME", "DURATION", "BUILTIN", "TEXT"]
    assert out.splitlines()[1].split()[:3] == ["default", "5.33s", "yes"]
    code, out, _err = run_cli("voices", "list", "--json")
    assert [v["name"] for v in json.loads(out)] == ["default", "alice"]


def test_stream_writes_one_growing_wav(run_cli, fake, tmp_path):
    fake.plan(
        Plan(stream=[[stream_chunk(0, pcm_wav(2400, 100))], [stream_chunk(1, pcm_wav(4800, 200))], [stream_end(2)]])
    )
    target = tmp_path / "story.wav"
    code, out, err = run_cli("say", "One. Two.", "--stream", "-o", str(target))
    assert code == 0, err
    with wave.open(str(target)) as w:  # one valid file: the header patched to the true length
        assert (w.getnframes(), w.getframerate(), w.getnchannels()) == (7200, 24000, 1)
        frames = w.readframes(7200)
    assert frames[:2] == (100).to_bytes(2, "little") and frames[-2:] == (200).to_bytes(2, "little")
    assert sent(fake)["stream"] is True and "in 2 chunks" in out


def test_progress_line_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    progress = cli.Progress(screen)

    progress.job_state(JobState(id="j1", status="IN_QUEUE"))
    progress.job_state(JobState(id="j1", status="IN_PROGRESS"))
    progress.done()
    text = screen.getvalue()
    assert "job j1 queued" in text and "job j1 running" in text and text.endswith("\r\033[K")
    piped = io.StringIO()  # not a terminal: no progress noise in scripts and logs
    cli.Progress(piped).job_state(JobState(id="j1", status="IN_QUEUE"))
    assert piped.getvalue() == ""


# ---------------------------------------------------------------------------------------------- the real thing
@pytest.fixture
def f5tts(devstack, tmp_path):
    """Run the installed command (`python -m f5tts_client.cli`, as the `f5tts` script does) against the devstack."""
    env = {**os.environ, "RUNPOD_API_KEY": devstack.api_key, "F5TTS_ENDPOINT_URL": devstack.endpoint_url}
    env.pop("F5TTS_ENDPOINT_ID", None)
    return functools.partial(
        subprocess.run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=False
    ), tmp_path


def test_cli_against_the_devstack(f5tts):
    run, cwd = f5tts
    cmd = [sys.executable, "-m", "f5tts_client.cli"]

    said = run([*cmd, "say", "Hello from the shell.", "-o", "hello.mp3", "--nfe-step", "4", "--seed", "3"])
    assert said.returncode == 0, said.stderr
    assert (cwd / "hello.mp3").stat().st_size > 0 and "of mp3 audio" in said.stdout and "seed 3" in said.stdout

    streamed = run([*cmd, "say", "Streamed to a file. " * 10, "--stream", "-o", "story.wav", "--nfe-step", "4"])
    assert streamed.returncode == 0, streamed.stderr
    with wave.open(str(cwd / "story.wav")) as w:
        assert w.getnframes() > 0 and w.getframerate() == 24000

    added = run(
        [*cmd, "voices", "add", "cli-voice", str(builtin_audio_file()), "--text", BUILTIN_REFERENCE_TEXT, "--overwrite"]
    )
    assert added.returncode == 0 and "stored voice cli-voice" in added.stdout, added.stderr
    listed = run([*cmd, "voices", "list"])
    assert "cli-voice" in listed.stdout and "default" in listed.stdout
    assert run([*cmd, "voices", "rm", "cli-voice"]).returncode == 0
    missing = run([*cmd, "voices", "rm", "cli-voice"])
    assert missing.returncode == cli.EXIT_NOT_FOUND and "voice_not_found" in missing.stderr

    health = run([*cmd, "health", "--json"])
    assert health.returncode == 0 and '"status": "ok"' in health.stdout


def test_cli_writes_subtitles_whole_and_streamed(f5tts):
    run, cwd = f5tts
    cmd = [sys.executable, "-m", "f5tts_client.cli", "say", "Hello there. This is the shell speaking.", "--seed", "2"]
    whole = run([*cmd, "-o", "a.wav", "--subtitles", "a.srt", "--nfe-step", "4"])
    assert whole.returncode == 0, whole.stderr
    streamed = run([*cmd, "-o", "b.wav", "--stream", "--subtitles", "b.srt", "--nfe-step", "4"])
    assert streamed.returncode == 0, streamed.stderr
    srt = (cwd / "a.srt").read_text()
    assert srt.startswith("1\n00:00:00") and "Hello there." in srt
    assert (cwd / "b.srt").read_text() == srt  # same seed: same words, same times
    vtt = run([*cmd, "-o", "c.wav", "--subtitles", "c.vtt", "--nfe-step", "4"])
    assert vtt.returncode == 0 and (cwd / "c.vtt").read_text().startswith("WEBVTT\n")


def test_subtitles_need_a_srt_or_vtt_name(run_cli, fake, tmp_path):
    code, _out, err = run_cli("say", "Hi", "-o", str(tmp_path / "a.wav"), "--subtitles", str(tmp_path / "a.txt"))
    assert code == cli.EXIT_USAGE and ".srt or .vtt" in err and fake.accepted_jobs == 0
