"""API benchmark: ingestion over HTTP, through the SDK, against a real server.

(a) one large NDJSON upload (``--records``, default 1M) sent with ``sdk.upload_to_lake`` to a
    server on the lake, until SUCCEEDED; next to it, the library-level ingest of the same file
    (``Uploads.create`` + ``run``) on a fresh lake in the same run.
(b) ``--clients`` concurrent clients (default 8), each sending 100-record batches back to back
    (``POST /api/ingestion/ingest {records}``) for ``--seconds`` (default 30) while following
    each to SUCCEEDED: records/s in total (all SUCCEEDED), and p50/p95 latency from request to
    SUCCEEDED.

Targets are local or S3 (a SeaweedFS server started for the run):

    python bench/api.py --targets s3 --records 1000000 --seconds 30
    python bench/api.py --targets local --skip-large --seconds 20
"""

from __future__ import annotations

import sys
from pathlib import Path

# run as a script, this file's folder comes first on sys.path and its name would hide the
# ``api`` package: take the folder out before importing anything of the project
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import contextlib
import http.client
import importlib.util
import itertools
import json
import os
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx2

import sdk
from lake import Lake, S3Options, Uploads
from lake.keys import ApiKeys
from lake.memory import retain_freed_memory

HERE = Path(__file__).resolve().parent
POLL = 0.05  # pause before asking again about a batch still RUNNING after a long poll


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ingest_bench = _load("shoal_bench_ingest", HERE / "ingest.py")


@contextlib.contextmanager
def server_process(lake: Lake, server: Any) -> Iterator[str]:
    """``shoal serve`` in its own process (its own interpreter lock), on a free port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    env = {**os.environ, "SHOAL_LAKE": lake.uri, "SHOAL_PORT": str(port)}
    if server is not None:
        env.update(
            SHOAL_S3_ENDPOINT=server.endpoint,
            AWS_ACCESS_KEY_ID=server.access_key,
            AWS_SECRET_ACCESS_KEY=server.secret_key,
        )
    process = subprocess.Popen(
        [sys.executable, "-m", "api"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx2.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def small_batch(client: int, n: int, size: int = 100) -> list[dict[str, Any]]:
    return [
        {
            "type": "IMAGE",
            "metadata": {"uri": f"s3://bench/{client}/{n}/{i}.jpg", "width": 640},
            "tags": {"client": str(client), "split": ("train", "val")[i % 2]},
            "groundtruths": [{"task_type": "CLASSIFICATION", "class_name": f"c{i % 5}"}],
        }
        for i in range(size)
    ]


class _Httpx2Client:
    """JSON requests through httpx2 (what the SDK uses)."""

    def __init__(self, url: str, key: str) -> None:
        self.http = httpx2.Client(base_url=url, headers={"x-api-key": key}, timeout=120)

    def post(self, path: str, body: Any) -> Any:
        return self.http.post(path, json=body).raise_for_status().json()

    def get(self, path: str) -> Any:
        return self.http.get(path).raise_for_status().json()

    def close(self) -> None:
        self.http.close()


class _PlainClient:
    """The same requests through the standard library's ``http.client`` on one kept-alive
    connection: a load generator that leaves more of the machine's two cores to the server."""

    def __init__(self, url: str, key: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=120)
        self.headers = {"x-api-key": key, "content-type": "application/json"}

    def _call(self, method: str, path: str, body: bytes | None = None) -> Any:
        self.connection.request(method, path, body=body, headers=self.headers)
        answer = self.connection.getresponse()
        data = answer.read()
        assert answer.status == 200, (answer.status, data[:200])
        return json.loads(data)

    def post(self, path: str, body: Any) -> Any:
        return self._call("POST", path, json.dumps(body).encode())

    def get(self, path: str) -> Any:
        return self._call("GET", path)

    def close(self) -> None:
        self.connection.close()


@contextlib.contextmanager
def open_client(url: str, key: str, kind: str) -> Iterator[Any]:
    client = _PlainClient(url, key) if kind == "plain" else _Httpx2Client(url, key)
    try:
        yield client
    finally:
        client.close()


