"""`f5tts playground` in a real browser (Debian's chromium driven by playwright) against the devstack, over both
endpoint types: the page speaks, keeps takes, stores and deletes voices, shows errors in plain words, and neither
the page nor anything it sends carries the API key; other origins cannot drive it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from f5tts_client import Client
from f5tts_client.playground import TOKEN_HEADER, WORD_TIMINGS, Playground, exposure_warning
from playwright.sync_api import Browser, Page, expect, sync_playwright

from worker.model_facts import BUILTIN_REFERENCE_TEXT, builtin_audio_file

pytestmark = pytest.mark.timeout(600)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SPOKEN = "The quick brown fox jumps over the lazy dog."
# Several sentences: several chunks, streamed one after another.
STORY = (
    "The quick brown fox jumps over the lazy dog. It ran across the wide field before the sun went down. "
    "Then it rested for a while under an old oak tree by the river. The birds sang, and the water flowed past "
    "the stones until the night came."
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium is not installed: run scripts/install-system-deps.sh")
    with sync_playwright() as p:
        # --no-sandbox: chromium's sandbox cannot start as root (CI containers); autoplay without a click for tests
        # that start playback from a script; a fake microphone (a beep), allowed without asking.
        launched = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--autoplay-policy=no-user-gesture-required",
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
            ],
        )
        yield launched
        launched.close()


@pytest.fixture(params=["queue", "load_balancer"])
def stack(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue("devstack" if request.param == "queue" else "lb_devstack")


@pytest.fixture
def playground(stack: Any) -> Iterator[Playground]:
    with (
        Client(api_key=stack.api_key, endpoint_url=stack.endpoint_url, timeout=180) as client,
        Playground(client) as pg,
    ):
        yield pg


@pytest.fixture
def page(browser: Browser, playground: Playground) -> Iterator[Page]:
    context = browser.new_context()
    opened = context.new_page()
    opened.goto(playground.url)
    expect(opened.get_by_label("Voice", exact=True)).to_contain_text("default")  # the voices were listed
    yield opened
    context.close()


def speak(page: Page, text: str, **settings: str) -> None:
    page.get_by_label("Text", exact=True).fill(text)
    page.get_by_label("NFE steps").fill(settings.pop("nfe_step", "4"))  # the tiny model: fast and noise anyway
    for label, value in settings.items():
        field = page.get_by_label(label, exact=True)
        field.select_option(value) if label == "Format" else field.fill(value)
    page.get_by_role("button", name="Speak").click()


def test_speak_plays_audio_and_keeps_a_take_with_its_seed(page: Page) -> None:
    speak(page, SPOKEN, Seed="7")
    # The live player's clock advanced: audio was playing.
    page.wait_for_function("() => Number(document.getElementById('status').dataset.played) > 0", timeout=120_000)
    take = page.get_by_role("list", name="Takes").get_by_role("listitem").first
    expect(take).to_contain_text("seed 7", timeout=120_000)
    audio = take.locator("audio")
    duration = audio.evaluate(
        "a => a.readyState >= 1 ? a.duration : new Promise(r => a.addEventListener('loadedmetadata', () => r(a.duration)))"
    )
    assert duration > 0
    expect(take.get_by_role("link", name="Download")).to_have_attribute("download", "take-1-seed-7.wav")
    expect(page.get_by_role("alert")).to_be_empty()
    words = take.locator(".words span")
    if WORD_TIMINGS:  # the worker times the words it spoke: each is a span the player highlights
        expect(words.first).to_be_visible()
        assert words.count() == len(SPOKEN.split())
    else:  # no timings in this contract: the text stays as it was, nothing is highlighted, no error
        assert words.count() == 0
        expect(take.locator(".words")).to_have_text(SPOKEN)

    speak(page, "A second take, not streamed.", Seed="8", Format="flac")
    second = page.get_by_role("list", name="Takes").get_by_role("listitem")
    expect(second).to_have_count(2, timeout=120_000)
    expect(second.first).to_contain_text("seed 8", timeout=120_000)


def test_a_streamed_take_starts_playing_before_its_last_chunk_and_lights_up_its_words(page: Page) -> None:
    """Several sentences in wav (streamed): the page's live player began before the last chunk arrived (the page
    records both moments on its status line), and a word is highlighted (`.now`) while the take plays."""
    speak(page, STORY, Seed="3")
    status = "document.getElementById('status').dataset"
    if WORD_TIMINGS:
        page.wait_for_selector("#takes li .words span.now", timeout=120_000)  # a word lit as it plays
    page.wait_for_function(f"() => {status}.playingAt", timeout=120_000)
    take = page.get_by_role("list", name="Takes").get_by_role("listitem").first
    expect(take.locator("audio")).to_have_count(1, timeout=120_000)  # the whole take is in
    chunks, playing_at, last_chunk_at = page.evaluate(
        f"() => [Number({status}.chunks), Number({status}.playingAt), Number({status}.lastChunkAt)]"
    )
    assert chunks >= 2
    assert playing_at < last_chunk_at, f"playback began {playing_at - last_chunk_at:.0f} ms after the last chunk"
    expect(page.get_by_role("alert")).to_be_empty()
    if WORD_TIMINGS:
        words = take.locator(".words span")
        assert words.count() == len(STORY.split())
        page.wait_for_function(  # the live player's last frame clears the highlight
            "() => document.querySelectorAll('#takes li .words span.now').length === 0", timeout=120_000
        )


def test_a_saved_voice_appears_in_the_picker_and_can_be_deleted(page: Page, playground: Playground) -> None:
    name = "playground-voice"
    page.get_by_label("Voice name").fill(name)
    page.get_by_label("Reference audio").set_input_files(str(builtin_audio_file()))
    page.get_by_label("Transcript").fill(BUILTIN_REFERENCE_TEXT)
    page.get_by_label("Replace a voice of that name").check()
    page.get_by_role("button", name="Save voice").click()
    picker = page.get_by_label("Voice", exact=True)
    expect(picker).to_have_value(name, timeout=120_000)  # listed and picked
    assert name in {v.name for v in playground.client.voices.list()}

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete voice").click()
    expect(picker.locator(f"option[value='{name}']")).to_have_count(0, timeout=120_000)
    assert name not in {v.name for v in playground.client.voices.list()}


@pytest.mark.parametrize("stack", ["queue"], indirect=True)
def test_a_voice_recorded_with_the_microphone_is_saved(page: Page, playground: Playground) -> None:
    page.get_by_role("button", name="Record").click()
    expect(page.get_by_role("button", name="Stop recording")).to_be_visible()
    page.wait_for_timeout(2000)
    page.get_by_role("button", name="Stop recording").click()
    expect(page.locator("#recording")).to_contain_text("Recorded", timeout=10_000)
    page.get_by_label("Voice name").fill("recorded-voice")
    page.get_by_label("Transcript").fill("A beep from the fake microphone.")
    page.get_by_label("Replace a voice of that name").check()
    page.get_by_role("button", name="Save voice").click()
    expect(page.get_by_label("Voice", exact=True)).to_have_value("recorded-voice", timeout=120_000)
    stored = {v.name: v for v in playground.client.voices.list()}["recorded-voice"]
    assert stored.duration > 0.5
    playground.client.voices.delete("recorded-voice")


@pytest.mark.parametrize("stack", ["queue"], indirect=True)
def test_errors_show_in_an_alert_in_plain_words(page: Page) -> None:
    page.get_by_role("button", name="Speak").click()
    expect(page.get_by_role("alert")).to_have_text("Type some text to speak first.")
    expect(page.get_by_role("list", name="Takes").get_by_role("listitem")).to_have_count(0)

    speak(page, "Hello.", Speed="50")  # out of the contract's range: the SDK refuses it before any job
    expect(page.get_by_role("alert")).to_contain_text("The service did not accept these settings", timeout=60_000)
    expect(page.get_by_role("alert")).to_contain_text("speed")

    page.get_by_role("button", name="Save voice").click()
    expect(page.get_by_role("alert")).to_have_text("Give the voice a name.")


def test_the_key_is_in_neither_the_page_nor_any_request(page: Page, playground: Playground, stack: Any) -> None:
    sent: list[str] = []
    received: list[str] = []
    page.on("request", lambda r: sent.append(f"{r.url}\n{r.all_headers()}\n{r.post_data or ''}"))
    page.on("response", lambda r: received.append(r.text() if r.url.startswith(playground.url) else ""))
    page.reload()
    expect(page.get_by_label("Voice", exact=True)).to_contain_text("default")
    speak(page, "Hello there.")
    expect(page.get_by_role("list", name="Takes").get_by_role("listitem").first.locator("audio")).to_have_count(
        1, timeout=120_000
    )
    assert len(sent) >= 3  # the page, the voice list, the speech
    for text in [page.content(), *sent, *received]:
        assert stack.api_key not in text
    urls = [s.split("\n")[0] for s in sent]
    assert all(url.startswith((playground.url, "blob:" + playground.url)) for url in urls)  # nowhere else


@pytest.mark.parametrize("stack", ["queue"], indirect=True)
def test_requests_from_another_origin_are_refused(browser: Browser, playground: Playground) -> None:
    api = playground.url + "api/voices/list"
    own = {"Origin": playground.url.rstrip("/"), TOKEN_HEADER: playground.token}
    assert httpx.post(api, headers=own, json={}).status_code == 200  # the page's own call works
    for headers in (
        {**own, "Origin": "http://evil.example"},  # another page
        {**own, "Origin": "null"},  # a sandboxed frame or a file:// page
        {TOKEN_HEADER: playground.token},  # no Origin at all
        {**own, TOKEN_HEADER: "guess"},  # without the page's token
        {**own, "Host": f"rebound.example:{playground.port}"},  # DNS rebinding: the right IP, another name
    ):
        answer = httpx.post(api, headers=headers, json={})
        assert answer.status_code == 403 and "error" in answer.json()
    assert httpx.get(playground.url, headers={"Host": "rebound.example"}).status_code == 403

    # A page of another origin in the same browser, even one that knows the token, gets nothing back (no CORS)
    # and can change nothing (a simple no-cors POST is refused by its Origin).
    playground.client.voices.upload("kept", builtin_audio_file(), BUILTIN_REFERENCE_TEXT, overwrite=True)
    with _other_origin_page() as evil_url:
        context = browser.new_context()
        evil = context.new_page()
        evil.goto(evil_url)
        outcome = evil.evaluate(
            """async ([url, header, token]) => {
                try { await fetch(url + 'api/voices/list', {method: 'POST', headers: {[header]: token}, body: '{}'});
                      return 'answered'; } catch (e) { return 'blocked'; }
            }""",
            [playground.url, TOKEN_HEADER, playground.token],
        )
        assert outcome == "blocked"
        evil.evaluate(
            """([url]) => fetch(url + 'api/voices/delete', {method: 'POST', mode: 'no-cors',
                                                           body: JSON.stringify({name: 'kept'})})""",
            [playground.url],
        )
        context.close()
    assert "kept" in {v.name for v in playground.client.voices.list()}
    playground.client.voices.delete("kept")


def test_a_wildcard_bind_answers_at_ip_addresses_and_allowed_names_and_prints_urls_to_open() -> None:
    """tests/clients/wildcard_playground.py, in a network namespace of its own with only a loopback interface:
    there a wildcard bind reaches nothing beyond this test."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("no unshare or ip (util-linux, iproute2) to make a private network namespace")
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        print(probe.stderr)
        pytest.skip(f"no private network namespace here (root needed): {probe.stderr.strip()}")
    script = f"ip link set lo up && exec {sys.executable} -m tests.clients.wildcard_playground"
    done = subprocess.run(
        ["unshare", "--net", "sh", "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0 and "wildcard checks passed" in done.stdout, done.stdout + done.stderr


def _ipv6_loopback() -> str | None:
    """Why this machine cannot listen on ::1, or None when it can."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        return f"no IPv6 loopback here: {exc}"
    return None


@pytest.mark.parametrize("stack", ["queue"], indirect=True)
def test_an_ipv6_loopback_bind_serves_the_page(stack: Any) -> None:
    if reason := _ipv6_loopback():
        print(reason)
        pytest.skip(reason)
    with (
        Client(api_key=stack.api_key, endpoint_url=stack.endpoint_url, timeout=60) as client,
        Playground(client, "::1", 0) as pg,
    ):
        assert pg.url == f"http://[::1]:{pg.port}/" and exposure_warning("::1") is None
        assert httpx.get(pg.url).status_code == 200
        own = {"Origin": pg.url.rstrip("/"), TOKEN_HEADER: pg.token}
        listed = httpx.post(pg.url + "api/voices/list", headers=own, json={})
        assert listed.status_code == 200 and "default" in [voice["name"] for voice in listed.json()["voices"]]
        assert httpx.get(pg.url, headers={"Host": f"127.0.0.1:{pg.port}"}).status_code == 403  # not its address


class _EvilPage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><title>another site</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _other_origin_page:
    """A second loopback server: another origin, as any web page open in the same browser would be."""

    def __enter__(self) -> str:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _EvilPage)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("stack", ["load_balancer"], indirect=True)
def test_the_command_prints_its_url_serves_the_page_and_stops_on_ctrl_c(stack: Any) -> None:
    env = {**os.environ, "RUNPOD_API_KEY": stack.api_key, "F5TTS_ENDPOINT_URL": stack.endpoint_url}
    command = [sys.executable, "-m", "f5tts_client.cli", "playground", "--no-browser", "--port", "0"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.fullmatch(r"playground (http://127\.0\.0\.1:\d+/)\n", line)
        assert match, line
        page = httpx.get(match.group(1), timeout=10)
        assert page.status_code == 200 and "Speak" in page.text and stack.api_key not in page.text
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "WARNING" not in err


def test_a_bind_beyond_loopback_is_announced_loudly() -> None:
    assert exposure_warning("127.0.0.1") is None and exposure_warning("::1") is None
    warning = exposure_warning("0.0.0.0")
    assert warning is not None and "WARNING" in warning and "API key" in warning
