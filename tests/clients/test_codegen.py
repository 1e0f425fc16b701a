"""The generator: contract fields become client parameters (in both clients), the sync client is the async one's
exact twin, and schema constructs it does not understand fail loudly instead of generating wrong code."""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys

import f5tts_client as f5
import pytest
from f5tts_client._async._base import AsyncClientBase
from f5tts_client._sync._base import ClientBase

from clients.codegen import CONTRACT, PACKAGE, REPO, SYNC_NAMES, generate, unused_sync_names
from clients.codegen.contract import parse_type
from clients.codegen.render import constraint_text, model_annotation, param_annotation


def _functions(source: str, cls: str) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    tree = ast.parse(source)
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
    return {f.name: f for f in node.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_a_new_contract_field_appears_in_both_clients_the_models_and_the_cli(tmp_path):
    contract = json.loads(CONTRACT.read_text())
    contract["$defs"]["SynthesizeInput"]["properties"]["pitch_shift"] = {
        "default": 0.0,
        "description": "Pitch shift in semitones.",
        "maximum": 12.0,
        "minimum": -12.0,
        "title": "Pitch Shift",
        "type": "number",
    }
    modified = tmp_path / "contract.json"
    modified.write_text(json.dumps(contract))

    files = generate(modified)
    for path, cls in (("_async/_client.py", "AsyncClient"), ("_sync/_client.py", "Client")):
        for method in ("synthesize", "synthesize_stream", "submit"):
            fn = _functions(files[path], cls)[method]
            names = [a.arg for a in fn.args.kwonlyargs]
            assert "pitch_shift" in names, (cls, method)
            index = names.index("pitch_shift")
            default, annotation = fn.args.kw_defaults[index], fn.args.kwonlyargs[index].annotation
            assert default is not None and annotation is not None
            assert ast.unparse(default) == "NOT_GIVEN"  # left out unless the caller sets it
            assert ast.unparse(annotation) == "float | NotGiven"
            doc = ast.get_docstring(fn)
            assert doc and "pitch_shift: Pitch shift in semitones. From -12.0 to 12.0. Default: `0.0`." in doc
            assert "'pitch_shift': pitch_shift" in ast.unparse(fn)  # sent with the job
    assert (
        'pitch_shift: Annotated[float, Field(ge=-12.0, le=12.0)] = Field(0.0, description="Pitch shift in semitones.")'
        in files["_generated/models.py"]
    )
    assert '"pitch_shift",' in files["_generated/params.py"]
    # ... and nothing of it in the committed code, which follows the real contract.
    assert "pitch_shift" not in inspect.getsource(f5.Client)


PUBLIC_PAIRS = [
    (f5.Client, f5.AsyncClient),
    (ClientBase, AsyncClientBase),
    (f5.Voices, f5.AsyncVoices),
    (f5.Job, f5.AsyncJob),
    (f5.AudioStream, f5.AsyncAudioStream),
    (f5.SynthesisResult, f5.AsyncSynthesisResult),
]


@pytest.mark.parametrize(("sync_cls", "async_cls"), PUBLIC_PAIRS, ids=lambda c: c.__name__)
def test_the_sync_client_is_the_async_clients_twin(sync_cls, async_cls):
    def public(cls):
        return {n: m for n, m in vars(cls).items() if not n.startswith("_") and callable(m)}

    sync_methods, async_methods = public(sync_cls), public(async_cls)
    renamed = {"aclose": "close"}
    assert set(sync_methods) == {renamed.get(n, n) for n in async_methods}
    for name, async_method in async_methods.items():
        sync_method = sync_methods[renamed.get(name, name)]
        assert not inspect.iscoroutinefunction(sync_method), name
        assert list(inspect.signature(sync_method).parameters) == list(inspect.signature(async_method).parameters), name
        defaults = [p.default for p in inspect.signature(sync_method).parameters.values()]
        assert defaults == [p.default for p in inspect.signature(async_method).parameters.values()], name
        assert inspect.getdoc(sync_method) == inspect.getdoc(async_method), name


def test_api_methods_are_keyword_only_after_their_required_arguments():
    signature = inspect.signature(f5.Client.synthesize)
    kinds = {name: p.kind for name, p in signature.parameters.items()}
    assert kinds["text"] is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(kind is inspect.Parameter.KEYWORD_ONLY for name, kind in kinds.items() if name not in ("self", "text"))
    assert (
        signature.parameters["format"].default is f5.NOT_GIVEN
        and signature.parameters["nfe_step"].default is f5.NOT_GIVEN
    )
    upload = inspect.signature(f5.Voices.upload).parameters
    assert list(upload)[:4] == ["self", "name", "audio", "text"]


ASYNC_ONLY = {
    "asyncio",
    "aclose",
    "aread",
    "aiter_bytes",
    "__aenter__",
    "__aexit__",
    "__aiter__",
    "__anext__",
    "AsyncIterator",
}


def test_the_sync_twin_has_no_async_left():
    for rel, source in generate().items():
        if rel.startswith("_sync/"):
            tree = ast.parse(source)
            assert not [
                n
                for n in ast.walk(tree)
                if isinstance(n, (ast.AsyncFunctionDef, ast.Await, ast.AsyncFor, ast.AsyncWith))
            ], rel
            names = (
                {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
                | {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
                | {n.name for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
            )
            assert not [n for n in names if n.startswith(("Async", "Sync", "_async")) or n in ASYNC_ONLY], rel


def test_every_sync_rename_rule_renames_something_and_a_stale_one_fails_the_generation(monkeypatch):
    sources = [p.read_text() for p in (PACKAGE / "_async").glob("*.py")]
    assert unused_sync_names(sources) == []
    monkeypatch.setitem(SYNC_NAMES, "AsyncLeftOver", "LeftOver")
    with pytest.raises(ValueError, match="AsyncLeftOver"):
        generate()


def test_the_sync_twins_imports_are_sorted_as_ruff_sorts_them():
    # Renaming `_async` to `_sync` and `asyncio` to `time` moves imports within the alphabet.
    sync_files = sorted(str(p) for p in (PACKAGE / "_sync").glob("*.py"))
    check = [sys.executable, "-m", "ruff", "check", "--select", "I", "--quiet", *sync_files]
    done = subprocess.run(check, cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "schema",
    [
        {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        {"$ref": "https://example.test/other.json"},
        {"type": "object", "additionalProperties": True},  # values of any type
        {"type": "object", "properties": {"a": {"type": "string"}}},  # an object defined inline
    ],
)
def test_unsupported_schema_constructs_fail_loudly(schema):
    with pytest.raises(ValueError):
        parse_type(schema)


def test_a_mapping_of_strings_keeps_its_bounds_in_the_model_and_the_docs():
    labels = parse_type(
        {
            "anyOf": [
                {
                    "type": "object",
                    "additionalProperties": {"type": "string", "maxLength": 200},
                    "propertyNames": {"minLength": 1, "maxLength": 64},
                    "maxProperties": 16,
                },
                {"type": "null"},
            ]
        }
    )
    assert model_annotation(labels) == (
        "Annotated[dict[Annotated[str, Field(min_length=1, max_length=64)], Annotated[str, Field(max_length=200)]], "
        "Field(max_length=16)] | None"
    )
    assert param_annotation(labels) == "dict[str, str] | None"
    assert constraint_text(labels) == "at most 16 entries; keys 1 to 64 characters; values at most 200 characters"
