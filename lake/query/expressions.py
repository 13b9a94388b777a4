"""Translate bound filter conditions into polars expressions (the one visitor of the tree).

Comparisons follow SQL: a null operand makes a comparison null, and a filter keeps only rows
where it is true. Values inside JSON objects are compared by the type of the right-hand value:
numbers numerically, strings as text, booleans, objects and lists by their compact JSON text.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from typing import Any

import polars as pl

from lake.query.filters import (
    Column,
    Condition,
    JsonValue,
    Kind,
    Op,
    similar_regex,
    wildcards_regex,
)


def to_expr(conditions: Sequence[Condition]) -> pl.Expr:
    """All ``conditions`` ANDed (true when there are none)."""
    return all_of([condition_expr(c) for c in conditions])


def all_of(exprs: Sequence[pl.Expr]) -> pl.Expr:
    # no ``lit(True) &`` seed: the scan only prunes files by statistics for plain predicates
    return functools.reduce(operator.and_, exprs) if exprs else pl.lit(True)


def column_expr(column: Column) -> pl.Expr:
    expr = pl.col(column.name)
    if column.path:
        expr = expr.str.json_path_match(json_path(column.path))
    return expr


def json_path(path: Sequence[str]) -> str:
    return "$" + "".join(f"['{segment}']" for segment in path)


def condition_expr(condition: Condition) -> pl.Expr:
    column, op, value = condition.column, condition.op, condition.value
    col = column_expr(column)
    if op in (Op.IS_NULL, Op.IS_NOT_NULL) or (op in (Op.IS, Op.IS_NOT) and value is None):
        return col.is_null() if op in (Op.IS_NULL, Op.IS) else col.is_not_null()
    if op in (Op.IS, Op.IS_NOT):  # IS TRUE / IS FALSE on a JSON value: never null
        same = (col == value.text).fill_null(False)
        return same if op is Op.IS else ~same
    if op in (Op.IN, Op.NOT_IN):
        return _membership(column, col, value, negate=op is Op.NOT_IN)
    if op in (Op.BETWEEN, Op.NOT_BETWEEN):
        low, high = value
        inside = _compare(column, col, Op.GE, low) & _compare(column, col, Op.LE, high)
        return inside if op is Op.BETWEEN else ~inside
    if op in (Op.LIKE, Op.NOT_LIKE, Op.ILIKE, Op.NOT_ILIKE):
        regex = like_regex(value, insensitive=op in (Op.ILIKE, Op.NOT_ILIKE))
        found = col.str.contains(regex)
        return found if op in (Op.LIKE, Op.ILIKE) else ~found
    if op in (Op.SIMILAR, Op.NOT_SIMILAR):
        found = col.str.contains(similar_regex(value))
        return found if op is Op.SIMILAR else ~found
    if op in (Op.DISTINCT, Op.NOT_DISTINCT):
        if value is None:
            return col.is_not_null() if op is Op.DISTINCT else col.is_null()
        same = _compare(column, col, Op.EQ, value).fill_null(False)
        return ~same if op is Op.DISTINCT else same
    return _compare(column, col, op, value)


_OPS: dict[Op, Any] = {
    Op.EQ: lambda a, b: a == b,
    Op.NE: lambda a, b: a != b,
    Op.LT: lambda a, b: a < b,
    Op.GT: lambda a, b: a > b,
    Op.LE: lambda a, b: a <= b,
    Op.GE: lambda a, b: a >= b,
}


def _compare(column: Column, col: pl.Expr, op: Op, value: Any) -> pl.Expr:
    apply = _OPS[op]
    if column.kind in (Kind.TEXT_LIST, Kind.NUMBER_LIST):
        return apply(col, pl.lit(pl.Series([list(value)]), allow_object=False).first())
    if not isinstance(value, JsonValue):
        return apply(col, pl.lit(value))
    if value.is_number:
        return apply(col.cast(pl.Float64, strict=False), pl.lit(float(value.value)))
    return apply(col, pl.lit(value.text))


def _membership(column: Column, col: pl.Expr, values: tuple[Any, ...], *, negate: bool) -> pl.Expr:
    present = [v for v in values if v is not None]
    if not values:  # SQL renders an empty IN as FALSE, an empty NOT IN as TRUE
        return pl.lit(negate)
    if isinstance(present[0] if present else None, JsonValue):
        numbers = [float(v.value) for v in present if v.is_number]
        texts = [v.text for v in present if not v.is_number]
        found = pl.lit(False)
        if numbers:
            found = found | col.cast(pl.Float64, strict=False).is_in(pl.Series(numbers).implode())
        if texts:
            found = found | col.is_in(pl.Series(texts, dtype=pl.String).implode())
    else:
        found = col.is_in(pl.Series(present, dtype=_dtype(column, present)).implode())
    if negate:
        # x NOT IN (..., NULL) is never true in SQL
        return pl.lit(False) if len(present) < len(values) else ~found
    return found


def _dtype(column: Column, values: list[Any]) -> pl.DataType | None:
    if column.kind is Kind.NUMBER:
        return pl.Float64()
    if column.kind is Kind.TIME:
        return pl.Datetime("us", "UTC")
    return pl.String() if values else None


def like_regex(pattern: str, *, insensitive: bool) -> str:
    """A SQL LIKE pattern (``%``, ``_``, ``\\`` escapes) as an anchored regular expression."""
    flags = "(?is)" if insensitive else "(?s)"
    return flags + "^" + wildcards_regex(pattern, keep_regex=False) + "$"
