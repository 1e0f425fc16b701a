"""The B2 dynamic providers' create/update/read/delete against b2sdk's RawSimulator (B2's API, in memory).

Props go through the same protobuf round trip the Pulumi engine applies, so the providers see what they will see
under `pulumi up` (numbers as floats, absent values dropped).
"""

from __future__ import annotations

import pytest
from b2sdk.v2.exception import InvalidAuthToken
from f5tts_infra.b2_bucket import (
    WORKER_KEY_CAPABILITIES,
    B2BucketProvider,
    B2ConfigError,
    bucket_name_problem,
    s3_endpoint_of,
)

from tests.infra.helpers import configure, engine_props
from worker.storage import region_for

BUCKET = {"bucketName": "acme-f5tts-audio", "lifecyclePrefix": "generated/", "lifecycleDays": 7, "forceDestroy": False}


def _create_bucket(bucket_provider, **overrides):
    props = engine_props({**BUCKET, **overrides})
    return props, bucket_provider.create(props)


def test_create_private_bucket_with_generated_audio_expiry(b2, b2_providers):
    bucket_provider, _ = b2_providers
    _props, created = _create_bucket(bucket_provider)

    live = b2.master().get_bucket_by_name("acme-f5tts-audio")
    assert created.id == live.id_
    assert live.type_ == "allPrivate"
    assert live.lifecycle_rules == [
        {"fileNamePrefix": "generated/", "daysFromUploadingToHiding": 7, "daysFromHidingToDeleting": 1}
    ]
    assert created.outs["bucketId"] == live.id_
    assert created.outs["s3Endpoint"] == "https://s3.us-west-004.backblazeb2.com"
    assert region_for(created.outs["s3Endpoint"]) == "us-west-004"  # what the program hands the worker


def test_create_refuses_a_region_other_than_the_accounts(b2, b2_providers):
    bucket_provider, _ = b2_providers
    with pytest.raises(B2ConfigError, match=r"s3\.us-west-004\.backblazeb2\.com, not eu-central-003"):
        _create_bucket(bucket_provider, expectedRegion="eu-central-003")
    assert [b.name for b in b2.master().list_buckets()] == []  # nothing half-created


def test_update_lifecycle_in_place_and_rename_means_replace(b2, b2_providers):
    bucket_provider, _ = b2_providers
    _props, created = _create_bucket(bucket_provider)
    olds = engine_props(created.outs)

    news = engine_props({**BUCKET, "lifecycleDays": 3})
    diff = bucket_provider.diff(created.id, olds, news)
    assert diff.changes and diff.replaces == []
    updated = bucket_provider.update(created.id, olds, news)

    live = b2.master().get_bucket_by_name("acme-f5tts-audio")
    assert live.id_ == created.id  # same bucket, objects kept
    assert live.lifecycle_rules[0]["daysFromUploadingToHiding"] == 3
    assert updated.outs["bucketId"] == created.id

    renamed = bucket_provider.diff(created.id, olds, engine_props({**BUCKET, "bucketName": "acme-other-audio"}))
    assert renamed.replaces == ["bucketName"]
    assert bucket_provider.diff(created.id, olds, olds).changes is False


def test_read_reports_live_lifecycle_and_a_vanished_bucket(b2, b2_providers):
    bucket_provider, _ = b2_providers
    _props, created = _create_bucket(bucket_provider)
    live = b2.master().get_bucket_by_name("acme-f5tts-audio")
    live.update(
        lifecycle_rules=[
            {"fileNamePrefix": "generated/", "daysFromUploadingToHiding": 30, "daysFromHidingToDeleting": 1}
        ]
    )

    read = bucket_provider.read(created.id, engine_props(created.outs))
    assert read.id == created.id and read.outs["lifecycleDays"] == 30  # drift is visible to `pulumi refresh`

    b2.master().delete_bucket(live)
    assert bucket_provider.read(created.id, engine_props(created.outs)).id == ""


