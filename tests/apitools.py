"""Helpers of the API tests: a server driven in-process, with keys of two organizations."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

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
