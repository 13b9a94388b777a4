"""``/api/ingestion/upload`` with the file as the request body, streamed to the lake's store."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import json
from collections.abc import AsyncIterator, Iterator

import pytest
import zstandard
from apitools import Api, make_api  # type: ignore[import-not-found]
from fastapi import HTTPException

from api.streams import stream_to_store
from lake import Lake
from lake.ndjson import ZSTD_MAGIC

RECORDS = [{"type": "IMAGE", "metadata": {"uri": f"s3://b/stream/{i}.jpg"}} for i in range(3000)]


def ndjson() -> bytes:
    return "\n".join(json.dumps(r) for r in RECORDS).encode()


def chunks(data: bytes, size: int = 70_000) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_a_streamed_body_lands_whole_and_ingests(api: Api, compress: bool) -> None:
    data = gzip.compress(ndjson()) if compress else ndjson()
    # a chunked body (no Content-Length), in pieces that do not end at line ends
    response = api.client.post(
        "/api/ingestion/upload",
        content=chunks(data),
        headers={**api.headers(), "content-type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    started = api.post("/api/ingestion/ingest", {"urls": [response.json()["url"]]})
    execution = api.wait(started["id"])
    assert execution["status"] == "SUCCEEDED"
    assert execution["output"]["datapoints_created"] == len(RECORDS)
    selected = api.post("/api/datapoints/select", {"selectColumns": ["metadata"]})
    assert sorted(r["metadata"]["uri"] for r in selected) == sorted(
        r["metadata"]["uri"] for r in RECORDS
    )


def test_a_multipart_form_without_a_file_is_a_clear_error(api: Api) -> None:
    response = api.client.post(
        "/api/ingestion/upload", files={"other": ("r.ndjson", b"{}")}, headers=api.headers()
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"] == "invalid request: file: Field required"


def test_a_chunked_body_over_the_limit_is_refused_and_stores_nothing(lake: Lake) -> None:
    for api in make_api(lake, max_body_mb=0.05):
        before = stored(lake, "_landing/")
        response = api.client.post(
            "/api/ingestion/upload",
            content=chunks(ndjson(), 10_000),  # no Content-Length: the size shows as it comes
            headers={**api.headers(), "content-type": "application/x-ndjson"},
        )
        assert response.status_code == 413, response.text
        assert "over the limit" in response.json()["error"]["message"]
        assert stored(lake, "_landing/") == before
        small = api.client.post(
            "/api/ingestion/upload",
            content=chunks(b'{"type": "IMAGE"}\n' * 100, 1000),
            headers={**api.headers(), "content-type": "application/x-ndjson"},
        )
        assert small.status_code == 200, small.text
        assert len(stored(lake, "_landing/")) == len(before) + 1


def stored(lake: Lake, prefix: str) -> set[str]:
    """Every object key under ``prefix`` (listing folders, where the store has them)."""
    keys: set[str] = set()
    for key in lake.store.list(prefix):
        below = stored(lake, key + "/")
        if below:
            keys |= below
        else:
            with contextlib.suppress(Exception):  # an empty folder is no object
                if lake.store.get(key) is not None:
                    keys.add(key)
    return keys


def test_a_body_that_stops_halfway_stores_nothing(lake: Lake) -> None:
    async def broken() -> AsyncIterator[bytes]:
        for piece in chunks(ndjson() * 3, 200_000):
            yield piece
        raise ConnectionResetError("the client went away")

    async def whole() -> AsyncIterator[bytes]:
        for piece in chunks(ndjson(), 200_000):
            yield piece

    with pytest.raises(ConnectionResetError):
        asyncio.run(stream_to_store(lake.store, "_landing/t/broken", broken(), max_bytes=10**9))
    assert lake.store.get("_landing/t/broken") is None
    with pytest.raises(HTTPException) as refused:
        asyncio.run(stream_to_store(lake.store, "_landing/t/big", whole(), max_bytes=100_000))
    assert refused.value.status_code == 413
    assert lake.store.get("_landing/t/big") is None
    size = asyncio.run(stream_to_store(lake.store, "_landing/t/ok", whole(), max_bytes=10**9))
    assert size == len(ndjson()) and landed_text(lake, "_landing/t/ok") == ndjson()


def landed_text(lake: Lake, key: str) -> bytes:
    """A landed file's text: kept as it came on a local lake, as zstd on S3 (smaller)."""
    stored = lake.store.get(key)
    assert stored is not None
    if lake.location.scheme != "s3":
        return stored
    assert stored.startswith(ZSTD_MAGIC)
    text = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(stored)).read()
    assert len(stored) < len(text) / 5
    return bytes(text)
