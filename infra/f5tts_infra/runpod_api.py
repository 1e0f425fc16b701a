"""The RunPod GraphQL calls the deployment needs: save/delete a serverless template and an endpoint.

These are the calls `runpod.api.ctl_commands` makes (same endpoint, `Authorization: Bearer`, `RUNPOD_API_BASE_URL`
override, GraphQL `errors` raised), sent with GraphQL variables instead of the SDK's string-built mutations: those
interpolate values into the query unescaped (an env value with a quote breaks the query, and secrets would sit in
query text), cannot set `executionTimeoutMs`, update an endpoint in place, or delete anything, and importing the SDK
pulls in the whole worker runtime. Only `requests` is needed here.
"""

from __future__ import annotations

import os
from typing import Any

import requests

DEFAULT_API_BASE_URL = "https://api.runpod.io"
ENDPOINT_URL_BASE = "https://api.runpod.ai/v2"

_ENDPOINT_FIELDS = """
    id name templateId gpuIds gpuCount workersMin workersMax idleTimeout
    scalerType scalerValue flashBootType executionTimeoutMs allowedCudaVersions locations networkVolumeId
"""
_TEMPLATE_FIELDS = "id name imageName containerDiskInGb volumeInGb dockerArgs isServerless env { key value }"

SAVE_TEMPLATE = f"""
mutation saveTemplate($input: SaveTemplateInput) {{
  saveTemplate(input: $input) {{ {_TEMPLATE_FIELDS} }}
}}"""
DELETE_TEMPLATE = """
mutation deleteTemplate($templateName: String!) {
  deleteTemplate(templateName: $templateName)
}"""
SAVE_ENDPOINT = f"""
mutation saveEndpoint($input: EndpointInput!) {{
  saveEndpoint(input: $input) {{ {_ENDPOINT_FIELDS} }}
}}"""
DELETE_ENDPOINT = """
mutation deleteEndpoint($id: String!) {
  deleteEndpoint(id: $id)
}"""
LIST_ENDPOINTS = f"""
query endpoints {{
  myself {{ endpoints {{ {_ENDPOINT_FIELDS} }} }}
}}"""
GET_TEMPLATE = """
query podTemplate($id: String!) {
  podTemplate(id: $id) { id name imageName containerDiskInGb isServerless }
}"""


class RunpodApiError(RuntimeError):
    """RunPod refused a call; the message is RunPod's (never the API key)."""


def api_base_url() -> str:
    return os.environ.get("RUNPOD_API_BASE_URL", DEFAULT_API_BASE_URL).rstrip("/")


def endpoint_url(endpoint_id: str) -> str:
    return f"{ENDPOINT_URL_BASE}/{endpoint_id}"


class RunpodClient:
    def __init__(self, api_key: str, base_url: str | None = None, timeout_s: float = 30.0) -> None:
        self._api_key = api_key
        self._url = f"{base_url or api_base_url()}/graphql"
        self._timeout_s = timeout_s

    def execute(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = requests.post(
                self._url,
                json={"query": query, "variables": variables or {}},
                headers={"Authorization": f"Bearer {self._api_key}", "Content-Type": "application/json"},
                timeout=self._timeout_s,
            )
        except requests.RequestException as exc:
            raise RunpodApiError(f"RunPod API unreachable: {type(exc).__name__}") from None
        if response.status_code == 401:
            raise RunpodApiError("RunPod rejected the API key (runpod:token)")
        try:
            body = response.json()
        except ValueError:
            raise RunpodApiError(f"RunPod API answered HTTP {response.status_code} without JSON") from None
        if body.get("errors"):
            raise RunpodApiError("; ".join(str(e.get("message", e)) for e in body["errors"]))
        if response.status_code != 200 or "data" not in body:
            raise RunpodApiError(f"RunPod API answered HTTP {response.status_code}")
        return body["data"]

    def save_template(self, template: dict[str, Any]) -> dict[str, Any]:
        return self.execute(SAVE_TEMPLATE, {"input": template})["saveTemplate"]

    def delete_template(self, name: str) -> None:
        self.execute(DELETE_TEMPLATE, {"templateName": name})

    def save_endpoint(self, endpoint: dict[str, Any]) -> dict[str, Any]:
        return self.execute(SAVE_ENDPOINT, {"input": endpoint})["saveEndpoint"]

    def delete_endpoint(self, endpoint_id: str) -> None:
        self.execute(DELETE_ENDPOINT, {"id": endpoint_id})

    def get_endpoint(self, endpoint_id: str) -> dict[str, Any] | None:
        endpoints = self.execute(LIST_ENDPOINTS)["myself"]["endpoints"] or []
        return next((e for e in endpoints if e["id"] == endpoint_id), None)

    def get_template(self, template_id: str) -> dict[str, Any] | None:
        try:
            return self.execute(GET_TEMPLATE, {"id": template_id})["podTemplate"]
        except RunpodApiError as exc:
            if is_not_found(exc):
                return None
            raise


def is_not_found(exc: RunpodApiError) -> bool:
    message = str(exc).lower()
    return "not found" in message or "does not exist" in message
