"""Helpers of the API tests: a server driven in-process, with keys of two organizations."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import uvicorn
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from lake import Lake
from lake.keys import ApiKeys


@dataclass
class Api:
    client: TestClient
    lake: Lake
    key: str  # organization "acme"
    other_key: str  # organization "other"

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"x-api-key": key or self.key}

    def post(self, path: str, body: Any = None, *, key: str | None = None) -> Any:
        response = self.client.post(path, json=body, headers=self.headers(key))
        assert response.status_code == 200, response.text
        return response.json()

    def get(self, path: str, *, key: str | None = None) -> Any:
        response = self.client.get(path, headers=self.headers(key))
        assert response.status_code == 200, response.text
        return response.json()

    def ingest(self, records: list[Any], *, key: str | None = None) -> dict[str, Any]:
        """Send records, wait for the upload to end; return its execution."""
        started = self.post("/api/ingestion/ingest", {"records": records}, key=key)
        return self.wait(started["id"], key=key)

    def wait(self, upload_id: str, *, key: str | None = None, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            execution = self.get(f"/api/ingestion/executions/{upload_id}", key=key)
            if execution["status"] != "RUNNING" or time.monotonic() > deadline:
                return execution
            time.sleep(0.05)


def make_api(lake: Lake, **settings: Any) -> Iterator[Api]:
    keys = ApiKeys(lake)
    _, key = keys.create("acme")
    _, other = keys.create("other")
    # the group committer in this process (a child process per test costs seconds; the
    # real-socket tests and tests/api/test_group_process.py run it apart, as shoal serve does)
    settings.setdefault("group_process", False)
    app = create_app(Settings(lake=lake.uri, **settings), lake=lake)
    with TestClient(app) as client:
        yield Api(client, lake, key, other)


@contextlib.contextmanager
def live_server(lake: Lake, **settings: Any) -> Iterator[str]:
    """A real server (uvicorn in a thread, on a free loopback port); yields its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    app = create_app(Settings(lake=lake.uri, **settings), lake=lake)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def server_process(
    lake: Lake, s3: Any = None, *, crash_at: str | None = None, **env: str
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``python -m api`` on the lake in its own process, on a free loopback port; yields the
    process and its URL. ``env`` adds SHOAL_* settings; ``crash_at`` sets SHOAL_CRASH_AT."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("SHOAL_", "AWS_", "DIOPTRA_"))
    }
    environment.update(SHOAL_LAKE=lake.uri, SHOAL_PORT=str(port), **env)
    if s3 is not None:
        environment.update(
            SHOAL_S3_ENDPOINT=s3.endpoint,
            AWS_ACCESS_KEY_ID=s3.access_key,
            AWS_SECRET_ACCESS_KEY=s3.secret_key,
        )
    if crash_at:
        environment["SHOAL_CRASH_AT"] = crash_at
    log = tempfile.NamedTemporaryFile(prefix="shoal-server-", suffix=".log", delete=False)  # noqa: SIM115
    # a file, not a pipe: a server that logs much must never block on a full pipe
    process = subprocess.Popen(
        [sys.executable, "-m", "api"], env=environment, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx2.TransportError):
                if httpx2.get(url + "/health", timeout=1).status_code == 200:
                    break
            assert process.poll() is None, Path(log.name).read_text()[-3000:]
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        yield process, url
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
        log.close()
        Path(log.name).unlink(missing_ok=True)
