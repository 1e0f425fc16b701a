"""Rendering the contract into Python source with jinja2 templates.

Why our own small templates and not datamodel-code-generator: on this contract its output wraps every
constrained nullable field in a numbered `RootModel` (`Voice2`, `Seed2`, ...) with an invalid `= None` default,
and flattens the error-code enum; the contract's subset of JSON Schema is small enough (see `contract.py`) that
a template gives plain, readable pydantic models whose fields match the worker's one to one.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from clients.codegen.contract import Contract, FieldSpec, ModelSpec, TypeSpec
from clients.codegen.methods import METHODS, MethodSpec

TEMPLATES = Path(__file__).parent / "templates"
AUDIO_SOURCE = "AudioSource"  # a model the client accepts as a path, bytes or URL (see f5tts_client._audio_input)
DOC_WIDTH = 112


def py_literal(value: Any) -> str:
    """A JSON value as Python source (strings double-quoted, like the rest of the code base)."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(value)
    raise ValueError(f"unsupported default {value!r}")


def _literal(values: tuple[Any, ...]) -> str:
    return "Literal[" + ", ".join(py_literal(v) for v in values) + "]"


def _base_annotation(t: TypeSpec, ref_prefix: str, *, constrained: bool) -> str:
    if t.kind == "literal":
        text = _literal(t.values)
    elif t.kind == "list":
        assert t.item is not None, "a list TypeSpec names its item type"
        text = f"list[{_base_annotation(t.item, ref_prefix, constrained=constrained)}]"
    elif t.kind == "ref":
        text = ref_prefix + t.name
    elif t.kind == "dict":
        assert t.key is not None and t.item is not None, "a dict TypeSpec names its key and value types"
        key = _base_annotation(t.key, ref_prefix, constrained=constrained)
        text = f"dict[{key}, {_base_annotation(t.item, ref_prefix, constrained=constrained)}]"
    else:
        text = t.name
    if constrained and t.constraints and t.kind in ("scalar", "dict"):
        args = ", ".join(f"{k}={py_literal(v)}" for k, v in t.constraints)
        text = f"Annotated[{text}, Field({args})]"
    return text


def model_annotation(t: TypeSpec) -> str:
    """The annotation of a model field: constraints stay on the inner type so `None` is still allowed."""
    text = _base_annotation(t, "", constrained=True)
    return f"{text} | None" if t.nullable else text


def param_annotation(t: TypeSpec) -> str:
    """The annotation of a client method parameter (constraints live in the docstring and the model)."""
    if t.kind == "ref" and t.name == AUDIO_SOURCE:
        text = "AudioInput"
    else:
        text = _base_annotation(t, "models.", constrained=False)
    return f"{text} | None" if t.nullable else text


def field_declaration(f: FieldSpec) -> str:
    """`name: annotation [= default]` of a model field, with `Field(description=...)` where there is one."""
    annotation = model_annotation(f.type)
    kwargs = []
    if not f.required:
        kwargs.append(py_literal(f.default))
    if f.description:
        kwargs.append(f"description={py_literal(f.description)}")
    if not kwargs:
        return f"{f.name}: {annotation}"
    if not f.required and not f.description:
        return f"{f.name}: {annotation} = {py_literal(f.default)}"
    return f"{f.name}: {annotation} = Field({', '.join(kwargs)})"


def constraint_text(t: TypeSpec) -> str:
    c = dict(t.constraints)
    parts = []
    if t.kind == "dict":
        assert t.key is not None and t.item is not None, "a dict TypeSpec names its key and value types"
        if "max_length" in c:
            parts.append(f"at most {c['max_length']} entries")
        parts += [
            f"{what} {text}"
            for what, text in (("keys", constraint_text(t.key)), ("values", constraint_text(t.item)))
            if text
        ]
    elif "min_length" in c or "max_length" in c:
        if "min_length" in c and "max_length" in c:
            parts.append(f"{c['min_length']} to {c['max_length']} characters")
        elif "max_length" in c:
            parts.append(f"at most {c['max_length']} characters")
        else:
            parts.append(f"at least {c['min_length']} characters")
    if "ge" in c and "le" in c:
        parts.append(f"from {py_literal(c['ge'])} to {py_literal(c['le'])}")
    elif "ge" in c:
        parts.append(f"at least {py_literal(c['ge'])}")
    elif "le" in c:
        parts.append(f"at most {py_literal(c['le'])}")
    if t.kind == "literal" and len(t.values) > 1:
        parts.append("one of " + ", ".join(f"`{v}`" for v in t.values))
    return "; ".join(parts)


