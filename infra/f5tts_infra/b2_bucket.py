"""Backblaze B2 as Pulumi dynamic resources, since no Pulumi B2 provider exists: a private bucket whose lifecycle
rule expires generated audio (voices are kept), and a bucket-scoped application key for the worker.

The account credentials come from stack config (`b2:applicationKeyId`, `b2:applicationKey`, set with `--secret`)
through the provider's `configure`, so they never enter resource inputs or the state. The provider object itself
is pickled into the state: it keeps only plain values and builds a fresh b2sdk client in every method.
"""

from __future__ import annotations

import re
from typing import Any

import pulumi
from b2sdk.v2 import B2Api, InMemoryAccountInfo
from b2sdk.v2.exception import BadRequest, NonExistentBucket
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

B2_KEY_ID_CONFIG = "b2:applicationKeyId"
B2_KEY_CONFIG = "b2:applicationKey"
B2_REALM = "production"
# B2 bucket names: 6-50 letters, digits and '-', unique across B2; the "b2-" prefix is reserved. The one rule,
# used by the provider's check and by the stack settings (deployment_spec.py).
BUCKET_NAME_PATTERN = r"^[A-Za-z0-9-]{6,50}$"
RESERVED_BUCKET_PREFIX = "b2-"
# What the worker does through the S3 API: list, read, presign, write and delete objects in its one bucket.
WORKER_KEY_CAPABILITIES = (
    "listBuckets",
    "readBuckets",
    "listFiles",
    "readFiles",
    "shareFiles",
    "writeFiles",
    "deleteFiles",
)


class B2ConfigError(RuntimeError):
    pass


def bucket_name_problem(name: str) -> str | None:
    """Why B2 would refuse a bucket name, or None."""
    if not re.match(BUCKET_NAME_PATTERN, name):
        return "6-50 letters, digits or '-'"
    if name.lower().startswith(RESERVED_BUCKET_PREFIX):
        return f"names starting with {RESERVED_BUCKET_PREFIX!r} are reserved by Backblaze"
    return None


def s3_endpoint_of(region: str) -> str:
    """B2's S3 endpoint of a region (the worker derives the region back from it: worker.storage.region_for)."""
    return f"https://s3.{region}.backblazeb2.com"


def lifecycle_rules(prefix: str, days: int) -> list[dict[str, Any]]:
    # Hide generated audio `days` after upload, delete hidden versions a day later. `voices/` has no rule: kept.
    return [{"fileNamePrefix": prefix, "daysFromUploadingToHiding": int(days), "daysFromHidingToDeleting": 1}]


class _B2Provider(ResourceProvider):
    # Holds no client and no credential at pickling time: `configure` runs inside the provider host.
    def __init__(self) -> None:
        super().__init__()
        self._key_id: str | None = None
        self._key: str | None = None

    def configure(self, req: Any) -> None:
        self._key_id = req.config.get(B2_KEY_ID_CONFIG)
        self._key = req.config.get(B2_KEY_CONFIG)

    def _connect(self) -> B2Api:
        if not (self._key_id and self._key):
            raise B2ConfigError(
                f"B2 credentials missing: pulumi config set {B2_KEY_ID_CONFIG} <id> --secret; "
                f"pulumi config set {B2_KEY_CONFIG} <key> --secret"
            )
        api = self._new_api()
        api.authorize_account(B2_REALM, self._key_id, self._key)
        return api

    def _new_api(self) -> B2Api:
        # An unauthorized client on B2's HTTP API; tests substitute b2sdk's RawSimulator here.
        return B2Api(InMemoryAccountInfo())

    @staticmethod
    def _changed(keys: tuple[str, ...], olds: dict[str, Any], news: dict[str, Any]) -> list[str]:
        return [k for k in keys if olds.get(k) != news.get(k)]


