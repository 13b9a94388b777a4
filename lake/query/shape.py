"""``selectColumns``, ``orderBy``, ``limit`` and ``offset``, checked before anything runs.

The output of a select is one row per primary row. ``*`` is every primary column; a named column
keeps its name; a JSON path (``metadata.uri``) comes out under its last segment (``uri``). A
child table selected as ``t.*`` becomes a list of whole child rows under the key ``t``; named child
columns (``tags.name``) a list of objects with those keys, all-null objects left out. Child lists
hold every child of the row (filters do not narrow them), each child once, ordered by id.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from lake.errors import QueryError
from lake.query.filters import CHILDREN, JSON_COLUMNS, Column, Kind, resolve_column
from lake.tables import SCHEMAS

RANDOM = "RANDOM()"


@dataclass(frozen=True)
class ChildList:
    """A child table in the output: every column (``t.*``) or the named ones."""

    table: str
    fk: str
    columns: tuple[Column, ...]
    whole: bool  # t.*: whole rows, kept even when all their values are null

    def label(self, column: Column) -> str:
        # the reference's key for a JSON path inside a child selection
        return column.name + "".join(f"->{segment}" for segment in column.path)


@dataclass(frozen=True)
class Shape:
    table: str
    columns: tuple[Column, ...]  # primary columns and JSON paths, in output order
    children: tuple[ChildList, ...]

    def schema(self) -> pa.Schema:
        own = SCHEMAS[self.table]
        fields = [
            pa.field(c.label, pa.string() if c.path else own.field(c.name).type)
            for c in self.columns
        ]
        for child in self.children:
            table = SCHEMAS[child.table]
            struct = pa.struct(
                [
                    pa.field(child.label(c), pa.string() if c.path else table.field(c.name).type)
                    for c in child.columns
                ]
            )
            fields.append(pa.field(child.table, pa.list_(struct)))
        return pa.schema(fields)

    def json_keys(self) -> frozenset[str]:
        """Output keys (``child.key`` inside child lists) whose values are JSON text."""
        keys = {c.label for c in self.columns if c.path or c.kind is Kind.JSON}
        for child in self.children:
            keys |= {
                f"{child.table}.{child.label(c)}"
                for c in child.columns
                if c.path or c.name in JSON_COLUMNS
            }
        return frozenset(keys)


def parse_shape(columns: object, table: str) -> Shape:
    if columns is None or (isinstance(columns, list | tuple) and not columns):
        columns = ["*"]  # the reference's client always sends ['*'] by default
    if isinstance(columns, str):
        columns = [columns]
    if not isinstance(columns, list | tuple):
        raise QueryError(f"selectColumns must be a list of column paths, got {columns!r}")
    own: list[Column] = []
    children: dict[str, tuple[list[Column], bool]] = {}
    for index, raw in enumerate(columns):
        try:
            _add(raw, table, own, children)
        except QueryError as exc:
            raise QueryError(f"selectColumns[{index}]: {exc}") from None
    fks = CHILDREN[table]
    shape = Shape(
        table,
        tuple(own),
        tuple(ChildList(t, fks[t], tuple(cols), whole) for t, (cols, whole) in children.items()),
    )
    labels = [c.label for c in shape.columns] + [c.table for c in shape.children]
    clashes = sorted({label for label in labels if labels.count(label) > 1})
    if clashes:
        raise QueryError(f"selectColumns: two columns would both be named {clashes[0]!r}")
    return shape


def _add(
    raw: object, table: str, own: list[Column], children: dict[str, tuple[list[Column], bool]]
) -> None:
    if not isinstance(raw, str):
        raise QueryError(f"a column must be a string, got {raw!r}")
    text = raw.strip()
    prefix, _, rest = text.rpartition(".")
    if text == "*" or (rest == "*" and prefix == table):
        for name in SCHEMAS[table].names:
            _append(own, Column(table, name))
        return
    if rest == "*":
        if prefix not in CHILDREN[table]:
            resolve_column(f"{prefix}.id", table)  # raises the precise error
            raise QueryError(f"{raw!r} is not a table of {table}")
        cols, whole = children.get(prefix, ([], True))
        if cols and not whole:
            raise QueryError(f"cannot mix {prefix}.* with named {prefix} columns")
        children[prefix] = ([Column(prefix, n) for n in SCHEMAS[prefix].names], True)
        return
    column = resolve_column(text, table)
    if column.table == table:
        _append(own, column)
        return
    cols, whole = children.get(column.table, ([], False))
    if whole:
        raise QueryError(f"cannot mix {column.table}.* with named {column.table} columns")
    _append(cols, column)
    children[column.table] = (cols, False)


def _append(columns: list[Column], column: Column) -> None:
    if column not in columns:
        columns.append(column)


@dataclass(frozen=True)
class Order:
    """``orderBy`` over the primary rows: a column, a JSON path, RANDOM(), or id by default."""

    column: Column | None  # None: RANDOM()
    desc: bool


def parse_order(order_by: object, desc: object, table: str) -> Order:
    descending = bool(desc)
    if order_by is None or order_by == "":
        return Order(Column(table, "id"), descending)
    if not isinstance(order_by, str):
        raise QueryError(f"orderBy must be one column path or RANDOM(), got {order_by!r}")
    if order_by.strip().upper() == RANDOM:
        return Order(None, descending)
    try:
        column = resolve_column(order_by, table, allow_children=False)
    except QueryError as exc:
        raise QueryError(f"orderBy: {exc}") from None
    if column.kind in (Kind.TEXT_LIST, Kind.NUMBER_LIST):
        raise QueryError(f"orderBy: cannot order by {column.dotted}, it holds lists")
    return Order(column, descending)


_MAX_COUNT = 2**31 - 1  # polars indexes rows with 32 bits: offset + limit must fit


def parse_window(limit: object, offset: object) -> tuple[int | None, int]:
    """``limit`` (None: no limit) and ``offset`` (None: 0), both counted on primary rows."""
    return _count("limit", limit), _count("offset", offset) or 0


def _count(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise QueryError(f"{name} must be a whole number or null, got {value!r}")
    if value < 0:
        raise QueryError(f"{name} must not be negative, got {value}")
    return min(value, _MAX_COUNT)  # more than any table holds: the same as no bound
