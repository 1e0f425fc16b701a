"""Shared pieces of the infrastructure tests (fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pulumi
from b2sdk.v2 import B2Api, B2HttpApiConfig, InMemoryAccountInfo, RawSimulator
from f5tts_infra.runpod_rest import endpoint_url
from pulumi.dynamic import ConfigureRequest
from pulumi.dynamic.config import Config as ProviderConfig
from pulumi.runtime import rpc

PROJECT = "f5tts"

# A complete stack config: the three required settings plus the three secrets.
BASE_CONFIG = {
    "f5tts:imageRepository": "acme/f5tts-runpod",
    "f5tts:imageTag": "3f2c1ab",
    "f5tts:bucketName": "acme-f5tts-audio",
    "runpod:token": "rp-test-token-123",
    "b2:applicationKeyId": "b2-key-id-456",
    "b2:applicationKey": "b2-secret-789",
}
SECRET_KEYS = ["runpod:token", "b2:applicationKeyId", "b2:applicationKey"]


def engine_props(props: dict[str, Any]) -> dict[str, Any]:
    """Props as the Pulumi engine hands them to a provider: through protobuf (numbers become floats, None is dropped)."""

    async def round_trip() -> dict[str, Any]:
        return rpc.deserialize_properties(await rpc.serialize_properties(props, {}))

    # A private loop: asyncio.run() would unset the thread's current loop, which Pulumi's mocks rely on.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(round_trip())
    finally:
        loop.close()


def is_secret(value: Any) -> bool:
    """Whether a mocked resource input arrived as a secret (the wire form the engine would encrypt)."""
    return isinstance(value, dict) and value.get(rpc._special_sig_key) == rpc._special_secret_sig


def reveal(value: Any) -> Any:
    """A mocked input's plain value, secret or not."""
    return value["value"] if is_secret(value) else value


def configure(provider: Any, config: dict[str, str]) -> Any:
    """What the provider host does once per provider: hand it the stack config."""
    provider.configure(ConfigureRequest(ProviderConfig(config, PROJECT)))
    return provider


# --- Pulumi mocks ----------------------------------------------------------------------------------------------
@dataclass
class RegisteredResource:
    typ: str
    name: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]


@dataclass
class RecordingMocks(pulumi.runtime.Mocks):
    """Answers like the providers would (ids and computed outputs) and records every registration."""

    resources: list[RegisteredResource] = field(default_factory=list)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        outputs = dict(args.inputs)  # outputs mirror inputs, secrets included, as the engine does
        kind = args.typ.rsplit(":", 1)[-1]
        resource_id = f"{args.name}-id"
        if kind == "Bucket":
            resource_id = "bucket-0001"
            outputs.update(bucketId=resource_id, s3Endpoint="https://s3.us-west-004.backblazeb2.com")
        elif kind == "ApplicationKey":
            resource_id = "key-0001"
            outputs.update(keyId=resource_id, applicationKey="K004worker-secret-key")
        elif kind == "ContainerRegistry":
            resource_id = "reg0001"
            outputs.update(registryId=resource_id, name=f"{args.inputs['namePrefix']}-abc123")
        elif kind == "ServerlessEndpoint":
            resource_id = "ep0001"
            outputs.update(endpointId=resource_id, url=endpoint_url(resource_id, args.inputs["type"]))
        self.resources.append(RegisteredResource(args.typ, args.name, args.inputs, outputs))
        return resource_id, outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, []  # no result, no check failures

    def by_kind(self, kind: str) -> RegisteredResource:
        matches = [r for r in self.resources if r.typ.rsplit(":", 1)[-1] == kind]
        assert len(matches) == 1, f"expected one {kind}, got {[r.name for r in matches]}"
        return matches[0]


# --- B2 on b2sdk's simulator ------------------------------------------------------------------------------------
class B2Simulator(RawSimulator):
    # A real B2 S3 endpoint shape, so region detection runs as against Backblaze.
    S3_API_URL = "https://s3.us-west-004.backblazeb2.com"


class SimulatedB2:
    """One simulated B2 account shared by every client the providers build."""

    def __init__(self) -> None:
        self.raw: RawSimulator = self.api_for_key(None, None).session.raw_api
        self.master_key_id, self.master_key = self.raw.create_account()

    def api_for_key(self, key_id: str | None, key: str | None) -> B2Api:
        api = B2Api(InMemoryAccountInfo(), api_config=B2HttpApiConfig(_raw_api_class=B2Simulator))
        if getattr(self, "raw", None) is not None:
            api.session.raw_api = self.raw  # every client talks to the same simulated account
        if key_id is not None:
            api.authorize_account("production", key_id, key)
        return api

    def master(self) -> B2Api:
        return self.api_for_key(self.master_key_id, self.master_key)

    def provider_config(self) -> dict[str, str]:
        return {"b2:applicationKeyId": self.master_key_id, "b2:applicationKey": self.master_key}