class B2BucketProvider(_B2Provider):
    INPUTS = ("bucketName", "lifecyclePrefix", "lifecycleDays", "expectedRegion", "forceDestroy")

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = []
        name = news.get("bucketName")
        problem = bucket_name_problem(name) if isinstance(name, str) else None
        if problem:
            failures.append(CheckFailure("bucketName", problem))
        days = news.get("lifecycleDays")
        if isinstance(days, (int, float)) and days < 1:
            failures.append(CheckFailure("lifecycleDays", "must be at least 1"))
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = self._changed(self.INPUTS, olds, news)
        # A B2 bucket cannot be renamed; everything else is updated in place.
        return DiffResult(changes=bool(changed), replaces=[k for k in changed if k == "bucketName"])

    def create(self, props: dict[str, Any]) -> CreateResult:
        api = self._connect()
        endpoint = api.account_info.get_s3_api_url().rstrip("/")
        expected = props.get("expectedRegion")
        if expected and endpoint != s3_endpoint_of(expected):
            raise B2ConfigError(f"this B2 account's S3 endpoint is {endpoint}, not {expected}'s (f5tts:bucketRegion)")
        bucket = api.create_bucket(
            props["bucketName"],
            "allPrivate",
            lifecycle_rules=lifecycle_rules(props["lifecyclePrefix"], props["lifecycleDays"]),
        )
        outs = {**props, "bucketId": bucket.id_, "s3Endpoint": endpoint}
        return CreateResult(bucket.id_, outs)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        outs = {**olds, **news}
        if self._changed(("lifecyclePrefix", "lifecycleDays"), olds, news):
            bucket = self._connect().get_bucket_by_name(news["bucketName"])
            bucket.update(lifecycle_rules=lifecycle_rules(news["lifecyclePrefix"], news["lifecycleDays"]))
        return UpdateResult(outs)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        try:
            bucket = self._connect().get_bucket_by_name(props["bucketName"])
        except NonExistentBucket:
            return ReadResult("", {})  # gone: `pulumi refresh` drops it from the state
        rules = bucket.lifecycle_rules or [{}]
        live = {
            "lifecyclePrefix": rules[0].get("fileNamePrefix"),
            "lifecycleDays": rules[0].get("daysFromUploadingToHiding"),
        }
        return ReadResult(id_, {**props, **live, "bucketId": bucket.id_})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        api = self._connect()
        try:
            bucket = api.get_bucket_by_name(props["bucketName"])
        except NonExistentBucket:
            return
        versions = bucket.ls(latest_only=False, recursive=True)
        if not props.get("forceDestroy"):
            if next(iter(versions), None) is not None:
                raise B2ConfigError(
                    f"bucket {props['bucketName']} still holds objects (voices); empty it, or set "
                    "f5tts:bucketForceDestroy true and run `pulumi up` before `pulumi destroy`"
                )
        else:
            for version, _folder in versions:
                bucket.delete_file_version(version.id_, version.file_name)
        api.delete_bucket(bucket)


class B2KeyProvider(_B2Provider):
    INPUTS = ("keyName", "bucketId", "capabilities", "rotation")

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = self._changed(self.INPUTS, olds, news)
        # B2 keys are immutable: any change (a new `rotation` value included) is a new key. Pulumi creates the
        # replacement first, updates the endpoint that uses it, and only then deletes the old key.
        return DiffResult(changes=bool(changed), replaces=changed, delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        key = self._connect().create_key(list(props["capabilities"]), props["keyName"], bucket_id=props["bucketId"])
        return CreateResult(key.id_, {**props, "keyId": key.id_, "applicationKey": key.application_key})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        if not any(key.id_ == id_ for key in self._connect().list_keys()):
            return ReadResult("", {})
        return ReadResult(id_, props)  # the secret half of a key can never be read back

    def delete(self, id_: str, _props: dict[str, Any]) -> None:
        try:
            self._connect().delete_key_by_id(id_)
        except BadRequest as exc:
            if "does not exist" not in str(exc):
                raise


class B2Bucket(Resource, module="b2", name="Bucket"):
    bucketName: pulumi.Output[str]
    bucketId: pulumi.Output[str]
    s3Endpoint: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        bucket_name: pulumi.Input[str],
        lifecycle_prefix: pulumi.Input[str],
        lifecycle_days: pulumi.Input[int],
        expected_region: pulumi.Input[str] | None = None,
        force_destroy: pulumi.Input[bool] = False,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "bucketName": bucket_name,
            "lifecyclePrefix": lifecycle_prefix,
            "lifecycleDays": lifecycle_days,
            "expectedRegion": expected_region,
            "forceDestroy": force_destroy,
            "bucketId": None,
            "s3Endpoint": None,
        }
        super().__init__(B2BucketProvider(), name, props, opts)


class B2BucketKey(Resource, module="b2", name="ApplicationKey"):
    keyId: pulumi.Output[str]
    applicationKey: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        key_name: pulumi.Input[str],
        bucket_id: pulumi.Input[str],
        capabilities: tuple[str, ...] = WORKER_KEY_CAPABILITIES,
        rotation: pulumi.Input[str] = "1",
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "keyName": key_name,
            "bucketId": bucket_id,
            "capabilities": list(capabilities),
            "rotation": rotation,
            "keyId": None,
            "applicationKey": None,
        }
        # The engine stores the key encrypted; the program also wraps it with Output.secret where it uses it.
        secret = pulumi.ResourceOptions(additional_secret_outputs=["applicationKey"])
        super().__init__(B2KeyProvider(), name, props, pulumi.ResourceOptions.merge(secret, opts))
