"""The FastAPI application: ``create_app(settings)`` builds it; nothing happens at import.

Errors always answer ``{"error": {"message": ...}}``; lake errors map to statuses here and only
here: a bad request (filter, record, input) is 400, an unknown id 404, a missing or bad key 401,
a storage failure or a busy writer lock 503, a full upload queue 429 (retry later), anything
unexpected 500 (logged, never a trace).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from api.deps import Services
from api.fetch import UrlFetcher
from api.routes import datasets, ingestion, miners, query
from api.settings import Settings
from api.waiters import Waiters
from lake import JobRunner, Lake, Uploads
from lake.errors import (
    BusyError,
    InputError,
    LakeError,
    LockTimeoutError,
    NotFoundError,
    QueryError,
    RecordError,
    StorageError,
)
from lake.group_process import GroupProcess
from lake.groups import GroupCommitter
from lake.keys import ApiKeys
from lake.miners import MinerRunner, MiningError

log = logging.getLogger("shoal.api")

_STATUS: tuple[tuple[type[LakeError], int], ...] = (
    (NotFoundError, 404),
    (QueryError, 400),
    (InputError, 400),
    (RecordError, 400),
    (MiningError, 400),
    (StorageError, 503),
    (LockTimeoutError, 503),
    (BusyError, 429),
)


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message}}, status_code=status)


def create_app(settings: Settings | None = None, *, lake: Lake | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        the_lake = lake or Lake(settings.lake)
        fetcher = UrlFetcher.for_lake(
            the_lake.location, settings.url_hosts, max_bytes=settings.max_url_bytes
        )
        uploads = Uploads(
            the_lake,
            max_line=settings.max_line_bytes,
            batch_size=settings.batch_records,
            parse_workers=settings.parse_workers,
            parse_processes=settings.parse_processes,
            fetcher=fetcher,
        )
        runner = JobRunner(the_lake, workers=settings.job_workers, uploads=uploads)
        keys = ApiKeys(the_lake, cache_seconds=settings.key_cache_seconds)
        group: GroupCommitter | GroupProcess
        if settings.group_process:  # its own interpreter lock, apart from the requests'
            group = GroupProcess(
                the_lake,
                fallback=runner.submit,
                uploads_options={"max_line": settings.max_line_bytes},
                max_queued=settings.group_queue,
            )
        else:
            group = GroupCommitter(uploads, fallback=runner.submit, max_queued=settings.group_queue)
        mining = MinerRunner(the_lake, workers=settings.miner_workers)
        waiters = Waiters()
        waiters.bind(asyncio.get_running_loop())
        group.on_done = runner.on_done = waiters.notify
        app.state.services = Services(
            settings, the_lake, keys, uploads, runner, group, mining, waiters
        )
        runner.start()
        group.start()
        mining.start()
        stop = threading.Event()
        maintenance = _start_maintenance(the_lake, settings, stop)
        try:
            yield
        finally:
            stop.set()
            group.stop()
            if maintenance is not None:
                maintenance.join(timeout=5)
            runner.shutdown(wait=False)
            mining.shutdown(wait=False)

    app = FastAPI(
        title="Shoal",
        summary="A self-hosted ML data lake with a Dioptra-compatible API.",
        lifespan=lifespan,
    )
    for router in (ingestion.router, query.router, datasets.router, miners.router):
        app.include_router(router)

    @app.get("/health", tags=["service"])
    def health(request: Request) -> dict[str, object]:
        services: Services = request.app.state.services
        state = services.lake.state()
        return {
            "status": "ok",
            "lake": services.lake.uri,
            "state": state.seq,
            "group_commit": services.group.health(),
        }

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    @app.exception_handler(LakeError)
    async def lake_error(request: Request, exc: LakeError) -> JSONResponse:
        status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 500)
        if status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc)
        return error(status, str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}"
            for e in exc.errors()
        )
        return error(400, f"invalid request: {problems}")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return error(500, f"internal error ({type(exc).__name__}); see the server log")

    return app


class BodyLimit:
    """413 for a request whose announced body is over the limit, before it is read (plain
    ASGI: a ``BaseHTTPMiddleware`` costs every request a task group and a stream)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = next((v for k, v in scope["headers"] if k == b"content-length"), b"")
            if length.isdigit() and int(length) > self.max_bytes:
                response = error(
                    413,
                    f"request body of {int(length)} bytes is over the limit of "
                    f"{self.max_bytes} bytes (SHOAL_MAX_BODY_MB)",
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _start_maintenance(
    lake: Lake, settings: Settings, stop: threading.Event
) -> threading.Thread | None:
    if settings.maintenance_hours <= 0:
        return None
    from lake.maintenance import maintain
    from lake.uploads import prune_landing

    def loop() -> None:
        while not stop.wait(settings.maintenance_hours * 3600):
            try:
                maintain(lake, retention_hours=settings.retention_hours)
                prune_landing(lake, retention_hours=settings.retention_hours)
            except LakeError:
                log.exception("table maintenance failed; will try again")

    thread = threading.Thread(target=loop, name="shoal-maintenance", daemon=True)
    thread.start()
    return thread
