"""The committed extract of RunPod's OpenAPI document is what the extract script makes of the reference, and it
covers every operation the providers call."""

from __future__ import annotations

import importlib.util
import inspect
import re

import pytest
from f5tts_infra import runpod_rest

from tests.infra.runpod_openapi import DOCUMENT, SCHEMA_PATH, find_operation
from tests.support import REPO_ROOT

# A script, not a package module: loaded from its file as `python infra/runpod_schema/extract.py` runs it.
_spec = importlib.util.spec_from_file_location("extract", REPO_ROOT / "infra" / "runpod_schema" / "extract.py")
assert _spec is not None and _spec.loader is not None
extract = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(extract)
REFERENCE = extract.DEFAULT_REFERENCE


@pytest.mark.skipif(
    not REFERENCE.is_file(), reason="RunPod's reference (../shared/reference) is not next to this clone"
)
def test_committed_extract_matches_a_fresh_one():
    assert SCHEMA_PATH.read_text() == extract.render(REFERENCE), "run: python infra/runpod_schema/extract.py"


def test_extract_names_its_source_and_keeps_only_validation():
    assert DOCUMENT["x-source"] == extract.SOURCE and re.fullmatch(r"[0-9a-f]{64}", DOCUMENT["x-source-sha256"])
    text = SCHEMA_PATH.read_text()
    assert '"description"' not in text and '"examples"' not in text
    operations = {
        op["operationId"]
        for item in DOCUMENT["paths"].values()
        for op in item.values()
        if isinstance(op, dict) and "operationId" in op
    }
    assert operations == set(extract.OPERATIONS)


def test_every_call_of_the_client_is_an_operation_of_the_extract():
    source = inspect.getsource(runpod_rest)
    calls = set(re.findall(r'_send\("(GET|POST|PATCH|DELETE)", f?"([^"]+)"', source))
    calls |= set(re.findall(r'request\("(GET|POST|PATCH|DELETE)", f?"([^"]+)"', source))
    assert len(calls) >= 9
    for method, path in calls:
        concrete = "/v2" + re.sub(r"\{[^}]+\}", "x1", path)
        assert find_operation(method, concrete) is not None, f"{method} {path}"
