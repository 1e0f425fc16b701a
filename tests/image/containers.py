"""The container builder of the in-image tests: build Dockerfile.runpod with `make image`, run commands in the
image (as its own user, on the host's network so the devstack on loopback is reachable), inspect and remove.

Docker where its daemon answers; else buildah (`buildah run --isolation chroot`: no container runtime or cgroups
needed, which is what lets it run where podman's crun cannot, as on this project's build machine); else podman.
`python -m tests.image.containers launch BUILDER IMAGE NAME [-e K=V ...] -- CMD...` is the worker command the
devstack starts: it forwards what RunPod (and a load-balancing endpoint) would set, plus the given overrides.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import REPO_ROOT

# The variables a RunPod worker's container gets from the platform or the endpoint's template: forwarded from the
# devstack's worker environment into the container. Nothing else of this machine's environment goes in.
FORWARDED_PREFIXES = ("RUNPOD_", "BUCKET_")
FORWARDED_NAMES = ("PORT", "PORT_HEALTH", "HEALTH_CHECK_PATH", "F5TTS_SERVE", "F5TTS_BIND_HOST")


class NoBuilder(RuntimeError):
    """No container builder can run here (the reason is the message)."""


def find_builder() -> str:
    """scripts/container-builder.sh's answer (the one `make image` uses), or NoBuilder with its reason."""
    found = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts/container-builder.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if found.returncode != 0:
        raise NoBuilder(found.stderr.strip())
    builder = found.stdout.strip()
    # podman builds here, but its runtime may not run (crun and cgroups); buildah runs what podman built.
    return "buildah" if builder == "podman" and shutil.which("buildah") else builder


@dataclass(frozen=True)
class Containers:
    builder: str

    def _cli(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.builder, *args], capture_output=True, text=True, timeout=timeout, check=check)

    def config(self, image: str) -> dict[str, Any]:
        """The image's configuration (Env, User, Cmd, Healthcheck), in the docker image format."""
        if self.builder == "buildah":
            config: dict[str, Any] = json.loads(self._cli("inspect", "--type", "image", image).stdout)["Docker"][
                "config"
            ]
        else:
            config = json.loads(self._cli("image", "inspect", image).stdout)[0]["Config"]
        return config

    def run_argv(self, image: str, name: str, cmd: list[str], env: dict[str, str]) -> list[str]:
        """A command line that runs `cmd` in a new container `name` of `image` (kept for `changes`)."""
        flags = [f"--env={key}={value}" for key, value in env.items()]
        if self.builder == "buildah":
            from_ = f"buildah from --quiet --name {name} {image} >/dev/null"
            run = ["buildah", "run", "--isolation", "chroot", *flags, name, "--", *cmd]
            return ["sh", "-c", f'{from_} && exec "$@"', "sh", *run]
        return [self.builder, "run", "--name", name, "--network", "host", "--init", *flags, image, *cmd]

    def run(
        self, image: str, name: str, cmd: list[str], env: dict[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run `cmd` in a throwaway container of `image` (removed after), its output captured."""
        try:
            return subprocess.run(
                self.run_argv(image, name, cmd, env or {}), capture_output=True, text=True, timeout=timeout, check=False
            )
        finally:
            self.remove(name)

    def changes(self, name: str) -> list[str]:
        """Paths the container added or changed on the image's file system. A probe file is copied into the
        container first and must be among them: changes read from the wrong place (which would list nothing, and so
        pass any check of what the container wrote) fail here instead."""
        probe = f"/tmp/f5tts-probe-{uuid.uuid4().hex[:8]}"
        with tempfile.NamedTemporaryFile() as source:
            if self.builder == "buildah":
                self._cli("copy", "--quiet", name, source.name, probe)
            else:
                self._cli("cp", source.name, f"{name}:{probe}")
        if self.builder != "buildah":
            lines = self._cli("diff", name).stdout.splitlines()  # "A /path", "C /path", "D /path"
            where = f"`{self.builder} diff {name}`"
            changed = [line.split(None, 1)[1] for line in lines if line[:1] in "AC"]
        else:
            merged = Path(self._cli("mount", name).stdout.strip())
            try:
                upper = merged.parent / "diff"  # overlay: the container's own layer, next to its merged view
                where = str(upper)
                assert upper.is_dir(), f"{name}: no overlay layer at {upper} (is the storage driver overlay?)"
                changed = sorted("/" + str(p.relative_to(upper)) for p in upper.rglob("*") if not p.is_dir())
            finally:
                self._cli("umount", name, check=False)
        assert probe in changed, f"{name}: {where} lacks {probe}, copied into the container: not its changes"
        return [path for path in changed if path != probe]

    def remove(self, name: str) -> None:
        args = ("rm", name) if self.builder == "buildah" else ("rm", "--force", name)
        self._cli(*args, check=False)

    def remove_image(self, image: str, *, prune: bool = True) -> None:
        """Remove `image`, and with `prune` the builder's layer cache too."""
        self._cli("rmi", "--force", image, check=False)
        if prune and self.builder in ("buildah", "podman"):
            # Their layer cache is images without a name: 7 GB on the disk. pip's download cache (a cache mount)
            # stays, so the next build installs without downloading again.
            self._cli("rmi", "--prune", check=False)


def launch(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.image.containers launch")
    parser.add_argument("builder")
    parser.add_argument("image")
    parser.add_argument("name")
    parser.add_argument("-e", "--env", action="append", default=[], help="KEY=VALUE set in the container")
    parser.add_argument("cmd", nargs="+")
    args = parser.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_PREFIXES) or k in FORWARDED_NAMES}
    env.update(pair.split("=", 1) for pair in args.env)
    argv_ = Containers(args.builder).run_argv(args.image, args.name, args.cmd, env)
    child = subprocess.Popen(argv_)
    # The devstack stops a worker with SIGTERM (runpod's graceful shutdown): the container's process gets it.
    signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
    return child.wait()


if __name__ == "__main__":
    if sys.argv[1:2] != ["launch"]:
        sys.exit("usage: python -m tests.image.containers launch BUILDER IMAGE NAME [-e K=V ...] -- CMD...")
    sys.exit(launch(sys.argv[2:]))
