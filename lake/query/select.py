"""Run a selection: matching primary ids first, then their rows and child lists in chunks.

A select runs in two phases over polars lazy scans of the tables at one lake state, scoped to one
organization when given:

1. the ids of the matching primary rows, filtered (child conditions as semi-joins, one per join
   alias), ordered (the order key, then id), offset and limited: one small column per row;
2. the rows of those ids, ``chunk_rows`` at a time, with their child lists. Each chunk reads only
   the files whose id range it overlaps, and only one chunk is in memory at a time.

So a full-lake select streams, and its memory is the id list plus one chunk.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import orjson
import polars as pl
import pyarrow as pa

from lake.errors import StorageError
from lake.lake import Lake, LakeState
from lake.query.expressions import all_of, column_expr, to_expr
from lake.query.filters import ChildGroup, FilterSet, Kind, Op, parse_filters
from lake.query.shape import ChildList, Order, Shape, parse_order, parse_shape, parse_window
from lake.tables import SCHEMAS

DEFAULT_CHUNK_ROWS = 250_000  # primary rows read at a time
_MAX_RUN = 16  # parts read together at most, when filters keep few rows
BATCH_ROWS = 50_000  # rows per batch handed out (what a writer holds while it encodes)


class Scope:
    """The tables of one lake state, as seen by one organization (or by all when None)."""

    def __init__(
        self,
        lake: Lake,
        *,
        state: LakeState | None,
        organization_id: str | None,
        dataset_version: str | None = None,
    ) -> None:
        self.lake = lake
        self.state = state or lake.state()
        self.organization_id = organization_id
        self.dataset_version = dataset_version  # only the members of this dataset version

    def scan(self, table: str, *, where: pl.Expr | None = None) -> pl.LazyFrame:
        frame = self.lake.scan(table, state=self.state)
        if self.organization_id is not None:
            frame = frame.filter(pl.col("organization_id") == self.organization_id)
        return frame if where is None else frame.filter(where)

    def parts(self, table: str, rows_per_part: int) -> list[Bounds]:
        """Id ranges that cut ``table`` into parts of about ``rows_per_part`` rows."""
        points = self.lake.split_points(table, "id", rows_per_part, state=self.state)
        edges: list[str | None] = [None, *points, None]
        return [Bounds(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


@dataclass(frozen=True)
class Bounds:
    """A half-open range ``[low, high)`` of primary ids (None: unbounded)."""

    low: str | None
    high: str | None

    @classmethod
    def around(cls, ids: pl.Series) -> Bounds:
        low, high = ids.min(), ids.max()
        return cls(None if low is None else str(low), None if high is None else str(high) + "\0")

    def overlaps(self, span: tuple[str | None, str | None]) -> bool:
        """Whether ``[low, high)`` meets the inclusive ``span`` (None: unbounded)."""
        first, last = span
        return (self.high is None or first is None or first < self.high) and (
            self.low is None or last is None or last >= self.low
        )

    def expr(self, column: str) -> pl.Expr:
        parts = []
        if self.low is not None:
            parts.append(pl.col(column) >= pl.lit(self.low))
        if self.high is not None:
            parts.append(pl.col(column) < pl.lit(self.high))
        return all_of(parts)


@dataclass(frozen=True)
class Selection:
    """A checked select request; build it with :meth:`parse`."""

    table: str
    filters: FilterSet
    shape: Shape
    order: Order
    limit: int | None
    offset: int

    @classmethod
    def parse(
        cls,
        table: str,
        *,
        filters: object = None,
        columns: object = None,
        order_by: object = None,
        desc: object = False,
        limit: object = None,
        offset: object = None,
    ) -> Selection:
        parsed = parse_filters(filters, table)  # checks the table name first
        limit_, offset_ = parse_window(limit, offset)
        return cls(
            table,
            parsed,
            parse_shape(columns, table),
            parse_order(order_by, desc, table),
            limit_,
            offset_,
        )


class Rows:
    """A select's result: Arrow batches of a known schema, produced as they are iterated."""

    def __init__(
        self, schema: pa.Schema, batches: Iterator[pa.RecordBatch], json_keys: frozenset[str]
    ) -> None:
        self.schema = schema
        self.json_keys = json_keys  # keys whose values are JSON text (child keys as "t.key")
        self._batches = batches

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        return self._batches

    def to_arrow(self) -> pa.Table:
        return pa.Table.from_batches(list(self), schema=self.schema)

    def to_polars(self) -> pl.DataFrame:
        frame = pl.from_arrow(self.to_arrow())
        assert isinstance(frame, pl.DataFrame)
        return frame

    def to_pylist(self) -> list[dict[str, object]]:
        """Rows as dicts, JSON values decoded (timestamps stay datetimes)."""
        return [row for batch in self for row in decode_json(batch.to_pylist(), self.json_keys)]


