"""Validation of HTTP requests and responses against the committed extract of RunPod's OpenAPI 3.1 document
(`infra/runpod_schema/runpod-rest-v2.json`). OpenAPI 3.1 schemas are JSON Schema 2020-12, so jsonschema validates
them as they are; this module only finds the operation and the schema for a method, path and status.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.support import REPO_ROOT

SCHEMA_PATH = REPO_ROOT / "infra" / "runpod_schema" / "runpod-rest-v2.json"
DOCUMENT = json.loads(SCHEMA_PATH.read_text())
_URI = "urn:runpod-rest-v2"
_REGISTRY = Registry().with_resource(_URI, Resource.from_contents(DOCUMENT, default_specification=DRAFT202012))


@dataclass(frozen=True)
class Operation:
    operation_id: str
    method: str
    template: str
    path_params: dict[str, str]
    spec: dict[str, Any]
    pointer: str  # JSON pointer of the operation object


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def _path_regex(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$")


_ROUTES = [(_path_regex(t), t) for t in DOCUMENT["paths"]]


def find_operation(method: str, path: str) -> Operation | None:
    for regex, template in _ROUTES:
        match = regex.match(path)
        op = DOCUMENT["paths"][template].get(method.lower()) if match else None
        if match and op:
            pointer = f"/paths/{_escape(template)}/{method.lower()}"
            return Operation(op["operationId"], method.upper(), template, match.groupdict(), op, pointer)
    return None


def _validate(instance: Any, pointer: str) -> list[str]:
    validator = Draft202012Validator({"$ref": f"{_URI}#{pointer}"}, registry=_REGISTRY)
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '(body)'}: {error.message}"
        for error in validator.iter_errors(instance)
    ]


def _parameters(operation: Operation) -> list[dict[str, Any]]:
    shared = DOCUMENT["paths"][operation.template].get("parameters", [])
    return [*shared, *operation.spec.get("parameters", [])]


def validate_request(operation: Operation, query: dict[str, list[str]], body: Any | None) -> list[str]:
    """Problems with a request's path parameters, query and body under the operation's schema."""
    problems = []
    params = _parameters(operation)
    declared_query = {p["name"] for p in params if p["in"] == "query"}
    problems += [f"query parameter {name!r} is not declared" for name in query if name not in declared_query]
    for param in params:
        if param["in"] == "path":
            problems += [
                f"path {param['name']}: {m}"
                for m in _validate_schema(operation.path_params.get(param["name"]), param["schema"])
            ]
    request_body = operation.spec.get("requestBody")
    if request_body is None:
        if body is not None:
            problems.append("a body was sent to an operation that takes none")
    elif body is None:
        if request_body.get("required"):
            problems.append("the operation requires a JSON body")
    else:
        problems += _validate(body, f"{operation.pointer}/requestBody/content/application~1json/schema")
    return problems


def _validate_schema(instance: Any, schema: dict[str, Any]) -> list[str]:
    return [e.message for e in Draft202012Validator(schema, registry=_REGISTRY).iter_errors(instance)]


def validate_response(operation: Operation, status: int, content_type: str | None, body: Any | None) -> list[str]:
    """Problems with a response the fake is about to send: its status must be declared, its body must match."""
    responses = operation.spec["responses"]
    key = str(status) if str(status) in responses else "default"
    if key not in responses:
        return [f"status {status} is not declared for {operation.operation_id}"]
    response = responses[key]
    pointer = f"{operation.pointer}/responses/{key}"
    if "$ref" in response:
        name = response["$ref"].rsplit("/", 1)[-1]
        pointer = f"/components/responses/{_escape(name)}"
        response = DOCUMENT["components"]["responses"][name]
    content = response.get("content")
    if not content:
        return [] if body is None else [f"status {status} of {operation.operation_id} has no body"]
    media = (content_type or "").split(";")[0].strip()
    if media not in content:
        return [f"content type {media!r} is not declared for {status} ({', '.join(content)})"]
    return _validate(body, f"{pointer}/content/{_escape(media)}/schema")
