"""ElevenLabs' realtime text input through the load-balancer devstack (the real worker on the tiny model): a plain
`websockets` client speaking the documented protocol, and the official SDK's `convert_realtime`.

The SDK always dials `wss://` (it swaps the base URL's scheme for `wss`), so it reaches the devstack through a
second emulator served over TLS (as RunPod's endpoints are), routing to the same worker, with a certificate made
here and trusted through SSL_CERT_FILE.
"""

from __future__ import annotations

import base64
import datetime
import io
import ipaddress
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from elevenlabs.client import ElevenLabs
from elevenlabs.core.api_error import ApiError
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from devstack.load_balancer import Backend, LoadBalancer, LoadBalancerConfig
from devstack.serving import LoopbackServer
from tests.support import REPO_ROOT

pytestmark = pytest.mark.timeout(600)

ROUTE = "/elevenlabs/v1/text-to-speech/{voice}/stream-input"
SENTENCES = ["The fox runs far away into the forest. ", "It hides there from the dog until night. "]


def ws_url(stack: Any, voice: str = "default", query: str = "output_format=pcm_24000") -> str:
    return stack.base_url.replace("http://", "ws://") + ROUTE.format(voice=voice) + f"?{query}"


def open_session(stack: Any, **options: Any) -> ClientConnection:
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    return connect(ws_url(stack, **options), additional_headers=headers, proxy=None, open_timeout=60)


def until_close(ws: ClientConnection) -> tuple[list[dict[str, Any]], int | None]:
    messages = []
    with pytest.raises(ConnectionClosed):
        while True:
            messages.append(json.loads(ws.recv(timeout=300)))
    return messages, ws.close_code


def test_the_protocol_through_the_load_balancer(lb_devstack):
    with open_session(lb_devstack) as ws:
        ws.send(json.dumps({"text": " ", "voice_settings": {"speed": 1.0}, "nfe_step": 4, "seed": 5}))
        for word in SENTENCES[0].split(" "):  # as an LLM writes: word by word
            ws.send(json.dumps({"text": word + " "}))
        first = json.loads(ws.recv(timeout=300))  # the complete sentence is spoken before the text ends
        ws.send(json.dumps({"text": SENTENCES[1]}))
        ws.send(json.dumps({"text": ""}))
        rest, code = until_close(ws)
    assert code == 1000 and rest[-1] == {"isFinal": True}
    audio_messages = [first, *rest[:-1]]
    assert len(audio_messages) >= 2 and all(m["audio"] for m in audio_messages)
    spoken = "".join("".join(m["alignment"]["chars"]) for m in audio_messages)
    assert spoken.split() == " ".join(SENTENCES).split()  # the characters sent, word for word
    for message in audio_messages:
        samples = np.frombuffer(base64.b64decode(message["audio"]), dtype="<i2")
        last_ms = message["alignment"]["charStartTimesMs"][-1] + message["alignment"]["charDurationsMs"][-1]
        assert samples.size > 0 and last_ms <= samples.size / 24 + 1  # times within the message's own audio


def test_errors_and_refusals_pass_through_the_load_balancer(lb_devstack):
    with open_session(lb_devstack, voice="no-such-voice") as ws:
        ws.send(json.dumps({"text": " "}))
        messages, code = until_close(ws)
    assert code == 1008 and messages[-1]["error"] == "voice_not_found" and "no-such-voice" in messages[-1]["message"]
    with pytest.raises(InvalidStatus) as refused:  # RunPod's key check at the handshake
        connect(ws_url(lb_devstack), additional_headers={"xi-api-key": "x"}, proxy=None).close()
    assert refused.value.response.status_code == 401


# ------------------------------------------------------------------------------------------------ the SDK
def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, the certificate its own authority."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "devstack test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


@pytest.fixture(scope="module")
def tls_base_url(lb_devstack, tmp_path_factory) -> Iterator[str]:
    """A second load-balancer emulator over TLS, in front of the devstack's worker; SSL_CERT_FILE trusts it."""
    cert_file, key_file = self_signed_certificate(tmp_path_factory.mktemp("tls"))
    backends = lb_devstack._call(lambda: list(lb_devstack.balancer.backends.values()))

    def make_app() -> Any:
        balancer = LoadBalancer(LoadBalancerConfig(api_key=lb_devstack.api_key))
        for backend in backends:
            balancer.add(Backend(backend.worker_id, backend.url, backend.health_url))
        return balancer.app

    server = LoopbackServer(0, what="TLS load-balancer emulator", thread_name="devstack-lb-tls")
    server.start(make_app, ssl_certfile=str(cert_file), ssl_keyfile=str(key_file))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SSL_CERT_FILE", str(cert_file))
        yield f"https://127.0.0.1:{server.port}"
    server.stop()


def sdk(tls_base_url: str, lb_devstack: Any) -> ElevenLabs:
    return ElevenLabs(
        api_key="app-key",
        base_url=f"{tls_base_url}/elevenlabs",
        headers={"Authorization": f"Bearer {lb_devstack.api_key}"},  # what RunPod's load balancer checks
    )


def llm_output() -> Iterator[str]:
    for sentence in SENTENCES:
        yield from (word + " " for word in sentence.split())


def test_the_sdks_convert_realtime_through_the_load_balancer(tls_base_url, lb_devstack):
    client = sdk(tls_base_url, lb_devstack)
    chunks = list(client.text_to_speech.convert_realtime("default", text=llm_output(), output_format="pcm_16000"))
    audio = np.frombuffer(b"".join(chunks), dtype="<i2")
    assert len(chunks) >= 2 and audio.size / 16000 > 0.5 and np.abs(audio).max() > 0


def test_the_sdk_raises_its_api_error_with_our_message(tls_base_url, lb_devstack):
    client = sdk(tls_base_url, lb_devstack)
    with pytest.raises(ApiError) as raised:
        list(client.text_to_speech.convert_realtime("no-such-voice", text=llm_output()))
    assert raised.value.status_code == 1008
    # The SDK reads the error message when it comes last, else the close reason: both say it.
    body = raised.value.body
    said = f"{body['error']}: {body['message']}" if isinstance(body, dict) else body
    assert said.startswith("voice_not_found: ") and "no-such-voice" in said


def test_the_docs_example_runs_as_written(tls_base_url, lb_devstack):
    """docs/http.md's realtime example, against the devstack (through the TLS emulator)."""
    docs = (REPO_ROOT / "docs" / "http.md").read_text()
    section = docs[docs.index("## ElevenLabs realtime input") :]
    block = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert block, "docs/http.md has lost its realtime example"
    code = block.group(1).replace("https://<ENDPOINT_ID>.api.runpod.ai", tls_base_url)
    code = code.replace("<RUNPOD_API_KEY>", lb_devstack.api_key).replace('"alice"', '"default"')
    player = io.BytesIO()
    exec(compile(code, "docs/http.md", "exec"), {"llm_tokens": llm_output, "player": player})
    assert len(player.getvalue()) / 2 / 24000 > 0.5  # pcm_24000: two bytes a sample