def decode_json(
    rows: list[dict[str, object]], json_keys: frozenset[str]
) -> list[dict[str, object]]:
    top = [k for k in json_keys if "." not in k]
    nested: dict[str, list[str]] = {}
    for key in json_keys:
        if "." in key:
            table, _, inner = key.partition(".")
            nested.setdefault(table, []).append(inner)
    for row in rows:
        for key in top:
            row[key] = _loads(row.get(key))
        for table, keys in nested.items():
            children = row.get(table)
            for child in children if isinstance(children, list) else ():
                if isinstance(child, dict):
                    for key in keys:
                        child[key] = _loads(child.get(key))
    return rows


def _loads(value: object) -> object:
    return orjson.loads(value) if isinstance(value, str) else value


def select(
    lake: Lake,
    table: str,
    *,
    filters: object = None,
    columns: object = None,
    order_by: object = None,
    desc: object = False,
    limit: object = None,
    offset: object = None,
    organization_id: str | None = None,
    state: LakeState | None = None,
    dataset_version: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Rows:
    """Select rows of ``table`` (datapoints, predictions, groundtruths or bboxes).

    Arguments are the wire request's (``filters``, ``selectColumns``, ``orderBy``, ``desc``,
    ``limit``, ``offset``); every one is checked before anything is read, and a problem raises
    :class:`QueryError` naming it. ``chunk_rows`` primary rows are read at a time.
    ``dataset_version`` keeps only the rows of that dataset version's datapoints; ``state``
    reads the lake as it was at that state (a committed version's, for a frozen read).
    """
    selection = Selection.parse(
        table,
        filters=filters,
        columns=columns,
        order_by=order_by,
        desc=desc,
        limit=limit,
        offset=offset,
    )
    scope = Scope(
        lake, state=state, organization_id=organization_id, dataset_version=dataset_version
    )
    return run(selection, scope, chunk_rows=chunk_rows)


def run(selection: Selection, scope: Scope, *, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Rows:
    schema = selection.shape.schema()
    order = selection.order.column
    if order is not None and order.name == "id" and not order.path:
        batches = _by_id_ranges(selection, scope, schema, chunk_rows)
    else:
        batches = _by_ids(
            selection.shape, scope, matching_ids(selection, scope), schema, chunk_rows
        )
    return Rows(schema, batches, selection.shape.json_keys())


# -- ordered by id: one pass per id range -------------------------------------------------------
def _by_id_ranges(
    selection: Selection, scope: Scope, schema: pa.Schema, chunk_rows: int
) -> Iterator[pa.RecordBatch]:
    """Rows in id order, read range by range: each range is filtered, shaped and sent alone.

    Ranges are runs of parts of about ``chunk_rows`` rows. A run starts as one part and grows
    as the filters prove selective (up to ``_MAX_RUN`` parts), so that each run yields about
    ``chunk_rows`` rows: fewer passes for narrow filters, bounded memory for wide ones.
    """
    desc = selection.order.desc
    wanted = _id_span(selection.filters)
    parts = [p for p in scope.parts(selection.table, chunk_rows) if p.overlaps(wanted)]
    if desc:
        parts.reverse()
    skip, left = selection.offset, selection.limit
    start, run = 0, 1
    while start < len(parts) and left != 0:
        first, last = parts[start], parts[min(start + run, len(parts)) - 1]
        bounds = Bounds(last.low, first.high) if desc else Bounds(first.low, last.high)
        frame = matching_frame(selection.filters, scope, bounds).sort("id", descending=desc)
        if left is not None:
            frame = frame.head(skip + left)
        rows = _collect(frame.select(_needed(selection.shape)))
        start += run
        run = min(_MAX_RUN, max(1, (run * chunk_rows) // max(rows.height, 1)))
        taken = rows.slice(skip)
        skip = max(0, skip - rows.height)
        if left is not None:
            left -= taken.height
        if taken.height:
            yield from _batches(_shaped(selection.shape, scope, taken), schema, chunk_rows)


def _id_span(filters: FilterSet) -> tuple[str | None, str | None]:
    """The inclusive id range the primary conditions on ``id`` allow (None: unbounded)."""
    low: str | None = None
    high: str | None = None
    for condition in filters.conditions:
        column, op, value = condition.column, condition.op, condition.value
        if column.name != "id" or column.path:
            continue
        if op in (Op.EQ, Op.NOT_DISTINCT) and value is not None:
            values = [value]
        elif op is Op.IN and any(v is not None for v in value):
            values = [v for v in value if v is not None]
        elif op in (Op.GE, Op.GT):
            low = value if low is None else max(low, value)
            continue
        elif op in (Op.LE, Op.LT):
            high = value if high is None else min(high, value)
            continue
        else:
            continue
        low = min(values) if low is None else max(low, min(values))
        high = max(values) if high is None else min(high, max(values))
    return low, high


# -- any other order: the ids first, then their rows -----------------------------------------------
def matching_ids(selection: Selection, scope: Scope) -> pl.Series:
    """The ids of the matching primary rows, in output order, offset and limit applied."""
    frame = matching_frame(selection.filters, scope)
    keys, descending, nulls_last = _sort_keys(selection.order)
    frame = frame.select("id", *keys).sort(
        [*(k.meta.output_name() for k in keys), "id"],
        descending=[*descending, False],
        nulls_last=[*nulls_last, True],
    )
    frame = frame.slice(selection.offset, selection.limit).select("id")
    return _collect(frame).get_column("id")


def _by_ids(
    shape: Shape, scope: Scope, ids: pl.Series, schema: pa.Schema, chunk_rows: int
) -> Iterator[pa.RecordBatch]:
    for start in range(0, len(ids), chunk_rows):
        chunk = ids.slice(start, chunk_rows)
        order = pl.DataFrame({"id": chunk, "_pos": pl.int_range(len(chunk), eager=True)})
        rows = _collect(
            scope.scan(shape.table, where=Bounds.around(chunk).expr("id"))
            .join(order.lazy(), on="id", how="inner")
            .sort("_pos")
            .select(_needed(shape))
        )
        yield from _batches(_shaped(shape, scope, rows), schema, chunk_rows)


def matching_frame(filters: FilterSet, scope: Scope, bounds: Bounds | None = None) -> pl.LazyFrame:
    """The primary rows passing ``filters`` (every column, lazily), within ``bounds`` if given."""
    frame = scope.scan(filters.primary, where=None if bounds is None else bounds.expr("id"))
    if scope.dataset_version is not None:
        members = scope.scan(
            "dataset_members", where=pl.col("version") == scope.dataset_version
        ).select(pl.col("datapoint").alias("_member"))
        key = "id" if filters.primary == "datapoints" else "datapoint"
        frame = frame.join(members, left_on=key, right_on="_member", how="semi")
    if filters.conditions:
        frame = frame.filter(to_expr(filters.conditions))
    for group in filters.groups:
        frame = _exists(frame, group, scope, bounds)
    return frame


def _exists(
    frame: pl.LazyFrame, group: ChildGroup, scope: Scope, bounds: Bounds | None
) -> pl.LazyFrame:
    """Keep primary rows with a child row passing the group's conditions (one LEFT JOIN alias).

    A primary row without any child joins one all-null row, so it passes when the conditions
    hold on nulls (``tags.name is null``).
    """
    child = scope.scan(group.table, where=None if bounds is None else bounds.expr(group.fk))
    predicate = to_expr(group.conditions)
    hits = child.filter(predicate).select(pl.col(group.fk).alias("id"))
    if not _holds_on_null_row(group, predicate):
        return frame.join(hits, on="id", how="semi")
    parents = child.select(pl.col(group.fk).alias("id")).unique()
    return (
        frame.join(hits.unique().with_columns(pl.lit(True).alias("_hit")), on="id", how="left")
        .join(parents.with_columns(pl.lit(True).alias("_parent")), on="id", how="left")
        .filter(pl.col("_hit") | pl.col("_parent").is_null())
        .drop("_hit", "_parent")
    )


def _holds_on_null_row(group: ChildGroup, predicate: pl.Expr) -> bool:
    schema = SCHEMAS[group.table]
    null_row = pl.from_arrow(pa.table([pa.nulls(1, f.type) for f in schema], schema=schema))
    assert isinstance(null_row, pl.DataFrame)
    return bool(null_row.select(predicate.fill_null(False)).item())


def _sort_keys(order: Order) -> tuple[list[pl.Expr], list[bool], list[bool]]:
    """Sort expressions with their direction and null placement (SQL: nulls first under DESC)."""
    if order.column is None:
        seed = random.getrandbits(32)
        return [pl.col("id").hash(seed).alias("_random")], [order.desc], [True]
    column = order.column
    expr = column_expr(column)
    nulls_last = not order.desc
    if column.kind is Kind.JSON:  # numbers in numeric order, then text
        return (
            [
                expr.cast(pl.Float64, strict=False).alias("_order_number"),
                expr.alias("_order_text"),
            ],
            [order.desc, order.desc],
            [nulls_last, nulls_last],
        )
    return [expr.alias("_order")], [order.desc], [nulls_last]


def _collect(frame: pl.LazyFrame) -> pl.DataFrame:
    # requests are checked before they run: what fails here is reading the tables
    try:
        return frame.collect()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise StorageError(f"reading the lake's tables failed: {_first_line(exc)}") from exc


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- shaping ---------------------------------------------------------------------------------------
def _needed(shape: Shape) -> list[str]:
    return list(dict.fromkeys(["id", *(c.name for c in shape.columns)]))


def _batches(frame: pl.DataFrame, schema: pa.Schema, chunk_rows: int) -> list[pa.RecordBatch]:
    chunk_rows = min(chunk_rows, BATCH_ROWS)
    table = frame.to_arrow().cast(schema)
    return table.to_batches(max_chunksize=chunk_rows)


def _shaped(shape: Shape, scope: Scope, rows: pl.DataFrame) -> pl.DataFrame:
    """The output columns of ``rows`` (which hold ``id`` and the primary columns needed)."""
    ids = rows.get_column("id")
    for column in shape.columns:
        if column.path:
            values = _json_path_values(rows.get_column(column.name), column.path)
            rows = rows.with_columns(pl.Series(column.label, values, dtype=pl.String))
    for child in shape.children:
        rows = rows.join(
            _child_lists(child, scope, ids), left_on="id", right_on="_parent", how="left"
        ).with_columns(pl.col(child.table).fill_null([]))
    return rows.select([c.label for c in shape.columns] + [c.table for c in shape.children])


def _child_lists(child: ChildList, scope: Scope, ids: pl.Series) -> pl.DataFrame:
    names = [c.name for c in child.columns]
    frame = (
        scope.scan(child.table, where=Bounds.around(ids).expr(child.fk))
        .join(ids.to_frame(child.fk).lazy(), on=child.fk, how="semi")
        .select(list(dict.fromkeys([child.fk, "id", *names])))
        .sort("id")
    )
    if not child.whole:  # named columns: objects whose values are all null are left out
        frame = frame.filter(pl.any_horizontal(pl.col(n).is_not_null() for n in names))
    rows = _collect(frame)
    values = [
        pl.Series(child.label(c), _json_path_values(rows.get_column(c.name), c.path), pl.String)
        if c.path
        else rows.get_column(c.name).alias(child.label(c))
        for c in child.columns
    ]
    rows = pl.DataFrame([rows.get_column(child.fk).alias("_parent"), *values])
    return rows.group_by("_parent", maintain_order=True).agg(
        pl.struct([v.name for v in values]).alias(child.table)
    )


def _json_path_values(texts: pl.Series, path: Sequence[str]) -> list[str | None]:
    """The JSON value at ``path`` in each JSON text, itself as JSON text (None when absent)."""
    out: list[str | None] = []
    for text in texts.to_list():
        value = orjson.loads(text) if text else None
        for segment in path:
            value = value.get(segment) if isinstance(value, dict) else None
        out.append(None if value is None else orjson.dumps(value).decode())
    return out