def concurrent_small(
    url: str, key: str, *, clients: int, seconds: float, kind: str = "plain", follow: str = "many"
) -> dict[str, float]:
    """Each client sends batches back to back; a checker per client follows them: ``many``
    asks about all its uploads on their way with one long poll at a time
    (``GET /api/ingestion/executions?ids=...&wait=``, as ``sdk.wait_for_uploads``), ``each``
    asks about one upload at a time, in order (``/executions/{id}?wait=``)."""
    latencies: list[float] = []
    accepts: list[float] = []  # request to its answer (RUNNING): the part before the commit
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    failures: list[str] = []

    def client_run(client: int) -> None:
        pending: dict[str, float] = {}  # upload id -> when its request was sent, in order
        pending_lock = threading.Lock()
        sending = threading.Event()
        sending.set()

        def send() -> None:
            with open_client(url, key, kind) as http:
                n = 0
                while time.monotonic() < stop:
                    start = time.perf_counter()
                    answer = http.post("/api/ingestion/ingest", {"records": small_batch(client, n)})
                    with pending_lock:
                        pending[answer["id"]] = start
                    with lock:
                        accepts.append(time.perf_counter() - start)
                    n += 1
            sending.clear()

        def ended(statuses: dict[str, str]) -> None:
            now = time.perf_counter()
            with pending_lock:
                starts = [pending.pop(upload_id) for upload_id in statuses]
            with lock:
                latencies.extend(now - start for start in starts)
                failures.extend(s for s in statuses.values() if s != "SUCCEEDED")

        def check() -> None:
            with open_client(url, key, kind) as http:
                while sending.is_set() or pending:
                    with pending_lock:
                        ids = list(itertools.islice(pending, 200 if follow == "many" else 1))
                    if not ids:
                        time.sleep(POLL)
                        continue
                    if follow == "many":
                        answer = http.get(f"/api/ingestion/executions?ids={','.join(ids)}&wait=10")
                    else:
                        answer = [http.get(f"/api/ingestion/executions/{ids[0]}?wait=10")]
                    statuses = {e["id"]: e["status"] for e in answer if e["status"] != "RUNNING"}
                    if statuses:
                        ended(statuses)
                    else:
                        time.sleep(POLL)

        threads = [threading.Thread(target=send), threading.Thread(target=check)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    started = time.perf_counter()
    threads = [threading.Thread(target=client_run, args=(c,)) for c in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    assert not failures, failures[:5]
    latencies.sort()
    return {
        "records_per_s": 100 * len(latencies) / elapsed,
        "requests": len(latencies),
        "p50_ms": statistics.median(latencies) * 1000,
        "p95_ms": latencies[int(len(latencies) * 0.95) - 1] * 1000,
        "accept_p50_ms": statistics.median(accepts) * 1000,
    }


def open_lake(target: str, workdir: Path, name: str, server: Any) -> Lake:
    if target == "local":
        return Lake(str(workdir / f"{name}-{time.time_ns()}"))
    options = S3Options(
        endpoint_url=server.endpoint,
        access_key_id=server.access_key,
        secret_access_key=server.secret_key,
    )
    return Lake(f"s3://{server.bucket}/{name}-{time.time_ns()}", s3=options)


def main() -> None:
    retain_freed_memory()  # as shoal serve and shoal ingest do (the server is one)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", default="local,s3")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--skip-large", action="store_true", help="only (b)")
    parser.add_argument(
        "--client",
        choices=("plain", "httpx2"),
        default="plain",
        help="(b)'s load generator: http.client (light) or httpx2 (as the SDK)",
    )
    parser.add_argument(
        "--follow",
        choices=("many", "each"),
        default="many",
        help="(b): one long poll for all of a client's uploads, or one per upload",
    )
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="shoal-bench-api-"))
    workdir.mkdir(parents=True, exist_ok=True)
    targets = args.targets.split(",")
    s3 = ingest_bench.s3server.start("shoal-bench") if "s3" in targets else None
    try:
        for target in targets:
            if not args.skip_large:
                path = workdir / f"records-{args.records}.ndjson"
                if not path.exists():
                    ingest_bench.generate(path, args.records, seed=3, embeddings=False)
                base = open_lake(target, workdir, "library", s3)
                uploads = Uploads(base)
                start = time.perf_counter()
                assert uploads.run(uploads.create(path).id).status == "SUCCEEDED"
                library = args.records / (time.perf_counter() - start)
                lake = open_lake(target, workdir, "http", s3)
                _, key = ApiKeys(lake).create("bench")
                with server_process(lake, s3) as url:
                    client = sdk.Client(url, key)
                    start = time.perf_counter()
                    sdk.upload_to_lake(path, client=client, wait=True, progress=False)
                    http_rate = args.records / (time.perf_counter() - start)
                    client.close()
                print(
                    json.dumps(
                        {
                            "target": target,
                            "bench": "(a) large upload",
                            "records": args.records,
                            "http_records_per_s": round(http_rate),
                            "library_records_per_s": round(library),
                            "ratio": round(http_rate / library, 2),
                        }
                    )
                )
            lake = open_lake(target, workdir, "small", s3)
            _, key = ApiKeys(lake).create("bench")
            with server_process(lake, s3) as url:
                result = concurrent_small(
                    url,
                    key,
                    clients=args.clients,
                    seconds=args.seconds,
                    kind=args.client,
                    follow=args.follow,
                )
            print(
                json.dumps(
                    {
                        "target": target,
                        "bench": "(b) concurrent 100-record batches",
                        "clients": args.clients,
                        "client": args.client,
                        "follow": args.follow,
                        "seconds": args.seconds,
                        **{k: round(v, 1) for k, v in result.items()},
                    }
                )
            )
    finally:
        if s3 is not None:
            s3.stop()


if __name__ == "__main__":
    main()
