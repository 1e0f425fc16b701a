"""worker.schema: the job contract's parsing, its coded errors and its JSON Schema export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from worker.schema import (
    ACTIONS,
    MAX_ECHO_CHARS,
    MAX_INPUT_DEPTH,
    ContractError,
    ErrorCode,
    SynthesizeInput,
    contract_json,
    contract_schema,
    echo,
    main,
    parse_job_input,
)


def refused(raw: Any) -> ContractError:
    with pytest.raises(ContractError) as caught:
        parse_job_input(raw)
    assert caught.value.code == ErrorCode.invalid_input
    return caught.value


def test_synthesize_is_the_default_action_and_defaults_are_filled() -> None:
    job = parse_job_input({"text": "Hello."})
    assert isinstance(job, SynthesizeInput)
    assert (job.action, job.text, job.voice, job.ref_audio) == ("synthesize", "Hello.", None, None)


def test_every_action_parses_to_its_own_model() -> None:
    jobs: dict[str, dict[str, Any]] = {
        "synthesize": {"text": "Hi."},
        "upload_voice": {"name": "alice", "audio": {"base64": "UklGRg=="}, "text": "Hi."},
        "list_voices": {},
        "delete_voice": {"name": "alice"},
        "health": {},
    }
    assert set(jobs) == set(ACTIONS)
    for action, fields in jobs.items():
        assert parse_job_input({"action": action, **fields}).model_dump()["action"] == action


@pytest.mark.parametrize("raw", [None, [], "text", 3])
def test_a_job_input_that_is_not_an_object_is_refused(raw: Any) -> None:
    assert "JSON object" in str(refused(raw))


def test_an_unknown_action_is_refused_naming_the_field_and_the_choices() -> None:
    error = refused({"action": "sing"})
    assert error.body.field == "action" and "'sing'" in error.body.message and "upload_voice" in error.body.message


def test_a_misspelt_field_is_an_error_not_a_silent_default() -> None:
    error = refused({"text": "Hi.", "sped": 1.2})
    assert error.body.field == "sped"


def test_a_field_error_names_the_dotted_path_without_the_action() -> None:
    error = refused({"text": "Hi.", "ref_audio": {"url": "http://x/a.wav", "base64": "AA=="}, "ref_text": "Hi."})
    assert error.body.field == "ref_audio" and "exactly one" in error.body.message


def test_input_nested_too_deep_is_refused_before_validation() -> None:
    nested: Any = "x"
    for _ in range(MAX_INPUT_DEPTH + 1):
        nested = [nested]
    assert "nests deeper" in str(refused({"text": "Hi.", "extra": nested}))


def test_caller_input_quoted_in_errors_is_cut() -> None:
    long = "a" * 10_000
    assert len(echo(long)) <= MAX_ECHO_CHARS + 3 and echo("short") == "'short'"
    assert len(refused({"action": long}).body.message) < 300


def test_the_error_string_is_the_json_runpod_carries() -> None:
    error = ContractError(ErrorCode.voice_not_found, "no voice 'bob'", "voice")
    assert json.loads(error.to_error_string()) == {
        "code": "voice_not_found",
        "message": "no voice 'bob'",
        "field": "voice",
    }


def test_the_contract_document_names_every_action_model_and_error_code() -> None:
    schema = contract_schema()
    assert set(schema["actions"]) == set(ACTIONS)
    for models in schema["actions"].values():
        assert {models["input"], models["output"]} <= set(schema["$defs"])
    assert {"StreamChunk", "StreamEnd", "ErrorBody"} <= set(schema["$defs"])
    assert schema["error_codes"] == [code.value for code in ErrorCode]
    # Every internal reference resolves inside the document.
    refs = {ref.removeprefix("#/$defs/") for ref in _refs(schema)}
    assert refs <= set(schema["$defs"])


def test_main_writes_the_contract_file(tmp_path: Path) -> None:
    target = tmp_path / "schema" / "contract.json"
    assert main(["--write", str(target)]) == 0
    assert target.read_text() == contract_json() and json.loads(target.read_text()) == contract_schema()


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []
