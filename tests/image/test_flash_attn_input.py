"""Dockerfile.runpod's flash-attn step, built for real: the wheel from a file in the build context or from a URL,
its sha256 printed and checked against FLASH_ATTN_SHA256, a download cached under its URL's key.

The wheels are stand-ins (this machine cannot reach the real one's GitHub release): a valid wheel of the real one's
name whose `flash_attn` module has the names f5-tts imports and a marker saying which wheel it is. The builds reuse
the layers of the session's image (tests/image/conftest.py): each reruns the steps from flash-attn on.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.image.conftest import BUILD_TIMEOUT_S, BuiltImage, make_image
from tests.loopback_http import serve_get
from tests.support import REPO_ROOT

pytestmark = pytest.mark.timeout(BUILD_TIMEOUT_S + 1800)  # the first test waits for the session's build
# The Dockerfile's FLASH_ATTN_WHEEL: the cached download is stored under this name.
WHEEL = "flash_attn-2.8.3+cu12torch2.8cxx11abiTRUE-cp311-cp311-linux_x86_64.whl"


def stand_in_wheel(marker: str) -> bytes:
    """A wheel pip installs as flash-attn 2.8.3, with the names f5-tts imports from it (never called here)."""
    dist_info = "flash_attn-2.8.3+cu12torch2.8cxx11abiTRUE.dist-info"
    files = {
        "flash_attn/__init__.py": (
            f"MARKER = {marker!r}\n"
            "def flash_attn_func(*args, **kwargs): raise NotImplementedError('a stand-in')\n"
            "flash_attn_varlen_func = flash_attn_func\n"
        ),
        "flash_attn/bert_padding.py": "from flash_attn import flash_attn_func as pad_input, flash_attn_func as unpad_input\n",
        f"{dist_info}/METADATA": "Metadata-Version: 2.1\nName: flash_attn\nVersion: 2.8.3+cu12torch2.8cxx11abiTRUE\n",
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: false\nTag: cp311-cp311-linux_x86_64\n",
    }
    records = "".join(f"{name},,\n" for name in [*files, f"{dist_info}/RECORD"])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        for name, text in {**files, f"{dist_info}/RECORD": records}.items():
            wheel.writestr(name, text)
    return buffer.getvalue()


@contextmanager
def wheel_server(wheels: dict[str, bytes]) -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server answering GET /<folder>/<WHEEL> with wheels[folder]; the paths asked are recorded.
    A chroot-isolated build shares this machine's network, so the build's curl reaches it."""
    asked: list[str] = []

    def respond(path: str) -> tuple[int, bytes]:
        asked.append(path)
        folder, _, name = path.strip("/").partition("/")
        body = wheels.get(folder) if name in (WHEEL.replace("+", "%2B"), WHEEL) else None
        return (200, body) if body else (404, b"")

    with serve_get(respond) as base_url:
        yield base_url, asked


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _build(log: Path, tag: str, **args: str) -> tuple[int, str]:
    """`make image` with these arguments: (its exit status, its log)."""
    built = make_image(log, tag, **args)
    return built.returncode, log.read_text()


def test_the_flash_attn_wheel_is_checked_by_sha256_from_a_file_or_a_url(
    built_image: BuiltImage, tmp_path: Path
) -> None:
    if built_image.build_s == 0.0:
        pytest.skip("F5TTS_TEST_IMAGE names a prebuilt image: these builds need the session's layers")
    first, second = stand_in_wheel("first"), stand_in_wheel("second")
    inputs = REPO_ROOT / "image-inputs" / f"test-{uuid.uuid4().hex[:8]}"
    inputs.mkdir()
    (inputs / WHEEL).write_bytes(first)
    tag = f"localhost/f5tts-runpod:test-flash-attn-{uuid.uuid4().hex[:8]}"
    common = {"BASE_IMAGE": built_image.base, "WEIGHTS": "tiny"}
    if built_image.containers.builder != "docker":
        common["IMAGE_BUILD_FLAGS"] = "--force-rm"  # a failed build leaves no working container behind
    try:
        # A file in the build context, pinned to another sha256: refused, naming the one it has.
        local = f"{inputs.relative_to(REPO_ROOT)}/{WHEEL}"
        status, text = _build(tmp_path / "file.log", tag, FLASH_ATTN=local, FLASH_ATTN_SHA256=_sha256(second), **common)
        assert status != 0, text[-3000:]
        assert f"flash-attn: {local} has sha256 {_sha256(first)}" in text, text[-3000:]
        assert f"flash-attn: expected sha256 {_sha256(second)}: refusing the wheel" in text

        with wheel_server({"first": first, "second": second}) as (server, asked):
            # From a URL, pinned right: installed, and the image's settings say the DiT runs on flash-attn.
            url = f"{server}/first/{WHEEL}"
            status, text = _build(tmp_path / "url.log", tag, FLASH_ATTN=url, FLASH_ATTN_SHA256=_sha256(first), **common)
            assert status == 0, text[-6000:]
            assert f"flash-attn: {url} has sha256 {_sha256(first)}" in text
            assert len(asked) == 1
            probe = "import flash_attn; print(flash_attn.MARKER); print(open('/opt/f5tts/image.env').read())"
            ran = built_image.containers.run(tag, f"f5tts-test-{uuid.uuid4().hex[:8]}", ["python", "-c", probe])
            assert ran.returncode == 0, ran.stderr
            assert ran.stdout.splitlines()[0] == "first" and "F5TTS_ATTN_BACKEND=flash_attn" in ran.stdout

            # Another URL, whose wheel has the same file name: downloaded (the cached one is another URL's), so
            # the pin of the first wheel refuses it.
            other = f"{server}/second/{WHEEL}"
            status, text = _build(
                tmp_path / "other-url.log", tag, FLASH_ATTN=other, FLASH_ATTN_SHA256=_sha256(first), **common
            )
            assert status != 0, text[-3000:]
            assert f"flash-attn: {other} has sha256 {_sha256(second)}" in text, text[-3000:]
            assert len(asked) == 2 and asked[1].startswith("/second/")
    finally:
        shutil.rmtree(inputs)
        built_image.containers.remove_image(tag, prune=False)  # the session's layers stay for the other tests
