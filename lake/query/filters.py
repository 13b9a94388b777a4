"""The filter language: wire JSON → a typed tree bound to the tables' schemas.

A request's ``filters`` is a list of ``{"left": column path, "op": operator, "right": value}``
objects combined with AND. :func:`parse_filters` checks every one of them against the schema of
the endpoint's primary table and its child tables and returns a :class:`FilterSet`: conditions on
the primary table, and groups of conditions on child tables that must hold on one child row
(the existential semantics with the same-row aliasing rule). Nothing here knows the engine that
runs the tree: :mod:`lake.query.expressions` translates it.

Column paths resolve as in the reference: a first segment naming a table makes the path absolute,
anything else is a column of the primary table; segments after ``metadata``, ``metrics`` or
``classifications`` are a path into that JSON object.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pyarrow as pa

from lake import ids
from lake.errors import QueryError
from lake.tables import SCHEMAS

#: Every table name a column path may start with (``datasets`` is not one).
PATH_TABLES = (
    "datapoints",
    "predictions",
    "groundtruths",
    "feature_vectors",
    "tags",
    "bboxes",
    "lanes",
    "completions",
)

#: The tables each endpoint selects from, with the child tables its filters and columns may use
#: and the column of the child that points at the primary row.
CHILDREN: dict[str, dict[str, str]] = {
    "datapoints": {"tags": "datapoint", "predictions": "datapoint", "groundtruths": "datapoint"},
    "predictions": {
        "bboxes": "prediction",
        "lanes": "prediction",
        "completions": "prediction",
        "feature_vectors": "prediction",
    },
    "groundtruths": {"bboxes": "groundtruth", "lanes": "groundtruth", "completions": "groundtruth"},
    "bboxes": {},
}

JSON_COLUMNS = frozenset({"metadata", "metrics", "classifications"})
ID_COLUMNS = frozenset({"id", "datapoint", "prediction", "groundtruth", "parent_datapoint", "bbox"})
_QUOTES = str.maketrans("", "", "\"'`")


class Op(enum.StrEnum):
    EQ = "="
    NE = "!="
    LT = "<"
    GT = ">"
    LE = "<="
    GE = ">="
    LIKE = "LIKE"
    NOT_LIKE = "NOT LIKE"
    ILIKE = "ILIKE"
    NOT_ILIKE = "NOT ILIKE"
    SIMILAR = "SIMILAR TO"
    NOT_SIMILAR = "NOT SIMILAR TO"
    IS = "IS"
    IS_NOT = "IS NOT"
    IN = "IN"
    NOT_IN = "NOT IN"
    DISTINCT = "IS DISTINCT FROM"
    NOT_DISTINCT = "IS NOT DISTINCT FROM"
    BETWEEN = "BETWEEN"
    NOT_BETWEEN = "NOT BETWEEN"
    IS_NULL = "IS NULL"
    IS_NOT_NULL = "IS NOT NULL"

    @classmethod
    def parse(cls, raw: object) -> Op:
        if not isinstance(raw, str):
            raise QueryError(f"op must be a string, got {_show(raw)}")
        text = " ".join(raw.split()).upper()
        text = {"<>": "!=", "==": "="}.get(text, text)
        try:
            return cls(text)
        except ValueError:
            known = ", ".join(op.value.lower() for op in cls)
            raise QueryError(f"unknown operator {raw!r} (known: {known})") from None


ORDERING = frozenset({Op.LT, Op.GT, Op.LE, Op.GE})
PATTERNS = frozenset({Op.LIKE, Op.NOT_LIKE, Op.ILIKE, Op.NOT_ILIKE, Op.SIMILAR, Op.NOT_SIMILAR})


class Kind(enum.Enum):
    """What a column holds, which decides the operators and values it accepts."""

    ID = "id"
    TEXT = "text"
    NUMBER = "number"
    TIME = "timestamp"
    JSON = "json"
    TEXT_LIST = "list of text"
    NUMBER_LIST = "list of numbers"


def column_kind(table: str, name: str) -> Kind:
    typ = SCHEMAS[table].field(name).type
    if pa.types.is_list(typ):
        return Kind.TEXT_LIST if pa.types.is_string(typ.value_type) else Kind.NUMBER_LIST
    if pa.types.is_timestamp(typ):
        return Kind.TIME
    if pa.types.is_floating(typ) or pa.types.is_integer(typ):
        return Kind.NUMBER
    if name in JSON_COLUMNS:
        return Kind.JSON
    return Kind.ID if name in ID_COLUMNS else Kind.TEXT


@dataclass(frozen=True)
class Column:
    """A resolved column path: ``table.column`` plus a path into a JSON column."""

    table: str
    name: str
    path: tuple[str, ...] = ()

    @property
    def kind(self) -> Kind:
        # a value inside a JSON object is compared by the rules of JSON values
        return Kind.JSON if self.path else column_kind(self.table, self.name)

    @property
    def dotted(self) -> str:
        return ".".join((self.table, self.name, *self.path))

    @property
    def label(self) -> str:
        """The key the column takes in results: a JSON path goes by its last segment."""
        return self.path[-1] if self.path else self.name


def resolve_column(left: object, primary: str, *, allow_children: bool = True) -> Column:
    """Resolve a wire column path against the endpoint whose primary table is ``primary``."""
    if not isinstance(left, str) or not left.strip():
        raise QueryError(f"a column path must be a non-empty string, got {_show(left)}")
    segments = [s.translate(_QUOTES).strip() for s in left.strip().split(".")]
    if any(not s for s in segments):
        raise QueryError(f"column path {left!r} has an empty segment")
    table = primary
    if segments[0] in PATH_TABLES and len(segments) > 1:
        table = segments.pop(0)
        if table != primary:
            children = CHILDREN[primary]
            if table not in children:
                raise QueryError(_bad_table(left, table, primary))
            if not allow_children:
                raise QueryError(
                    f"column {left!r} is on child table {table}: only columns of "
                    f"{primary} are allowed here"
                )
    name, *path = segments
    schema = SCHEMAS[table]
    if name not in schema.names:
        raise QueryError(
            f"unknown column {name!r} in table {table} (columns: {', '.join(schema.names)})"
        )
    if path and name not in JSON_COLUMNS:
        raise QueryError(f"column {table}.{name} is not a JSON object: {left!r} has no fields")
    return Column(table, name, tuple(path))


def _bad_table(left: str, table: str, primary: str) -> str:
    children = CHILDREN[primary]
    allowed = ", ".join(children) if children else "none"
    hint = ""
    if table == "datapoints":
        hint = "; to filter by datapoint use the column 'datapoint'"
    return (
        f"table {table} cannot be used in {left!r} when selecting {primary} "
        f"(child tables allowed: {allowed}){hint}"
    )


@dataclass(frozen=True)
class JsonValue:
    """A right-hand value compared with a value inside a JSON object."""

    value: Any  # None, bool, int, float, str, or a list/dict

    @property
    def is_number(self) -> bool:
        return isinstance(self.value, int | float) and not isinstance(self.value, bool)

    @property
    def text(self) -> str:
        """The value as the engine extracts it from JSON text: strings bare, the rest JSON."""
        if isinstance(self.value, str):
            return self.value
        if self.is_number and float(self.value).is_integer() and abs(self.value) < 2**53:
            return str(int(self.value))
        return json.dumps(self.value, separators=(",", ":"))


@dataclass(frozen=True)
class Condition:
    """``column op value``; ``value`` is already of the column's type (a list for IN/BETWEEN)."""

    column: Column
    op: Op
    value: Any


