"""The client sends every argument the caller gave, and nothing the caller left out.

The job input is read from the request body the scripted API received (both flavours); the command line is
checked the same way, and `test_e2e.py` checks it against the devstack's emulator."""

from __future__ import annotations

import base64
import json

import f5tts_client as f5
import pytest

from tests.clients.fake_runpod import FakeRunPod, Plan, stream_chunk, stream_end, synth_output
from tests.clients.helpers import collect, resolve

pytestmark = pytest.mark.anyio


UPLOADED = {"name": "bob", "text": "Hi.", "duration": 1.0, "sample_rate": 24000, "original_duration": 1.0}


def completed(output: dict) -> Plan:
    return Plan(final={"status": "COMPLETED", "output": [output]})


def bodies(fake: FakeRunPod) -> list[dict]:
    """The `input` of every submission (`/run`, `/runsync`), as the API received it."""
    posts = [r for r in fake.requests if r.method == "POST" and r.url.path.endswith(("/run", "/runsync"))]
    return [json.loads(r.content)["input"] for r in posts]


async def test_arguments_left_out_are_not_sent(make_client, fake):
    fake.plan(completed(synth_output()), completed(synth_output()), completed(UPLOADED), completed({"voices": []}))
    client = make_client()
    await resolve(client.synthesize("Hi."))
    await resolve((await resolve(client.submit("Hi."))).wait())
    await resolve(client.voices.upload("bob", b"RIFF-bytes", "Bob speaking."))
    await resolve(client.voices.list())
    assert bodies(fake) == [
        {"action": "synthesize", "text": "Hi."},
        {"action": "synthesize", "text": "Hi."},
        {
            "action": "upload_voice",
            "name": "bob",
            "audio": {"base64": base64.b64encode(b"RIFF-bytes").decode()},
            "text": "Bob speaking.",
        },
        {"action": "list_voices"},
    ]


async def test_arguments_given_are_sent_even_at_the_workers_default_value(make_client, fake):
    fake.plan(completed(synth_output()), completed(synth_output()), completed(UPLOADED))
    client = make_client()
    defaults = {
        "speed": 1.0,
        "nfe_step": 32,
        "cfg_strength": 2.0,
        "sway_sampling_coef": -1.0,
        "cross_fade_duration": 0.15,
        "remove_silence": False,
        "format": "wav",
    }
    await resolve(client.synthesize("Hi.", **defaults))
    # None is a value too: `seed=None` asks the worker for a random seed, `voice=None` for the default voice.
    await resolve(client.synthesize("Hi.", seed=None, voice=None, delivery=None))
    await resolve(client.voices.upload("bob", "https://example.test/bob.wav", "Bob.", overwrite=False))
    assert bodies(fake) == [
        {"action": "synthesize", "text": "Hi.", **defaults},
        {"action": "synthesize", "text": "Hi.", "seed": None, "voice": None, "delivery": None},
        {
            "action": "upload_voice",
            "name": "bob",
            "audio": {"url": "https://example.test/bob.wav"},
            "text": "Bob.",
            "overwrite": False,
        },
    ]


async def test_a_stream_sends_what_was_given_plus_stream(make_client, fake):
    fake.plan(Plan(stream=[[stream_chunk(0), stream_end(1)]]))
    chunks = await collect(make_client().synthesize_stream("Hi.", nfe_step=32))
    assert len(chunks) == 1
    assert bodies(fake) == [{"action": "synthesize", "text": "Hi.", "nfe_step": 32, "stream": True}]


async def test_a_given_argument_is_still_checked_before_sending(make_client, fake):
    with pytest.raises(f5.InvalidInput) as info:
        await resolve(make_client().synthesize("Hi.", nfe_step=2))
    assert info.value.field == "nfe_step"
    assert fake.requests == []


def test_not_given_is_falsy_and_says_what_it_is():
    assert not f5.NOT_GIVEN and repr(f5.NOT_GIVEN) == "NOT_GIVEN" and isinstance(f5.NOT_GIVEN, f5.NotGiven)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ([], {}),  # the CLI sets the format (from -o), nothing else
        (["--nfe-step", "32", "--no-remove-silence"], {"nfe_step": 32, "remove_silence": False}),
    ],
)
def test_the_command_line_sends_only_the_options_given(run_cli, fake, tmp_path, options, expected):
    code, _out, err = run_cli("say", "Hi.", *options, "-o", str(tmp_path / "out.wav"))
    assert code == 0, err
    assert bodies(fake) == [{"action": "synthesize", "text": "Hi.", "format": "wav", **expected}]


def test_voices_add_sends_overwrite_only_when_given(run_cli, fake, tmp_path):
    fake.plan(completed(UPLOADED), completed(UPLOADED))
    clip = tmp_path / "bob.wav"
    clip.write_bytes(b"RIFF-bytes")
    for overwrite in ([], ["--overwrite"]):
        code, _out, err = run_cli("voices", "add", "bob", str(clip), "--text", "Hi.", *overwrite)
        assert code == 0, err
    audio = {"base64": base64.b64encode(b"RIFF-bytes").decode()}
    assert bodies(fake) == [
        {"action": "upload_voice", "name": "bob", "audio": audio, "text": "Hi."},
        {"action": "upload_voice", "name": "bob", "audio": audio, "text": "Hi.", "overwrite": True},
    ]
