"""The JSON shapes of the Dioptra wire protocol, built from lake objects.

Rows of selects stream as a JSON array, one batch at a time. Dataset and version rows use the
reference's keys (``uuid``, ``display_name``, ``dataset_uuid`` ...). Times are ISO 8601 in UTC.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
from starlette.concurrency import iterate_in_threadpool
from starlette.responses import Response, StreamingResponse

from api.fetch import shown
from lake.datasets import Dataset, DatasetVersion
from lake.miners import Miner, TaskStatus
from lake.query import Rows
from lake.query.filters import JSON_COLUMNS
from lake.query.output import json_lines
from lake.uploads import Upload


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def json_response(content: dict[str, Any] | list[dict[str, Any]]) -> Response:
    """``content`` (plain JSON values) as a response, serialized at once: the hot routes skip
    FastAPI's generic encoder (~70 us a response against ~1 us). Their route declares the
    model for the docs (``response_model``)."""
    return Response(orjson.dumps(content), media_type="application/json")


def rows_response(rows: Rows) -> StreamingResponse:
    """A JSON array of ``rows``, encoded and sent batch by batch."""

    def chunks() -> Iterator[bytes]:
        first = True
        yield b"["
        for batch in rows:
            lines = json_lines(rows, batch)
            if lines:
                yield (b"" if first else b",") + b",".join(lines)
                first = False
        yield b"]"

    async def body() -> AsyncIterator[bytes]:
        async for chunk in iterate_in_threadpool(chunks()):
            yield chunk

    return StreamingResponse(body(), media_type="application/json")


def table_rows(table: pa.Table) -> Rows:
    """An Arrow table of one of the lake's tables as select rows (JSON columns as objects)."""
    json_keys = frozenset(name for name in table.column_names if name in JSON_COLUMNS)
    return Rows(table.schema, iter(table.to_batches()), json_keys)


def dataset(d: Dataset) -> dict[str, Any]:
    return {
        "uuid": d.id,
        "organization_id": d.organization_id,
        "created_at": iso(d.created_at),
        "created_by": d.created_by,
        "display_name": d.display_name,
    }


def version(v: DatasetVersion) -> dict[str, Any]:
    return {
        "uuid": v.id,
        "organization_id": v.organization_id,
        "created_at": iso(v.created_at),
        "created_by": v.created_by,
        "message": v.message,
        "dataset_uuid": v.dataset,
        "dirty": v.dirty,
        "committed": v.committed,
        "parent_uuid": v.parent,
        "committed_at": iso(v.committed_at),
    }


def execution(upload: Upload) -> dict[str, Any]:
    """An upload as the reference's execution (Step Functions ``DescribeExecution``) shape."""
    stop = upload.finished_at
    duration = None if stop is None else int((stop - upload.created_at).total_seconds() * 1000)
    output = None
    if upload.status.finished:
        summary = upload.summary(max_errors=1000)
        output = {
            "statusCode": 200 if upload.status == "SUCCEEDED" else 400,
            "logs": [_log(e) for e in summary.pop("errors")],
            **{k: v for k, v in summary.items() if k not in ("id", "status", "error_message")},
        }
    return {
        "id": upload.id,
        "status": str(upload.status),
        "input": {"source": upload.source, "options": _options(upload.options)},
        "output": output,
        "progress": upload.progress() if not upload.status.finished else None,
        "errorMessage": upload.error_message or "",
        "startDate": iso(upload.created_at),
        "stopDate": iso(stop),
        "durationMs": duration,
    }


def _options(options: dict[str, Any]) -> dict[str, Any]:
    """An upload's options as shown: a fetched URL without its query (a signature)."""
    if isinstance(options.get("url"), str):
        return {**options, "url": shown(options["url"])}
    return options


def miner(m: Miner, *, progress: tuple[int, int] | None = None) -> dict[str, Any]:
    """A miner document (reference §6.3): its configuration, with its latest run."""
    return {
        **m.config.to_doc(),
        "_id": m.id,
        "organization_id": m.organization_id,
        "user_id": m.created_by,
        "status": _doc_status(m),
        "created_at": iso(m.created_at),
        "updated_at": iso(m.updated_at),
        "task": task(m, progress=progress, with_result=False),
    }


def task(
    m: Miner, *, progress: tuple[int, int] | None = None, with_result: bool = True
) -> dict[str, Any]:
    """The latest run, never null: a miner that never ran is ``PENDING`` with no result."""
    t = m.task
    doc: dict[str, Any] = {
        "status": str(t.status),
        "task_id": t.id,
        "requested_at": iso(t.requested_at),
        "started_at": iso(t.started_at),
        "done_at": iso(t.done_at),
        "result_size": None if t.result is None else len(t.result),
    }
    if with_result:
        doc["result"] = t.result
    if t.message is not None:
        doc["message"] = t.message
    if progress is not None:
        doc["progress"] = {"done": progress[0], "total": progress[1]}
    return doc


def _doc_status(m: Miner) -> str:
    if m.task.id is None:
        return "pending"
    return {
        TaskStatus.PENDING: "queued",
        TaskStatus.STARTED: "running",
        TaskStatus.SUCCESS: "done",
        TaskStatus.FAILURE: "error",
    }[m.task.status]


def _log(error: dict[str, Any]) -> str:
    where = f"line {error.get('line')}"
    if error.get("field"):
        where += f", field {error['field']}"
    return f"{where}: {error.get('reason')}"