@dataclass(frozen=True)
class ChildGroup:
    """Conditions that must hold together on one row of ``table`` (one join alias)."""

    table: str
    fk: str
    alias: str
    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class FilterSet:
    primary: str
    conditions: tuple[Condition, ...]  # on the primary table, ANDed
    groups: tuple[ChildGroup, ...]  # each: "there is a child row with ..."

    @property
    def empty(self) -> bool:
        return not self.conditions and not self.groups


def parse_filters(filters: object, primary: str) -> FilterSet:
    """Parse and bind a wire ``filters`` list for the endpoint of ``primary``."""
    if primary not in CHILDREN:
        raise QueryError(f"cannot select from {primary!r} (tables: {', '.join(CHILDREN)})")
    if filters is None:
        filters = []
    if not isinstance(filters, list | tuple):
        raise QueryError(
            f"filters must be a list of {{left, op, right}} objects, got {_show(filters)}"
        )
    conditions = []
    for index, raw in enumerate(filters):
        try:
            conditions.append(parse_condition(raw, primary))
        except QueryError as exc:
            raise QueryError(f"filters[{index}]: {exc}") from None
    return _group(conditions, primary)


def parse_condition(raw: object, primary: str) -> Condition:
    if not isinstance(raw, Mapping):
        raise QueryError(f"a filter must be an object {{left, op, right}}, got {_show(raw)}")
    unknown = set(raw) - {"left", "op", "right"}
    if unknown:
        raise QueryError(f"unknown filter key(s) {', '.join(sorted(map(str, unknown)))}")
    for key in ("left", "op"):
        if key not in raw:
            raise QueryError(f"the filter has no {key!r}")
    op = Op.parse(raw["op"])
    column = resolve_column(raw["left"], primary)
    if "right" not in raw and op not in (Op.IS_NULL, Op.IS_NOT_NULL):
        raise QueryError("the filter has no 'right'")
    value = bind_value(column, op, raw.get("right"))
    return Condition(column, op, value)


