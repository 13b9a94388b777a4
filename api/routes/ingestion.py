"""Uploads: land a file, start its ingestion job, follow its status (reference §1.3 #1–#5)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile as StarletteUploadFile

from api import wire
from api.deps import Org, Services, Svc
from api.fetch import UrlFetcher, shown
from api.streams import stream_to_store
from lake.groups import GROUP_MAX_BYTES
from lake.ndjson import dump_json
from lake.uploads import LANDING_PREFIX, Upload

router = APIRouter(tags=["ingestion"])

UPLOAD_SCHEME = "upload://"


class IngestRequest(BaseModel):
    """One of ``url``, ``urls`` (one element) or ``records``."""

    model_config = ConfigDict(extra="allow")

    url: str | None = None
    urls: list[str] | None = None
    records: list[Any] | None = None
    offset: int | None = Field(None, ge=0)
    limit: int | None = Field(None, ge=0)


_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")  # what secrets.token_urlsafe(16) gives


def _landing_key(organization: str, token: str) -> str:
    # landed files live under their organization: another organization cannot name them
    tag = hashlib.sha256(organization.encode()).hexdigest()[:16]
    return f"{LANDING_PREFIX}{tag}/{token}"


_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@router.post("/api/ingestion/upload", openapi_extra=_UPLOAD_BODY)
async def upload_file(request: Request, org: Org, svc: Svc) -> dict[str, str]:
    """Store an NDJSON file (plain, gzip, bz2 or zstd) for a later ``/ingest``; answer its url.

    The file is a ``file`` part of a multipart form (what the reference client sends), or the
    whole request body (any other content type), which is streamed to the lake's store as it
    arrives: no form parsing, no temporary file.
    """
    token = secrets.token_urlsafe(16)
    key = _landing_key(org, token)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        async with request.form() as form:  # closes the spooled files
            file = form.get("file")
            if not isinstance(file, StarletteUploadFile):
                problem = {"loc": ("body", "file"), "msg": "Field required", "type": "missing"}
                raise RequestValidationError([problem])
            await run_in_threadpool(svc.lake.store.land, key, file.file)
    else:
        await stream_to_store(
            svc.lake.store, key, request.stream(), max_bytes=svc.settings.max_body_bytes
        )
    return {"url": UPLOAD_SCHEME + token}


# the body is parsed here (orjson first) rather than by FastAPI: the route is the hot path of
# many small clients, and its schema stays documented
_INGEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": IngestRequest.model_json_schema()}},
    }
}


@router.post("/api/ingestion/ingest", openapi_extra=_INGEST_BODY, response_model=dict[str, Any])
async def ingest(request: Request, org: Org, svc: Svc) -> Response:
    """Start an upload job; it runs in the background (poll ``/executions/{id}``)."""
    body = await _ingest_request(request)
    return wire.json_response(await run_in_threadpool(_start, body, org, svc))


@router.post(
    "/events", include_in_schema=True, openapi_extra=_INGEST_BODY, response_model=dict[str, Any]
)
async def events(request: Request, org: Org, svc: Svc) -> Response:
    """The reference's ``/events`` entry point: the same as ``/api/ingestion/ingest``."""
    return await ingest(request, org, svc)


async def _ingest_request(request: Request) -> IngestRequest:
    raw = await request.body()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:  # Python's json.dumps writes bare NaN and Infinity, which orjson refuses
            data = json.loads(raw)
        except ValueError as exc:
            problem = {"loc": ("body",), "msg": f"JSON decode error: {exc}", "type": "json_invalid"}
            raise RequestValidationError([problem]) from None
    try:
        return IngestRequest.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


def _start(request: IngestRequest, org: Org, svc: Svc) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if request.offset is not None:
        options["offset"] = request.offset
    if request.limit is not None:
        options["limit"] = request.limit
    sources = [s for s in (request.url, *(request.urls or [])) if s]
    if request.records is not None:
        if sources:
            raise HTTPException(400, "send either records or url(s), not both")
        data = "".join(dump_json(r) + "\n" for r in request.records).encode()
        if len(data) <= GROUP_MAX_BYTES and not options:  # committed with others arriving now
            return _started(svc.group.submit(data, organization_id=org, source="records"))
        upload = svc.uploads.create(data, organization_id=org, options=options)
    elif len(sources) == 1:
        url = sources[0]
        if not url.startswith(UPLOAD_SCHEME):
            return _fetch(url, org, svc, options)
        token = url[len(UPLOAD_SCHEME) :]
        if not _TOKEN.fullmatch(token):
            raise HTTPException(400, f"{url!r} is not a url answered by /api/ingestion/upload")
        key = _landing_key(org, token)
        size = svc.lake.store.size(key)
        if size is not None and size <= GROUP_MAX_BYTES and not options:
            return _started(svc.group.submit_landed(key, organization_id=org, source=url))
        upload = svc.uploads.start(key, organization_id=org, options=options, label=url)
    elif not sources:
        raise HTTPException(400, "nothing to ingest: send 'records', 'url' or 'urls'")
    else:
        raise HTTPException(400, f"one url per request, got {len(sources)}")
    svc.runner.submit(upload.id)
    return _started(upload)


