"""The S3 writer lease: taken over when stale, respected when fresh, renewed while held."""

from __future__ import annotations

import json
import time

import pytest
from conftest import s3_lake_uri, s3_options
from s3server import S3Server

from lake import Lake, LockLostError, LockTimeoutError, Uploads
from lake.storage import S3Store

# (local lakes use flock, which the kernel releases when the holder dies: nothing to test)


@pytest.fixture
def lake(s3_server: S3Server) -> Lake:
    return Lake(s3_lake_uri(s3_server), s3=s3_options(s3_server))


def s3_lake(lake: Lake) -> S3Store:
    assert isinstance(lake.store, S3Store)
    return lake.store


def put_lease(store: S3Store, expires_at: float) -> None:
    store.client.put_object(
        Bucket=store.bucket,
        Key=store.prefix + "_shoal/writer.lock",
        Body=json.dumps({"owner": "ghost", "expires_at": expires_at}),
    )


@pytest.mark.s3
def test_a_stale_lease_is_taken_over(lake: Lake) -> None:
    store = s3_lake(lake)
    put_lease(store, time.time() - 1)  # left by a writer that died
    uploads = Uploads(lake)
    upload = uploads.run(uploads.create(b'{"type": "IMAGE"}').id)
    assert upload.summary()["datapoints_created"] == 1


@pytest.mark.s3
def test_a_fresh_lease_is_waited_for(lake: Lake) -> None:
    store = s3_lake(lake)
    put_lease(store, time.time() + 60)
    lake.lock_timeout = 0.5
    with pytest.raises(LockTimeoutError, match="held by another writer"), lake.transaction():
        pass


@pytest.mark.s3
def test_the_lease_is_renewed_and_a_lost_one_is_noticed(lake: Lake) -> None:
    store = s3_lake(lake)
    store.lease_seconds = 0.6
    with store.writer_lock(timeout=5):
        assert store._lease is not None
        first = store._lease[0]
        time.sleep(0.25)
        store.keep_lock()
        assert store._lease[0] != first  # renewed
        put_lease(store, time.time() + 60)  # another writer took it over
        time.sleep(0.25)
        with pytest.raises(LockLostError, match=r"writer lock .* was lost"):
            store.keep_lock()
