"""Selects, deletes and SQL: rows come back as polars DataFrames (pandas on request)."""

from __future__ import annotations

from typing import Any, Literal

import polars as pl

from sdk._client import Client, default_client

Frame = Any  # a polars DataFrame, or a pandas one with as_pandas=True


def _frame(rows: list[dict[str, Any]], as_pandas: bool) -> Frame:
    if as_pandas:
        import pandas as pd

        return pd.DataFrame(rows)
    return pl.DataFrame(rows, infer_schema_length=None)


def _select(
    table: str,
    filters: list[dict[str, Any]] | None,
    *,
    columns: list[str] | None,
    order_by: str | None,
    desc: bool,
    limit: int | None,
    offset: int,
    as_pandas: bool,
    client: Client | None,
) -> Frame:
    body: dict[str, Any] = {
        "selectColumns": columns or ["*"],
        "filters": filters or [],
        "offset": offset,
        "desc": desc,
    }
    if limit is not None:
        body["limit"] = limit
    if order_by is not None:
        body["orderBy"] = order_by
    rows = (client or default_client()).request("POST", f"/api/{table}/select", json=body)
    return _frame(rows, as_pandas)


def select_datapoints(
    filters: list[dict[str, Any]] | None = None,
    *,
    columns: list[str] | None = None,
    order_by: str | None = None,
    desc: bool = False,
    limit: int | None = None,
    offset: int = 0,
    as_pandas: bool = False,
    client: Client | None = None,
) -> Frame:
    """Datapoints matching ``filters`` (the filter language of the README)."""
    return _select(
        "datapoints",
        filters,
        columns=columns,
        order_by=order_by,
        desc=desc,
        limit=limit,
        offset=offset,
        as_pandas=as_pandas,
        client=client,
    )


def select_predictions(
    filters: list[dict[str, Any]] | None = None,
    *,
    columns: list[str] | None = None,
    order_by: str | None = None,
    desc: bool = False,
    limit: int | None = None,
    offset: int = 0,
    as_pandas: bool = False,
    client: Client | None = None,
) -> Frame:
    return _select(
        "predictions",
        filters,
        columns=columns,
        order_by=order_by,
        desc=desc,
        limit=limit,
        offset=offset,
        as_pandas=as_pandas,
        client=client,
    )


def select_groundtruths(
    filters: list[dict[str, Any]] | None = None,
    *,
    columns: list[str] | None = None,
    order_by: str | None = None,
    desc: bool = False,
    limit: int | None = None,
    offset: int = 0,
    as_pandas: bool = False,
    client: Client | None = None,
) -> Frame:
    return _select(
        "groundtruths",
        filters,
        columns=columns,
        order_by=order_by,
        desc=desc,
        limit=limit,
        offset=offset,
        as_pandas=as_pandas,
        client=client,
    )


def select_bboxes(
    filters: list[dict[str, Any]] | None = None,
    *,
    columns: list[str] | None = None,
    order_by: str | None = None,
    desc: bool = False,
    limit: int | None = None,
    offset: int = 0,
    as_pandas: bool = False,
    client: Client | None = None,
) -> Frame:
    return _select(
        "bboxes",
        filters,
        columns=columns,
        order_by=order_by,
        desc=desc,
        limit=limit,
        offset=offset,
        as_pandas=as_pandas,
        client=client,
    )


def _delete(
    table: Literal["datapoints", "predictions", "groundtruths"],
    filters: list[dict[str, Any]],
    order_by: str | None,
    desc: bool,
    limit: int | None,
    offset: int,
    client: Client | None,
) -> list[dict[str, Any]]:
    body = {"filters": filters, "orderBy": order_by, "desc": desc, "limit": limit, "offset": offset}
    rows: list[dict[str, Any]] = (client or default_client()).request(
        "POST", f"/api/{table}/delete", json=body
    )
    return rows


def delete_datapoints(
    filters: list[dict[str, Any]],
    *,
    order_by: str | None = None,
    desc: bool = False,
    limit: int | None = None,
    offset: int = 0,
    client: Client | None = None,
) -> list[dict[str, Any]]:
    """Delete matching datapoints with everything attached; return the deleted rows.

    ``filters=[]`` deletes every datapoint of the organization.
    """
    return _delete("datapoints", filters, order_by, desc, limit, offset, client)


def delete_predictions(
    filters: list[dict[str, Any]],
    *,
    order_by: str | None = None,
    desc: bool = False,
    limit: int | None = None,
    offset: int = 0,
    client: Client | None = None,
) -> list[dict[str, Any]]:
    return _delete("predictions", filters, order_by, desc, limit, offset, client)


def delete_groundtruths(
    filters: list[dict[str, Any]],
    *,
    order_by: str | None = None,
    desc: bool = False,
    limit: int | None = None,
    offset: int = 0,
    client: Client | None = None,
) -> list[dict[str, Any]]:
    return _delete("groundtruths", filters, order_by, desc, limit, offset, client)


def sql(query: str, *, as_pandas: bool = False, client: Client | None = None) -> Frame:
    """One read-only SQL statement over the organization's tables."""
    return _frame(
        (client or default_client()).request("POST", "/api/sql", json={"query": query}), as_pandas
    )