def _group(conditions: list[Condition], primary: str) -> FilterSet:
    """Apply the aliasing rule: the i-th of k > 1 filters on one child column gets alias i."""
    per_column = Counter(c.column.dotted for c in conditions if c.column.table != primary)
    seen: Counter[str] = Counter()
    groups: dict[str, list[Condition]] = {}
    own = []
    for condition in conditions:
        column = condition.column
        if column.table == primary:
            own.append(condition)
            continue
        alias = column.table
        if per_column[column.dotted] > 1:
            alias = f"{column.table}_{seen[column.dotted]}"
            seen[column.dotted] += 1
        groups.setdefault(alias, []).append(condition)
    children = CHILDREN[primary]
    return FilterSet(
        primary,
        tuple(own),
        tuple(
            ChildGroup(conds[0].column.table, children[conds[0].column.table], alias, tuple(conds))
            for alias, conds in groups.items()
        ),
    )


# -- values ------------------------------------------------------------------------------------
def bind_value(column: Column, op: Op, right: object) -> Any:
    """Check ``right`` against the column's kind and the operator; return the typed value."""
    kind = column.kind
    where = f"{column.dotted} ({kind.value})"
    if op in (Op.IS_NULL, Op.IS_NOT_NULL):
        if right is not None:
            raise QueryError(f"{op.value.lower()} takes no value, got {_show(right)}")
        return None
    if op in (Op.IS, Op.IS_NOT):
        if right is None:
            return None
        if isinstance(right, bool) and kind is Kind.JSON:
            return JsonValue(right)
        raise QueryError(
            f"{op.value.lower()} compares with null"
            + (", true or false" if kind is Kind.JSON else "")
            + f", got {_show(right)} for {where}"
        )
    if op in (Op.IN, Op.NOT_IN):
        if not isinstance(right, list | tuple):
            raise QueryError(f'right side of "{op.value}" must be an array, got {_show(right)}')
        return tuple(None if v is None else _scalar(column, v, where) for v in right)
    if op in (Op.BETWEEN, Op.NOT_BETWEEN):
        if not isinstance(right, list | tuple) or len(right) != 2 or None in right:
            raise QueryError(f'right side of "{op.value}" must be [low, high], got {_show(right)}')
        if kind in (Kind.TEXT_LIST, Kind.NUMBER_LIST):
            raise QueryError(f"{op.value.lower()} does not apply to {where}")
        return tuple(_scalar(column, v, where) for v in right)
    if op in PATTERNS:
        if kind not in (Kind.TEXT, Kind.ID, Kind.JSON):
            raise QueryError(f"{op.value.lower()} needs a text column or a JSON path, not {where}")
        if not isinstance(right, str):
            raise QueryError(f"{op.value.lower()} needs a string pattern, got {_show(right)}")
        if op in (Op.SIMILAR, Op.NOT_SIMILAR):
            similar_regex(right)  # refuse a malformed pattern now, not when the query runs
        return right
    if right is None:
        if op in (Op.DISTINCT, Op.NOT_DISTINCT):
            return None
        raise QueryError(f"comparing {column.dotted} with null never matches: use 'is' / 'is not'")
    if kind in (Kind.TEXT_LIST, Kind.NUMBER_LIST):
        if op not in (Op.EQ, Op.NE, Op.DISTINCT, Op.NOT_DISTINCT) or not isinstance(
            right, list | tuple
        ):
            raise QueryError(
                f"{where} can only be compared with =, != or is [not] distinct from a list"
            )
        element = Kind.TEXT if kind is Kind.TEXT_LIST else Kind.NUMBER
        return tuple(_typed(element, v, where) for v in right)
    value = _scalar(column, right, where)
    if (
        op in ORDERING
        and isinstance(value, JsonValue)
        and not (value.is_number or isinstance(value.value, str))
    ):
        raise QueryError(f"{op.value} needs a number or a string for {where}, got {_show(right)}")
    return value


