"""Selects, deletes and SQL over the caller's rows (reference §1.3 #6–#12, §2)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import StreamingResponse

from api import wire
from api.deps import Org, Svc
from lake.query import delete, select, sql

router = APIRouter(tags=["query"])


class SelectRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    selectColumns: list[str] | None = None
    filters: list[Any] | None = None
    orderBy: str | None = None
    desc: bool | None = False
    limit: int | None = Field(None, ge=0)
    offset: int | None = Field(None, ge=0)


class SqlRequest(BaseModel):
    query: str = Field(..., description="one read-only SELECT statement")


Selectable = Literal["datapoints", "predictions", "groundtruths", "bboxes"]
Deletable = Literal["datapoints", "predictions", "groundtruths"]


@router.post("/api/{table}/select")
def select_rows(table: Selectable, request: SelectRequest, org: Org, svc: Svc) -> StreamingResponse:
    rows = select(
        svc.lake,
        table,
        filters=request.filters,
        columns=request.selectColumns,
        order_by=request.orderBy,
        desc=request.desc,
        limit=request.limit,
        offset=request.offset,
        organization_id=org,
    )
    return wire.rows_response(rows)


@router.post("/api/{table}/delete")
def delete_rows(table: Deletable, request: SelectRequest, org: Org, svc: Svc) -> StreamingResponse:
    """Delete the rows the same select would return (with cascades); answer them."""
    deleted = delete(
        svc.lake,
        table,
        filters=request.filters,
        order_by=request.orderBy,
        desc=request.desc,
        limit=request.limit,
        offset=request.offset,
        organization_id=org,
    )
    return wire.rows_response(wire.table_rows(deleted))


@router.post("/api/sql")
def run_sql(request: SqlRequest, org: Org, svc: Svc) -> StreamingResponse:
    """One read-only SQL statement over the organization's tables (DuckDB dialect)."""
    return wire.rows_response(sql(svc.lake, request.query, organization_id=org))
