"""The GitHub workflows: valid against GitHub's workflow schema (vendored, offline) and wired as the pipeline says."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support import REPO_ROOT

WORKFLOWS = REPO_ROOT / ".github" / "workflows"


def _load(name: str) -> dict:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads the `on:` key as True
    return workflow


def _steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def _action(workflow: dict, prefix: str) -> dict:
    matches = [s for s in _steps(workflow) if s.get("uses", "").startswith(prefix)]
    assert len(matches) == 1, prefix
    return matches[0]


def test_workflows_validate_against_the_github_schema():
    check = Path(sys.executable).parent / "check-jsonschema"
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    assert {Path(f).name for f in files} == {"ci.yml", "preview.yml", "deploy.yml"}
    result = subprocess.run(
        [str(check), "--builtin-schema", "vendor.github-workflows", *files],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_runs_the_makefiles_test_target_on_every_push_and_pull_request():
    ci = _load("ci.yml")
    assert "push" in ci["on"] and "pull_request" in ci["on"]
    targets = [step["run"].split()[1] for step in _steps(ci) if step.get("run", "").startswith("make ")]
    makefile = (REPO_ROOT / "Makefile").read_text()
    recipe = re.search(r"^test:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert "test" in targets and recipe and "pytest" in recipe.group(1)


def test_preview_and_deploy_target_the_same_stack_and_backend():
    preview, deploy = (
        _action(_load("preview.yml"), "pulumi/actions@")["with"],
        _action(_load("deploy.yml"), "pulumi/actions@")["with"],
    )
    assert (preview["command"], deploy["command"]) == ("preview", "up")
    assert preview["stack-name"] == deploy["stack-name"] and preview["cloud-url"] == deploy["cloud-url"]
    assert _load("preview.yml")["permissions"]["pull-requests"] == "write" and preview["comment-on-pr"] is True


def test_the_program_virtualenv_of_the_workflows_holds_every_module_the_program_imports():
    """preview.yml and deploy.yml install only requirements/dev.txt (--no-deps): every distribution the Pulumi
    program and its providers import must be pinned there, or `pulumi preview` fails in CI only."""
    for name in ("preview.yml", "deploy.yml"):
        runs = " ".join(step.get("run", "") for step in _steps(_load(name)))
        assert "--require-hashes --no-deps -r requirements/dev.txt" in runs, name
    # The program's own modules and the worker modules they import (worker.config, worker.storage, worker.schema).
    sources = [
        *(REPO_ROOT / "infra").rglob("*.py"),
        *(REPO_ROOT / "worker" / f"{m}.py" for m in ("config", "storage", "schema")),
    ]
    imported = set()
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    pinned = set(
        re.findall(r"^([A-Za-z0-9_.-]+)==", (REPO_ROOT / "requirements" / "dev.txt").read_text(), re.MULTILINE)
    )
    pinned = {p.lower().replace("_", "-") for p in pinned}
    providers = {  # module -> the installed distributions that provide it (several share a namespace, e.g. google)
        module: {d.lower().replace("_", "-") for d in dists}
        for module, dists in importlib.metadata.packages_distributions().items()
        if module in imported
    }
    assert {"pulumi", "httpx", "tenacity", "b2sdk"} <= set().union(*providers.values())
    unpinned = sorted(module for module, dists in providers.items() if not dists & pinned)
    assert not unpinned, f"imported by the program, in no distribution of requirements/dev.txt: {unpinned}"


def test_deploy_pushes_the_sha_tagged_image_then_runs_pulumi_up_with_that_tag():
    deploy = _load("deploy.yml")
    assert deploy["on"]["workflow_run"]["branches"] == ["main"]  # only main, only once CI has passed
    assert deploy["on"]["workflow_run"]["workflows"] == ["CI"] == [_load("ci.yml")["name"]]
    assert deploy["concurrency"]["cancel-in-progress"] is False  # a running `pulumi up` is never cancelled

    # The image is built by the same `make image` as anywhere, pushed with the deployed commit's tag.
    (build,) = [step for step in _steps(deploy) if step.get("run", "").startswith("make image ")]
    assert build["env"]["IMAGE"] == "${{ vars.IMAGE_REPOSITORY }}:${{ steps.tag.outputs.tag }}"
    assert "--push" in build["run"] and "type=registry" in build["run"] and "type=gha" not in build["run"]
    assert (
        "DEPLOY_SHA: ${{ github.event.workflow_run.head_sha || github.sha }}" in (WORKFLOWS / "deploy.yml").read_text()
    )

    jobs = deploy["jobs"]
    assert jobs["deploy"]["needs"] == "image"
    assert jobs["image"]["outputs"]["tag"] == "${{ steps.tag.outputs.tag }}"
    up = _action(deploy, "pulumi/actions@")["with"]
    assert up["command"] == "up"
    config = yaml.safe_load(up["config-map"])
    assert config["f5tts:imageTag"]["value"] == "${{ needs.image.outputs.tag }}"
    assert config["f5tts:imageRepository"]["value"] == "${{ vars.IMAGE_REPOSITORY }}"


def test_every_action_is_pinned_to_a_commit_and_zizmor_finds_nothing() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        uses = [step["uses"] for step in _steps(_load(path.name)) if "uses" in step]
        assert uses and all(re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", use) for use in uses), uses
        lines = [line for line in path.read_text().splitlines() if "uses: " in line]
        # Each says which release its commit is (the tag it pointed to when pinned).
        assert all(re.search(r"@[0-9a-f]{40} # v\d+\.\d+\.\d+$", line) for line in lines), lines
    zizmor = Path(sys.executable).parent / "zizmor"
    result = subprocess.run(
        [str(zizmor), "--offline", str(WORKFLOWS)], check=False, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_secret_and_variable_the_workflows_use_is_documented():
    used = set()
    for path in WORKFLOWS.glob("*.yml"):
        used |= set(re.findall(r"\b(?:secrets|vars)\.([A-Z0-9_]+)", path.read_text()))
    used.discard("GITHUB_TOKEN")  # provided by GitHub
    docs = (REPO_ROOT / "docs" / "deploy.md").read_text()
    assert used and not {name for name in used if f"`{name}`" not in docs}


def test_deploy_refuses_to_build_before_the_flash_attn_wheel_is_pinned() -> None:
    """The image job's first step: without a FLASH_ATTN_SHA256 variable the build would install flash-attn from its
    URL unchecked, so the job fails there, saying how to get the value. Its script is run here as GitHub runs it."""
    steps = _load("deploy.yml")["jobs"]["image"]["steps"]
    first = steps[0]
    assert first["env"] == {"FLASH_ATTN_SHA256": "${{ vars.FLASH_ATTN_SHA256 }}"}
    assert [step.get("run", "").startswith("make image ") for step in steps].index(True) > 0
    (build,) = [step for step in steps if step.get("run", "").startswith("make image ")]
    assert build["env"]["FLASH_ATTN_SHA256"] == "${{ vars.FLASH_ATTN_SHA256 }}" and "FLASH_ATTN" not in build["env"]

    def run(value: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-e", "-c", first["run"]],
            env={"PATH": "/usr/bin:/bin", "FLASH_ATTN_SHA256": value},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    for missing in ("", "not-a-sha", "A" * 64, "0" * 63):
        refused = run(missing)
        assert refused.returncode == 1, missing
        assert "::error title=FLASH_ATTN_SHA256 is not set to a sha256::" in refused.stdout
        assert "| sha256sum" in refused.stdout and "has sha256" in refused.stdout  # how to get the value
    assert run("0123456789abcdef" * 4).returncode == 0