def _scalar(column: Column, value: object, where: str) -> Any:
    kind = column.kind
    if kind is Kind.JSON:
        return json_value(value)
    if kind in (Kind.TEXT_LIST, Kind.NUMBER_LIST):
        raise QueryError(f"{where} holds lists: compare it with =, != or is null")
    return _typed(kind, value, where)


def _typed(kind: Kind, value: object, where: str) -> Any:
    if isinstance(value, list | dict | tuple):
        raise QueryError(f"{where} cannot be compared with {_show(value)}")
    if kind is Kind.NUMBER:
        if isinstance(value, bool):
            raise QueryError(f"{where} needs a number, got {_show(value)}")
        if isinstance(value, int | float):
            return float(value)
        try:
            number = float(str(value))
        except ValueError:
            raise QueryError(f"{where} needs a number, got {_show(value)}") from None
        if math.isnan(number):
            raise QueryError(f"{where} cannot be compared with NaN")
        return number
    if isinstance(value, bool):
        raise QueryError(f"{where} needs a string, got {_show(value)}")
    text = _number_text(value) if isinstance(value, int | float) else str(value)
    if kind is Kind.ID:
        canonical = ids.canonical(text)
        if canonical is None:
            raise QueryError(f"{where} needs a UUID, got {_show(value)}")
        return canonical
    if kind is Kind.TIME:
        return parse_time(text, where)
    return text


def _number_text(value: int | float) -> str:
    """Numbers become text the way the reference's literal quoting writes them (5.0 → '5')."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return str(value)


def parse_time(text: str, where: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise QueryError(
            f"{where} needs an ISO 8601 time such as 2024-05-01T12:00:00Z, got {text!r}"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def json_value(value: object) -> JsonValue:
    """The reference's coercion: a string that parses as JSON is that JSON value, else a string."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return JsonValue(value)
        if isinstance(parsed, float) and not math.isfinite(parsed):
            return JsonValue(value)
        return JsonValue(parsed)
    return JsonValue(value)


def wildcards_regex(pattern: str, *, keep_regex: bool) -> str:
    """A SQL pattern's ``%`` / ``_`` wildcards and ``\\`` escapes as regular-expression text.

    LIKE (``keep_regex=False``) takes every other character literally; SIMILAR TO keeps the
    regular-expression operators (``|``, ``*``, ``()``, ``[]`` ...) except ``.``, a literal.
    """
    out = []
    chars = iter(pattern)
    for char in chars:
        if char == "\\":
            out.append(re.escape(next(chars, "\\")))
        elif char == "%":
            out.append(".*")
        elif char == "_":
            out.append(".")
        elif keep_regex and char != ".":
            out.append(char)
        else:
            out.append(re.escape(char))
    return "".join(out)


def similar_regex(pattern: str) -> str:
    """A SQL SIMILAR TO pattern as an anchored regular expression."""
    regex = "(?s)^(?:" + wildcards_regex(pattern, keep_regex=True) + ")$"
    try:  # the engine's regex dialect decides (no look-arounds, no back-references)
        pl.Series([""]).str.contains(regex)
    except pl.exceptions.PolarsError:
        raise QueryError(f"invalid SIMILAR TO pattern {pattern!r}") from None
    return regex


def _show(value: object) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
