"""Uploads: send records or an NDJSON file, get a handle, wait for the job to end."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import zstandard
from tqdm import tqdm

from sdk._client import Client, default_client
from sdk._errors import UploadFailed

FINISHED = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})


@dataclass
class Upload:
    """A handle on an upload job: ``status()``, ``wait(timeout)``, ``execution``."""

    id: str
    client: Client
    execution: dict[str, Any] | None = None

    def status(self, *, wait: float = 0) -> str:
        """The job's status; with ``wait``, the server answers when a RUNNING job ends or
        after that many seconds (up to 60), whichever comes first."""
        params = {"wait": f"{min(max(wait, 0.0), 60.0):g}"} if wait > 0 else None
        self.execution = self.client.request(
            "GET", f"/api/ingestion/executions/{self.id}", params=params
        )
        return str(self.execution["status"])

    def wait(self, timeout: float | None = None, *, poll: float = 0.2) -> dict[str, Any]:
        """Wait for the job to end; return its execution (counts, logs of bad records).

        Asks the server to answer when the job ends (long poll, 20 s at a time); a server
        that answers at once gets asked again after ``poll`` seconds, growing.
        Raises :class:`UploadFailed` when it ended FAILED, TIMED_OUT or ABORTED, and
        ``TimeoutError`` after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = poll
        while True:
            left = 20.0 if deadline is None else min(20.0, deadline - time.monotonic())
            asked = time.monotonic()
            status = self.status(wait=max(left, 0.0))
            if status in FINISHED:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"upload {self.id} still {status} after {timeout} s")
            if time.monotonic() - asked < left / 2:  # the server did not hold the request
                time.sleep(delay)
                delay = min(delay * 1.5, 5.0)
        assert self.execution is not None
        if status != "SUCCEEDED":
            raise UploadFailed(self.id, status, self.execution.get("errorMessage") or status)
        return self.execution


def upload_to_lake(
    source: Iterable[dict[str, Any]] | str | os.PathLike[str],
    *,
    wait: bool = False,
    timeout: float | None = None,
    client: Client | None = None,
    progress: bool = True,
) -> Upload:
    """Upload records (an iterable of dicts) or an NDJSON file (plain, gzip, bz2 or zstd).

    The data is streamed to the server with a progress bar, then ingested by a background job;
    the returned :class:`Upload` follows it (``wait=True`` waits here).
    """
    client = client or default_client()
    with (
        _as_file(source) as (handle, name, size),
        tqdm(
            total=size, unit="B", unit_scale=True, desc=f"uploading {name}", disable=not progress
        ) as bar,
    ):
        # the file is the request body, streamed (the server writes it to the lake as it
        # arrives); a multipart form, as the reference client sends, is accepted too
        chunks = _Chunks(handle, bar)
        landed = client.request(
            "POST",
            "/api/ingestion/upload",
            content=chunks,
            headers={"content-type": "application/octet-stream", **chunks.headers(size)},
        )
    started = client.request("POST", "/api/ingestion/ingest", json={"urls": [landed["url"]]})
    upload = Upload(started["id"], client)
    if wait:
        upload.wait(timeout)
    return upload


def wait_for_upload(
    upload: Upload | dict[str, Any] | str,
    timeout: float | None = None,
    *,
    client: Client | None = None,
) -> dict[str, Any]:
    """Wait for an upload (a handle, a dict with ``id``, or an id) to end; return its execution."""
    if isinstance(upload, Upload):
        return upload.wait(timeout)
    return Upload(_upload_id(upload), client or default_client()).wait(timeout)


def _upload_id(upload: Upload | dict[str, Any] | str) -> str:
    """The id of a handle, of a dict with ``id`` (as the server answers), or an id itself."""
    if isinstance(upload, Upload):
        return upload.id
    return str(upload["id"] if isinstance(upload, dict) else upload)


_IDS_PER_REQUEST = 200  # ids asked about in one request (the server takes up to 1000)