def param_doc(f: FieldSpec) -> str:
    """The docstring text of one parameter: the contract's description, its range, its default."""
    text = (f.description or "").rstrip()
    if text and not text.endswith("."):
        text += "."
    extra = constraint_text(f.type)
    if extra:
        text += f" {extra[0].upper()}{extra[1:]}."
    if f.type.kind == "ref" and f.type.name == AUDIO_SOURCE:
        text += " A file path, raw bytes, or an http(s) URL the worker fetches."
    if not f.required and f.default is not None:
        text += f" Default: `{py_literal(f.default)}`."
    return text.strip()


def fill(text: str, indent: str, initial: str | None = None) -> str:
    """Docstring prose wrapped to the docstring width; `initial` replaces the indent of the first line."""
    return textwrap.fill(
        text,
        width=DOC_WIDTH,
        initial_indent=indent if initial is None else initial,
        subsequent_indent=indent,
        break_on_hyphens=False,
    )


def wrap_doc(name: str, text: str, indent: str) -> str:
    """One `name: text` entry of an Args section, wrapped to the docstring width."""
    return textwrap.fill(
        f"{name}: {text}",
        width=DOC_WIDTH,
        initial_indent=indent,
        subsequent_indent=indent + "    ",
        break_on_hyphens=False,
    )


@dataclass(frozen=True)
class Param:
    name: str
    annotation: str
    default: str | None  # python source (`NOT_GIVEN`), None when required
    doc: str
    value: str  # expression that puts the argument into the job input


@dataclass(frozen=True)
class Method:
    spec: MethodSpec
    description: str | None
    positional: tuple[Param, ...]
    keyword: tuple[Param, ...]
    call: str  # the body's return statement


def _not_given_union(annotation: str) -> str:
    """`annotation | NotGiven`, with a `None` member kept last (`str | NotGiven | None`), as ruff's RUF036 wants."""
    members = annotation.split(" | ")
    if "None" not in members:
        return f"{annotation} | NotGiven"
    return " | ".join([*(m for m in members if m != "None"), "NotGiven", "None"])


def _param(f: FieldSpec) -> Param:
    """An optional field defaults to `NOT_GIVEN` rather than the contract's default: the client sends only what
    the caller set, and the worker applies its own default to the rest (the docstring still names it)."""
    is_audio = f.type.kind == "ref" and f.type.name == AUDIO_SOURCE
    annotation = param_annotation(f.type)
    return Param(
        name=f.name,
        annotation=annotation if f.required else _not_given_union(annotation),
        default=None if f.required else "NOT_GIVEN",
        doc=param_doc(f),
        value=f"audio_source({f.name}, {py_literal(f.name)})" if is_audio else f.name,
    )


def build_methods(contract: Contract) -> list[Method]:
    methods = []
    for spec in METHODS:
        model: ModelSpec = contract.models[contract.actions[spec.action][0]]
        fields = [f for f in model.fields if f.name not in spec.excluded]
        unknown = set(spec.positional) - {f.name for f in fields}
        if unknown:
            raise ValueError(f"{spec.name}: positional parameters {sorted(unknown)} are not in {model.name}")
        positional = tuple(_param(model.field(n)) for n in spec.positional)
        keyword = tuple(_param(f) for f in fields if f.name not in spec.positional)
        if any(p.default is None for p in keyword):
            raise ValueError(f"{spec.name}: required contract fields must be positional")
        call = spec.call.format(action=spec.action, output=contract.actions[spec.action][1])
        methods.append(Method(spec, model.description, positional, keyword, call))
    return methods


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(py=py_literal, field_declaration=field_declaration, wrap_doc=wrap_doc, fill=fill)
    env.globals.update(camel=camel_case)
    return env


