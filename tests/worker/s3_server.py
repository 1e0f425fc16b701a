"""A real S3 protocol server for tests: moto's ThreadedMotoServer on 127.0.0.1, reached with boto3.

The fixtures `s3_server` (session: one server on a free loopback port) and `s3_bucket` (a fresh, empty bucket,
removed afterwards) live in tests/worker/conftest.py. The credentials are fake, and the AWS_* environment is set
only while the server is alive, so neither the server nor boto3 ever looks for real credentials or the internet.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer
from pydantic import SecretStr

from worker.config import StorageSettings

FAKE_ACCESS_KEY_ID = "AKIATESTFAKEKEY00001"
FAKE_SECRET_ACCESS_KEY = "fake-secret-for-tests-only/0123456789abcdef"
REGION = "us-east-1"

# Keeps boto3 from reading a developer's real credentials or profiles while a test runs.
_FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY_ID,
    "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_ACCESS_KEY,
    "AWS_DEFAULT_REGION": REGION,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass
class S3Server:
    endpoint_url: str
    access_key_id: str = FAKE_ACCESS_KEY_ID
    secret_access_key: str = FAKE_SECRET_ACCESS_KEY
    region: str = REGION

    @property
    def credentials(self) -> dict[str, str]:
        return {"aws_access_key_id": self.access_key_id, "aws_secret_access_key": self.secret_access_key}

    def client(self) -> Any:
        """A plain boto3 S3 client for the server (for arranging and inspecting, not the code under test)."""
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
            **self.credentials,
        )

    def create_bucket(self, name: str | None = None) -> S3Bucket:
        name = name or f"test-{uuid.uuid4().hex[:12]}"
        client = self.client()
        client.create_bucket(Bucket=name)
        return S3Bucket(server=self, name=name, client=client)


@dataclass
class S3Bucket:
    server: S3Server
    name: str
    client: Any = field(repr=False)

    @property
    def endpoint_url(self) -> str:
        return self.server.endpoint_url

    @property
    def credentials(self) -> dict[str, str]:
        return self.server.credentials

    def settings(self, prefix: str = "", **overrides: Any) -> StorageSettings:
        """StorageSettings selecting this bucket, as the worker would read them from BUCKET_* variables."""
        values: dict[str, Any] = {
            "endpoint_url": self.server.endpoint_url,
            "name": self.name,
            "region": self.server.region,
            "access_key_id": SecretStr(self.server.access_key_id),
            "secret_access_key": SecretStr(self.server.secret_access_key),
            "prefix": prefix,
        }
        values.update(overrides)
        # _env_file=None and explicit values: the test's environment cannot leak in.
        return StorageSettings(_env_file=None, **values)

    def keys(self, prefix: str = "") -> list[str]:
        """Every key in the bucket (raw, including any store prefix), sorted."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def empty(self) -> None:
        for key in self.keys():
            self.client.delete_object(Bucket=self.name, Key=key)


def start_s3_server() -> tuple[ThreadedMotoServer, S3Server]:
    """Start moto's S3 server on 127.0.0.1 with an OS-chosen free port; the caller stops it."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, S3Server(endpoint_url=f"http://{host}:{port}")


@contextlib.contextmanager
def running_s3_server() -> Iterator[S3Server]:
    """A moto S3 server on loopback under fake AWS credentials, stopped on exit."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in _FAKE_ENV.items():
            env.setenv(name, value)
        # werkzeug logs every request of the server thread; keep test output readable.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server, info = start_s3_server()
        try:
            yield info
        finally:
            server.stop()