def wait_for_uploads(
    uploads: Iterable[Upload | dict[str, Any] | str],
    timeout: float | None = None,
    *,
    client: Client | None = None,
) -> list[dict[str, Any]]:
    """Wait for several uploads to end; return their executions in the order given.

    One request at a time covers all of them (the server answers as soon as one of those
    asked about ends), so a client keeping many small uploads on their way learns of each
    end at once, with one request per group of uploads that end together. Raises
    :class:`UploadFailed` (for the first in order) once all ended, when any did not succeed,
    and ``TimeoutError`` after ``timeout`` seconds.
    """
    handles = list(uploads)
    ids = [_upload_id(u) for u in handles]
    if client is None:
        first = next((u for u in handles if isinstance(u, Upload)), None)
        client = first.client if first is not None else default_client()
    ended: dict[str, dict[str, Any]] = {}
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        running = [i for i in dict.fromkeys(ids) if i not in ended][:_IDS_PER_REQUEST]
        if not running:
            break
        left = 20.0 if deadline is None else min(20.0, deadline - time.monotonic())
        if left <= 0:
            still = len(set(ids) - set(ended))
            raise TimeoutError(f"{still} uploads still running after {timeout} s")
        answer = client.request(
            "GET",
            "/api/ingestion/executions",
            params={"ids": ",".join(running), "wait": f"{min(left, 60.0):g}"},
        )
        for execution in answer:
            if execution["status"] in FINISHED:
                ended[execution["id"]] = execution
    for handle, upload_id in zip(handles, ids, strict=True):
        if isinstance(handle, Upload):
            handle.execution = ended[upload_id]
    executions = [ended[upload_id] for upload_id in ids]
    failed = [e for e in executions if e["status"] != "SUCCEEDED"]
    if failed:
        bad = failed[0]
        others = f" ({len(failed) - 1} more did not succeed)" if len(failed) > 1 else ""
        raise UploadFailed(
            bad["id"], bad["status"], (bad.get("errorMessage") or bad["status"]) + others
        )
    return executions


@contextlib.contextmanager
def _as_file(
    source: Iterable[dict[str, Any]] | str | os.PathLike[str],
) -> Iterator[tuple[IO[bytes], str, int]]:
    """The source as a readable binary file, with a name and a size."""
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        with open(path, "rb") as handle:
            yield handle, os.path.basename(path), os.path.getsize(path)
        return
    with tempfile.SpooledTemporaryFile(max_size=64 * 2**20) as spool:
        for record in source:
            spool.write(json.dumps(record, default=_plain).encode() + b"\n")
        size = spool.tell()
        spool.seek(0)
        yield spool, "records.ndjson", size


def _plain(value: Any) -> Any:
    """numpy values in records become plain JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"cannot send a {type(value).__name__} in a record")


_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\x28\xb5\x2f\xfd")  # gzip, bz2, zstd
# zstd compresses in several threads (the same CPU time, about half the wall time on 2 cores)
_ZSTD_THREADS = min(4, os.cpu_count() or 1) if (os.cpu_count() or 1) > 1 else 0


class _Chunks:
    """A file in chunks of about 1 MiB, from where it stood each time it is iterated (a retry
    sends it whole again), counted on the progress bar. Plain text is sent as zstd (level 1,
    compressed as it is read: NDJSON shrinks ~15x, so the transfer takes a fraction of the
    time); a file compressed already is sent as it is."""

    def __init__(self, handle: IO[bytes], bar: tqdm[Any]) -> None:
        self.handle = handle
        self.bar = bar
        self.start = handle.tell()
        self.compress = not handle.read(4).startswith(_COMPRESSED)
        handle.seek(self.start)

    def headers(self, size: int) -> dict[str, str]:
        # compressed on the fly, the body's length is not known before it is sent (chunked)
        return {} if self.compress else {"content-length": str(size)}

    def __iter__(self) -> Iterator[bytes]:
        self.handle.seek(self.start)
        self.bar.reset()
        if not self.compress:
            while chunk := self.handle.read(1 << 20):
                self.bar.update(len(chunk))
                yield chunk
            return
        compressor = zstandard.ZstdCompressor(level=1, threads=_ZSTD_THREADS)
        reader = compressor.stream_reader(self.handle, closefd=False)
        sent = self.start
        while chunk := reader.read(1 << 20):
            position = self.handle.tell()
            self.bar.update(position - sent)
            sent = position
            yield chunk