def test_worker_key_is_bucket_scoped_and_rotation_replaces_it(b2, b2_providers):
    bucket_provider, key_provider = b2_providers
    _props, bucket = _create_bucket(bucket_provider)
    key_props = engine_props(
        {
            "keyName": "f5tts-dev-worker",
            "bucketId": bucket.id,
            "capabilities": list(WORKER_KEY_CAPABILITIES),
            "rotation": "1",
        }
    )
    first = key_provider.create(key_props)
    assert first.outs["keyId"] == first.id and first.outs["applicationKey"]

    # The key works, and only for this bucket.
    worker = b2.api_for_key(first.id, first.outs["applicationKey"])
    allowed = worker.account_info.get_allowed()
    assert (allowed["bucketId"], allowed["bucketName"]) == (bucket.id, "acme-f5tts-audio")
    assert set(allowed["capabilities"]) == set(WORKER_KEY_CAPABILITIES)

    # Rotation: a new `rotation` value is a replacement; Pulumi creates the new key before deleting the old one.
    rotated_props = engine_props({**key_props, "rotation": "2026-01"})
    diff = key_provider.diff(first.id, engine_props(first.outs), rotated_props)
    assert diff.replaces == ["rotation"] and diff.delete_before_replace is False
    second = key_provider.create(rotated_props)
    assert second.id != first.id and second.outs["applicationKey"] != first.outs["applicationKey"]
    key_provider.delete(first.id, engine_props(first.outs))

    with pytest.raises(InvalidAuthToken):
        b2.api_for_key(first.id, first.outs["applicationKey"])
    b2.api_for_key(second.id, second.outs["applicationKey"])  # the new key still authorizes
    assert key_provider.read(first.id, engine_props(first.outs)).id == ""
    assert key_provider.read(second.id, engine_props(second.outs)).id == second.id
    key_provider.delete(first.id, engine_props(first.outs))  # already gone: deleting again is a no-op


def test_delete_keeps_a_bucket_with_voices_unless_forced(b2, b2_providers):
    bucket_provider, _ = b2_providers
    _props, created = _create_bucket(bucket_provider)
    live = b2.master().get_bucket_by_name("acme-f5tts-audio")
    live.upload_bytes(b"{}", "voices/alice/meta.json")
    live.upload_bytes(b"RIFF", "generated/2026/01/01/x.wav")

    with pytest.raises(B2ConfigError, match="still holds objects"):
        bucket_provider.delete(created.id, engine_props(created.outs))
    assert [b.name for b in b2.master().list_buckets()] == ["acme-f5tts-audio"]

    forced = engine_props({**created.outs, "forceDestroy": True})
    bucket_provider.delete(created.id, forced)
    assert [b.name for b in b2.master().list_buckets()] == []
    bucket_provider.delete(created.id, forced)  # idempotent


def test_missing_credentials_name_the_config_keys():
    provider = configure(B2BucketProvider(), {})
    with pytest.raises(B2ConfigError, match=r"b2:applicationKeyId .*--secret"):
        provider.create(engine_props(BUCKET))


def test_wrong_credentials_are_refused(b2):
    class Provider(B2BucketProvider):
        def _new_api(self):
            return b2.api_for_key(None, None)

    provider = configure(Provider(), {"b2:applicationKeyId": b2.master_key_id, "b2:applicationKey": "wrong"})
    with pytest.raises(InvalidAuthToken):
        provider.create(engine_props(BUCKET))


def test_check_flags_invalid_inputs(b2_providers):
    bucket_provider, _ = b2_providers
    result = bucket_provider.check({}, engine_props({**BUCKET, "bucketName": "b2-nope", "lifecycleDays": 0}))
    assert sorted(f.property for f in result.failures) == ["bucketName", "lifecycleDays"]
    assert bucket_provider.check({}, engine_props(BUCKET)).failures == []


def test_the_bucket_name_rule_is_b2s():
    assert bucket_name_problem("acme-f5tts-audio") is None
    assert "reserved" in (bucket_name_problem("B2-audio") or "")
    assert bucket_name_problem("short") and bucket_name_problem("has_underscore") and bucket_name_problem("x" * 51)
    # A bucket made in an expected region is found there again by the worker's own reading of the endpoint.
    assert region_for(s3_endpoint_of("eu-central-003")) == "eu-central-003"
