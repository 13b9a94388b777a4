"""Deletes by filter, with the cascades the reference's foreign keys gave.

A delete selects its primary rows exactly as a select does (filters, orderBy, limit, offset) and
removes them with everything that hangs off them, in one lake transaction (readers see all of it
or none of it):

- a datapoint takes its tags, predictions, groundtruths, their bboxes / lanes / completions /
  feature vectors, its child datapoints (``parent_datapoint``) with all of theirs, and its
  memberships of every dataset version;
- a prediction takes its bboxes, lanes, completions and feature vectors;
- a groundtruth takes its bboxes, lanes and completions.

Every child table carries its ``datapoint``, so each table is rewritten only in the key ranges of
the datapoints concerned.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from lake.errors import QueryError
from lake.lake import Lake, Transaction
from lake.query.select import Scope, Selection, run
from lake.tables import ATTACHMENT_CHILDREN, DATA_TABLES

#: What a deleted row of each deletable table takes with it (table → column pointing at it).
CASCADES: dict[str, dict[str, str]] = {
    # rows keyed by their datapoint; memberships are keyed by version, removed on their own
    "datapoints": {name: "datapoint" for name in DATA_TABLES if name != "datapoints"},
    "predictions": {
        **{name: "prediction" for name in ATTACHMENT_CHILDREN},
        "feature_vectors": "prediction",
    },
    "groundtruths": {name: "groundtruth" for name in ATTACHMENT_CHILDREN},
}


def delete(
    lake: Lake,
    table: str,
    *,
    filters: object = None,
    order_by: object = None,
    desc: object = False,
    limit: object = None,
    offset: object = None,
    organization_id: str | None = None,
) -> pa.Table:
    """Delete the rows of ``table`` a select with these arguments would return; return them.

    ``filters=[]`` deletes every row (of ``organization_id`` when given), as the reference does.
    """
    if table not in CASCADES:
        raise QueryError(f"cannot delete from {table!r} (tables: {', '.join(CASCADES)})")
    selection = Selection.parse(
        table, filters=filters, order_by=order_by, desc=desc, limit=limit, offset=offset
    )
    with lake.transaction() as txn:
        scope = Scope(lake, state=txn.base, organization_id=organization_id)
        deleted = run(selection, scope).to_arrow()
        if deleted.num_rows:
            _cascade(txn, scope, table, deleted)
    return deleted


def _cascade(txn: Transaction, scope: Scope, table: str, rows: pa.Table) -> None:
    if table == "datapoints":
        ids = _with_descendants(scope, rows.column("id").to_pylist())
        keys = ids
    else:
        ids = rows.column("id").to_pylist()
        keys = sorted(set(rows.column("datapoint").drop_null().to_pylist()))
    key = "id" if table == "datapoints" else "datapoint"
    txn.delete(table, key, keys, pc.field("id").isin(_strings(ids)))
    for child, column in CASCADES[table].items():
        txn.delete(child, "datapoint", keys, pc.field(column).isin(_strings(ids)))
    if table == "datapoints":  # out of every dataset version, committed ones included
        gone = pc.field("datapoint").isin(_strings(ids))
        versions = txn.lake.read(
            "dataset_members", state=txn.base, columns=["version"], filter=gone
        )
        touched = pc.unique(versions.column("version").combine_chunks()).to_pylist()
        txn.delete("dataset_members", "version", touched, gone)


def _with_descendants(scope: Scope, ids: list[str]) -> list[str]:
    """``ids`` and, recursively, the datapoints whose ``parent_datapoint`` is one of them."""
    found = set(ids)
    frontier = ids
    while frontier:
        children = (
            scope.scan("datapoints")
            .filter(
                pl.col("parent_datapoint").is_in(pl.Series(frontier, dtype=pl.String).implode())
            )
            .select("id")
            .collect()
            .get_column("id")
            .to_list()
        )
        frontier = [c for c in children if c not in found]
        found.update(frontier)
    return sorted(found)


def _strings(values: list[str]) -> pa.Array:
    return pa.array(values, pa.string())