def _fetch(url: str, org: str, svc: Services, options: dict[str, Any]) -> dict[str, Any]:
    """A URL of the lake's store or an allow-listed host: checked now, fetched by the job."""
    fetcher = svc.uploads.fetcher
    if not isinstance(fetcher, UrlFetcher):
        raise HTTPException(400, f"cannot ingest {shown(url)!r}: this server does not fetch URLs")
    fetcher.check(url)  # InputError: 400 naming the rule the URL breaks
    upload = svc.uploads.fetch(url, organization_id=org, options=options, label=shown(url))
    svc.runner.submit(upload.id)
    return _started(upload)


def _started(upload: Upload) -> dict[str, Any]:
    return {"id": upload.id, "status": str(upload.status)}


@router.get("/api/ingestion/executions/{upload_id}", response_model=dict[str, Any])
async def execution(
    upload_id: str,
    org: Org,
    svc: Svc,
    wait: Annotated[float, Query(ge=0, le=60)] = 0,
) -> Response:
    """An upload's status, counts and record errors. ``wait``: if it is still RUNNING, answer
    when it ends or after that many seconds (a long poll: no need to ask again and again)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        upload = await _upload(upload_id, org, svc)
        remaining = deadline - loop.time()
        if upload.status.finished or remaining <= 0:
            return wire.json_response(wire.execution(upload))
        # woken when the upload ends; the timeout bounds a wake-up that never comes (an
        # upload run by another process on the lake)
        await svc.waiters.wait(upload.id, min(remaining, 1.0))


async def _upload(upload_id: str, org: str, svc: Services) -> Upload:
    upload = svc.group.lookup(upload_id, organization_id=org)
    if upload is None:  # not one the group committer holds: the lake knows
        upload = await run_in_threadpool(svc.uploads.get, upload_id, organization_id=org)
    return upload


MAX_IDS = 1000  # uploads one request may ask about


@router.get("/api/ingestion/executions", response_model=list[dict[str, Any]])
async def executions(
    org: Org,
    svc: Svc,
    limit: int = 100,
    ids: Annotated[
        str | None,
        Query(description=f"comma-separated upload ids (up to {MAX_IDS}): their executions"),
    ] = None,
    wait: Annotated[float, Query(ge=0, le=60)] = 0,
) -> Response:
    """The organization's most recent uploads, newest first (``limit`` of them).

    With ``ids``: those uploads' executions, in that order, as ``/executions/{id}`` gives
    them. ``wait``: while all of them are RUNNING, answer when one ends or after that many
    seconds, so that a client with many uploads on their way waits for all of them with one
    request at a time.
    """
    if ids is None:
        return wire.json_response(await run_in_threadpool(_recent, org, svc, limit))
    wanted = list(dict.fromkeys(i.strip() for i in ids.split(",") if i.strip()))
    if not wanted:
        raise HTTPException(400, "ids: give at least one upload id")
    if len(wanted) > MAX_IDS:
        raise HTTPException(400, f"ids: at most {MAX_IDS} uploads per request, got {len(wanted)}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        uploads = [await _upload(upload_id, org, svc) for upload_id in wanted]
        remaining = deadline - loop.time()
        if remaining <= 0 or any(upload.status.finished for upload in uploads):
            return wire.json_response([wire.execution(upload) for upload in uploads])
        await svc.waiters.wait(wanted, min(remaining, 1.0))


def _recent(org: str, svc: Services, limit: int) -> list[dict[str, Any]]:
    uploads = svc.uploads.list_uploads(organization_id=org)[: max(0, min(limit, 1000))]
    return [
        {
            "id": u.id,
            "status": str(u.status),
            "startDate": wire.iso(u.created_at),
            "stopDate": wire.iso(u.finished_at),
            "source": u.source,
        }
        for u in uploads
    ]
