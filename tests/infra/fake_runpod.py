"""A local stand-in for RunPod's GraphQL API (`POST /graphql`) on 127.0.0.1.

Every request is parsed and validated against a schema written from RunPod's GraphQL spec for the operations the
deployment uses (saveTemplate, deleteTemplate, saveEndpoint, deleteEndpoint, myself), then executed against an
in-memory account that enforces RunPod's documented rules: Bearer auth, unique template names, serverless
templates without volumes, only known GPU pools, an endpoint deletable only at zero workers, a template deletable
only when no endpoint uses it (and, like RunPod, not for a while after its endpoint went away). Every request is
recorded so tests can assert exactly what was sent.
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from graphql import GraphQLError, build_schema, graphql_sync, parse, validate

SCHEMA = build_schema(
    """
    enum FlashBootType { OFF FLASHBOOT PRIORITY_FLASHBOOT }

    input EnvironmentVariableInput { key: String! value: String! }

    input SaveTemplateInput {
      id: String
      name: String!
      imageName: String!
      containerDiskInGb: Int!
      volumeInGb: Int!
      dockerArgs: String!
      env: [EnvironmentVariableInput]!
      isServerless: Boolean
      isPublic: Boolean
      readme: String
      ports: String
      volumeMountPath: String
      startSsh: Boolean
      containerRegistryAuthId: String
    }

    input EndpointInput {
      id: String
      name: String!
      templateId: String!
      gpuIds: String!
      gpuCount: Int
      workersMin: Int
      workersMax: Int
      idleTimeout: Int
      scalerType: String
      scalerValue: Int
      flashBootType: FlashBootType
      executionTimeoutMs: Int
      allowedCudaVersions: String
      minCudaVersion: String
      locations: String
      networkVolumeId: String
      type: String
    }

    type EnvironmentVariable { key: String value: String }

    type PodTemplate {
      id: String!
      name: String
      imageName: String
      containerDiskInGb: Int
      volumeInGb: Int
      dockerArgs: String
      isServerless: Boolean
      readme: String
      containerRegistryAuthId: String
      env: [EnvironmentVariable]
    }

    type Endpoint {
      id: String!
      name: String
      templateId: String
      gpuIds: String
      gpuCount: Int
      workersMin: Int
      workersMax: Int
      idleTimeout: Int
      scalerType: String
      scalerValue: Int
      flashBootType: FlashBootType
      executionTimeoutMs: Int
      allowedCudaVersions: String
      locations: String
      networkVolumeId: String
    }

    type User { id: String endpoints: [Endpoint] podTemplates: [PodTemplate] }

    type Query { myself: User, podTemplate(id: String!): PodTemplate }

    type Mutation {
      saveTemplate(input: SaveTemplateInput): PodTemplate
      deleteTemplate(templateName: String!): Boolean
      saveEndpoint(input: EndpointInput!): Endpoint
      deleteEndpoint(id: String!): Boolean
    }
    """
)

GPU_POOLS = {
    "AMPERE_16",
    "AMPERE_24",
    "ADA_24",
    "AMPERE_48",
    "ADA_48_PRO",
    "AMPERE_80",
    "ADA_80_PRO",
    "ADA_32_PRO",
    "HOPPER_141",
    "BLACKWELL_96",
    "BLACKWELL_180",
}


@dataclass
class RecordedRequest:
    operation: str
    query: str
    variables: dict[str, Any]
    authorization: str | None
    errors: list[str] = field(default_factory=list)


class FakeRunpodAccount:
    """The account state and the rules RunPod applies to it."""

    def __init__(self, api_key: str, template_release_attempts: int = 0) -> None:
        self.api_key = api_key
        self.templates: dict[str, dict[str, Any]] = {}
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.requests: list[RecordedRequest] = []
        # deleteTemplate calls refused as "in use" after the template's endpoint is deleted (RunPod: ~2 min).
        self.template_release_attempts = template_release_attempts
        self._locked_templates: dict[str, int] = {}
        self._ids = (f"{n:014d}"[-14:] for n in itertools.count(1000))
        self._lock = threading.Lock()

    # --- resolvers (graphql-core calls root_value entries with (info, **args)) ---------------------------------
    def saveTemplate(self, _info: Any, input: dict[str, Any] | None = None) -> dict[str, Any]:
        if input is None:
            raise GraphQLError("input is required")
        template = dict(input)
        if template.get("isServerless") and template["volumeInGb"] != 0:
            raise GraphQLError("Serverless templates cannot have a volume")
        template_id = template.pop("id", None)
        for other_id, other in self.templates.items():
            if other["name"] == template["name"] and other_id != template_id:
                raise GraphQLError("Template name must be unique")
        if template_id is not None:
            if template_id not in self.templates:
                raise GraphQLError("Template not found")
            self.templates[template_id].update(template)
        else:
            template_id = "t" + next(self._ids)
            self.templates[template_id] = template
        return {"id": template_id, **self.templates[template_id]}

    def deleteTemplate(self, _info: Any, templateName: str) -> None:
        match = [tid for tid, t in self.templates.items() if t["name"] == templateName]
        if not match:
            raise GraphQLError("Template not found")
        template_id = match[0]
        users = [eid for eid, e in self.endpoints.items() if e["templateId"] == template_id]
        if users:
            raise GraphQLError(f"Template is in use by endpoint {users[0]}")
        if self._locked_templates.get(template_id, 0) > 0:
            self._locked_templates[template_id] -= 1
            raise GraphQLError("Template is in use, try again in a few minutes")
        del self.templates[template_id]

    def saveEndpoint(self, _info: Any, input: dict[str, Any]) -> dict[str, Any]:
        endpoint = dict(input)
        endpoint_id = endpoint.pop("id", None)
        template = self.templates.get(endpoint["templateId"])
        if template is None or not template.get("isServerless"):
            raise GraphQLError("templateId must name a serverless template")
        unknown = [g for g in endpoint["gpuIds"].split(",") if g not in GPU_POOLS]
        if unknown:
            raise GraphQLError(f"Unknown GPU pool(s): {', '.join(unknown)}")
        if endpoint_id is not None:
            if endpoint_id not in self.endpoints:
                raise GraphQLError("Endpoint not found")
            merged = {**self.endpoints[endpoint_id], **endpoint}
        else:
            endpoint_id = "e" + next(self._ids)
            merged = {"workersMin": 0, "workersMax": 3, "idleTimeout": 5, "flashBootType": "OFF", **endpoint}
        if merged["workersMin"] > merged["workersMax"]:
            raise GraphQLError("workersMin cannot be greater than workersMax")
        self.endpoints[endpoint_id] = merged
        return {"id": endpoint_id, **merged}

    def deleteEndpoint(self, _info: Any, id: str) -> None:
        endpoint = self.endpoints.get(id)
        if endpoint is None:
            raise GraphQLError("Endpoint not found")
        if endpoint["workersMin"] != 0 or endpoint["workersMax"] != 0:
            raise GraphQLError("Endpoint must be scaled to 0 workers (min and max) before it can be deleted")
        del self.endpoints[id]
        self._locked_templates[endpoint["templateId"]] = self.template_release_attempts

    def podTemplate(self, _info: Any, id: str) -> dict[str, Any]:
        if id not in self.templates:
            raise GraphQLError("Template not found")
        return {"id": id, **self.templates[id]}

    def myself(self, _info: Any) -> dict[str, Any]:
        return {
            "id": "user-1",
            "endpoints": [{"id": eid, **e} for eid, e in self.endpoints.items()],
            "podTemplates": [{"id": tid, **t} for tid, t in self.templates.items()],
        }

    # --- one HTTP request --------------------------------------------------------------------------------------
    def handle(self, body: dict[str, Any], authorization: str | None) -> tuple[int, dict[str, Any]]:
        query = body.get("query", "")
        variables = body.get("variables") or {}
        record = RecordedRequest(_operation_name(query), query, variables, authorization)
        with self._lock:
            self.requests.append(record)
            if authorization != f"Bearer {self.api_key}":
                record.errors.append("unauthorized")
                return 401, {"errors": [{"message": "Unauthorized"}]}
            try:
                document = parse(query)
            except GraphQLError as exc:
                record.errors.append(exc.message)
                return 400, {"errors": [{"message": exc.message}]}
            problems = [e.message for e in validate(SCHEMA, document)] + _non_integral_numbers(variables)
            if problems:
                record.errors.extend(problems)
                return 400, {"errors": [{"message": m} for m in problems]}
            result = graphql_sync(SCHEMA, query, root_value=self, variable_values=variables)
            if result.errors:
                record.errors.extend(e.message for e in result.errors)
                return 200, {"data": result.data, "errors": [{"message": e.message} for e in result.errors]}
            return 200, {"data": result.data}

    def operations(self) -> list[str]:
        return [r.operation for r in self.requests]


def _operation_name(query: str) -> str:
    try:
        definition = parse(query).definitions[0]
    except (GraphQLError, IndexError):
        return "?"
    selection = definition.selection_set.selections[0]  # type: ignore[attr-defined]
    return selection.name.value


def _non_integral_numbers(value: Any, path: str = "variables") -> list[str]:
    # JSON has one number type and graphql-core accepts 4.0 for Int; RunPod's inputs here are all integers, so a
    # float reaching the wire means a provider forgot to convert Pulumi's floats.
    if isinstance(value, float):
        return [f"{path}: {value!r} is not an integer"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _non_integral_numbers(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _non_integral_numbers(v, f"{path}[{i}]")]
    return []


class FakeRunpodServer:
    """Serves a FakeRunpodAccount on 127.0.0.1 (ephemeral port) until stop(), or at most `max_lifetime_s`."""

    def __init__(self, account: FakeRunpodAccount, max_lifetime_s: float = 120.0) -> None:
        self.account = account
        handler = _handler_for(account)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._watchdog = threading.Timer(max_lifetime_s, self.stop)
        self._watchdog.daemon = True

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeRunpodServer:
        self._thread.start()
        self._watchdog.start()
        return self

    def stop(self) -> None:
        self._watchdog.cancel()
        self._server.shutdown()
        self._server.server_close()


def _handler_for(account: FakeRunpodAccount) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path != "/graphql":
                self._reply(404, {"errors": [{"message": "not found"}]})
                return
            length = int(self.headers.get("Content-Length", "0"))
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                self._reply(400, {"errors": [{"message": "body is not JSON"}]})
                return
            status, payload = account.handle(body, self.headers.get("Authorization"))
            self._reply(status, payload)

        def _reply(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: Any) -> None:  # keep pytest output clean
            pass

    return Handler