def camel_case(code: str) -> str:
    return "".join(part.capitalize() for part in code.split("_"))


def exception_name(code: str) -> str:
    """`voice_not_found` -> `VoiceNotFound`; a one-word code gets an `Error` suffix (`internal` -> `InternalError`)."""
    name = camel_case(code)
    return name if "_" in code or name.endswith("Error") else f"{name}Error"


def render(template: str, header: str, **context: Any) -> str:
    source = environment().get_template(template).render(header=header, **context)
    return source.rstrip("\n") + "\n"


def render_models(contract: Contract, header: str) -> str:
    return render("models.py.jinja", header, contract=contract, models=contract.models_in_dependency_order())


def render_error_code_exceptions(contract: Contract, header: str) -> str:
    errors = [(code, exception_name(code)) for code in contract.error_codes]
    return render("error_code_exceptions.py.jinja", header, errors=errors)


def render_params(contract: Contract, header: str) -> str:
    return render("params.py.jinja", header, contract=contract, options=_options(contract))


def render_async_client(contract: Contract, header: str) -> str:
    methods = build_methods(contract)
    annotations = [p.annotation for m in methods for p in m.positional + m.keyword]
    return render(
        "client.py.jinja",
        header,
        uses_literal=any("Literal[" in a for a in annotations),
        uses_audio=any("AudioInput" in a for a in annotations),
        uses_not_given=any("NotGiven" in a for a in annotations),
        client_methods=[m for m in methods if m.spec.owner == "client"],
        voices_methods=[m for m in methods if m.spec.owner == "voices"],
    )


def _tuple_source(values: tuple[Any, ...]) -> str:
    items = [py_literal(v) for v in values]
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def _options(contract: Contract) -> dict[str, list[dict[str, str]]]:
    """Per action, each input field as the CLI needs it: kind, default, choices, range, help text."""
    options: dict[str, list[dict[str, str]]] = {}
    for action, (input_name, _output) in contract.actions.items():
        rows = []
        for f in contract.models[input_name].fields:
            if f.const is not None:
                continue
            t = f.type
            if t.kind == "ref" and t.name == AUDIO_SOURCE:
                kind = "audio"
            elif t.kind == "literal":
                kind = "choice"
            elif t.kind == "scalar":
                kind = t.name
            else:
                continue  # nothing a command line can give
            c = dict(t.constraints)
            rows.append(
                {
                    "name": py_literal(f.name),
                    "kind": py_literal(kind),
                    "required": py_literal(f.required),
                    "default": py_literal(f.default),
                    "choices": _tuple_source(t.values) if kind == "choice" else "()",
                    "minimum": py_literal(c.get("ge")),
                    "maximum": py_literal(c.get("le")),
                    "help": py_literal(param_doc(f)),
                }
            )
        options[action] = rows
    return options


# ---------------------------------------------------------------------------------------------- docs
def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_docs_sections(contract: Contract) -> dict[str, str]:
    """Markdown tables for docs/client.md: the synthesis parameters and the error codes, from the contract."""
    model = contract.models[contract.actions["synthesize"][0]]
    rows = ["| parameter | type | worker default | range | meaning |", "|---|---|---|---|---|"]
    for f in model.fields:
        if f.name in ("action", "stream"):
            continue
        annotation = param_annotation(f.type)
        default = "required" if f.required else f"`{py_literal(f.default)}`"
        rng = constraint_text(f.type) if f.type.kind != "literal" else ""
        rows.append(f"| `{f.name}` | `{_cell(annotation)}` | {default} | {_cell(rng)} | {_cell(f.description or '')} |")
    errors = ["| error code | exception |", "|---|---|"]
    errors += [f"| `{code}` | `{exception_name(code)}` |" for code in contract.error_codes]
    return {"synthesize-parameters": "\n".join(rows) + "\n", "error-codes": "\n".join(errors) + "\n"}
