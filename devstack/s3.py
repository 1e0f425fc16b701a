"""The local bucket: moto's S3 server on 127.0.0.1, reached by the workers over the real S3 protocol.

moto keeps its state per process, so every LocalS3 makes its own bucket name unless told otherwise: several stacks
in one test session never see each other's objects.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from moto.server import ThreadedMotoServer

log = logging.getLogger("devstack.s3")


@dataclass
class LocalS3:
    bucket: str = field(default_factory=lambda: "devstack-" + secrets.token_hex(4))
    region: str = "us-east-1"
    # moto accepts any credentials; these exist so the workers run the same signed requests as against B2.
    access_key_id: str = "devstack-key-id"
    secret_access_key: str = "devstack-secret-key"
    port: int = 0
    _server: ThreadedMotoServer | None = field(default=None, init=False, repr=False)

    def start(self) -> None:
        # werkzeug (under moto) logs every request at INFO; a load test would drown the log.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        self.port = self._server.get_host_and_port()[1]
        self.client().create_bucket(Bucket=self.bucket)
        log.info("local S3 at %s, bucket %s", self.endpoint_url, self.bucket)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def credentials(self) -> dict[str, str]:
        """Keyword arguments for `boto3.client("s3", ...)`."""
        return {
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
            "region_name": self.region,
        }

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            config=Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=30),
            **self.credentials,
        )

    def worker_env(self) -> dict[str, str]:
        """The worker's BUCKET_* variables (see worker/config.py: StorageSettings)."""
        return {
            "BUCKET_ENDPOINT_URL": self.endpoint_url,
            "BUCKET_NAME": self.bucket,
            "BUCKET_REGION": self.region,
            "BUCKET_ACCESS_KEY_ID": self.access_key_id,
            "BUCKET_SECRET_ACCESS_KEY": self.secret_access_key,
        }
