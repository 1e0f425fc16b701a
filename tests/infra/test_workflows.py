"""The GitHub workflows: valid against GitHub's workflow schema (vendored, offline) and wired as the pipeline says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.infra.helpers import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"


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


def test_ci_runs_make_test_on_every_push_and_pull_request():
    ci = _load("ci.yml")
    assert "push" in ci["on"] and "pull_request" in ci["on"]
    assert any(s.get("run", "").startswith("make test") for s in _steps(ci))


def test_preview_comments_the_pulumi_preview_on_pull_requests():
    preview = _load("preview.yml")
    assert list(preview["on"]) == ["pull_request"]
    assert preview["permissions"]["pull-requests"] == "write"
    pulumi = _action(preview, "pulumi/actions@")["with"]
    assert pulumi["command"] == "preview"
    assert pulumi["comment-on-pr"] is True


def test_deploy_pushes_the_sha_tagged_image_then_runs_pulumi_up_with_that_tag():
    deploy = _load("deploy.yml")
    assert deploy["on"]["workflow_run"]["branches"] == ["main"]  # only main, only once CI has passed
    assert deploy["on"]["workflow_run"]["workflows"] == ["CI"] == [_load("ci.yml")["name"]]
    assert deploy["concurrency"]["cancel-in-progress"] is False  # a running `pulumi up` is never cancelled

    build = _action(deploy, "docker/build-push-action@")["with"]
    assert build["file"] == "Dockerfile.runpod" and build["push"] is True
    assert build["tags"] == "${{ vars.IMAGE_REPOSITORY }}:${{ steps.tag.outputs.tag }}"
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


def test_every_secret_and_variable_the_workflows_use_is_documented():
    used = set()
    for path in WORKFLOWS.glob("*.yml"):
        used |= set(re.findall(r"\b(?:secrets|vars)\.([A-Z0-9_]+)", path.read_text()))
    used.discard("GITHUB_TOKEN")  # provided by GitHub
    docs = (ROOT / "docs" / "deploy.md").read_text()
    assert used and not {name for name in used if f"`{name}`" not in docs}
