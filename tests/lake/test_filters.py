"""The filter language's parser and binder: every operator, coercion and error, without a lake."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lake.errors import QueryError
from lake.query.expressions import like_regex
from lake.query.filters import JsonValue, Op, parse_filters, resolve_column
from lake.query.shape import parse_order, parse_shape, parse_window

UUID = "01a2019a-be43-7000-8000-0040034e7fa6"


def one(left: str, op: str, right: object, table: str = "datapoints"):  # type: ignore[no-untyped-def]
    parsed = parse_filters([{"left": left, "op": op, "right": right}], table)
    return (parsed.conditions or parsed.groups[0].conditions)[0]


@pytest.mark.parametrize(
    ("raw", "op"),
    [
        ("=", Op.EQ),
        ("!=", Op.NE),
        ("<>", Op.NE),
        ("<", Op.LT),
        (">", Op.GT),
        ("<=", Op.LE),
        (">=", Op.GE),
        ("like", Op.LIKE),
        ("NOT  like", Op.NOT_LIKE),
        ("iLike", Op.ILIKE),
        ("not ilike", Op.NOT_ILIKE),
        ("similar to", Op.SIMILAR),
        ("is", Op.IS),
        ("is not", Op.IS_NOT),
        ("in", Op.IN),
        ("Not In", Op.NOT_IN),
        ("is distinct from", Op.DISTINCT),
        ("is not distinct from", Op.NOT_DISTINCT),
    ],
)
def test_operators_are_case_and_space_insensitive(raw: str, op: Op) -> None:
    assert Op.parse(raw) is op


def test_unknown_operator_is_named() -> None:
    with pytest.raises(QueryError, match=r"filters\[0\]: unknown operator '~~'"):
        parse_filters([{"left": "id", "op": "~~", "right": 1}], "datapoints")


@pytest.mark.parametrize(
    ("left", "message"),
    [
        ("nope", "unknown column 'nope' in table datapoints"),
        ("tags.nam", "unknown column 'nam' in table tags"),
        ("bboxes.class_name", "table bboxes cannot be used in 'bboxes.class_name' when selecting"),
        ("datasets.name", "unknown column 'datasets' in table datapoints"),
        ("type.x", "column datapoints.type is not a JSON object"),
        ("", "non-empty string"),
        ("metadata..x", "empty segment"),
    ],
)
def test_bad_columns_are_named(left: str, message: str) -> None:
    with pytest.raises(QueryError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_filters([{"left": left, "op": "=", "right": "a"}], "datapoints")


def test_datapoints_prefix_from_predictions_hints_at_the_datapoint_column() -> None:
    with pytest.raises(QueryError, match="use the column 'datapoint'"):
        parse_filters([{"left": "datapoints.id", "op": "=", "right": UUID}], "predictions")


def test_column_paths_resolve_like_the_reference() -> None:
    assert resolve_column("metadata.normalized_roi.top", "datapoints").path == (
        "normalized_roi",
        "top",
    )
    column = resolve_column("predictions.metrics.entropy", "datapoints")
    assert (column.table, column.name, column.path, column.label) == (
        "predictions",
        "metrics",
        ("entropy",),
        "entropy",
    )
    assert resolve_column('"datapoints"."type"', "datapoints").name == "type"
    assert resolve_column("datapoint", "predictions").table == "predictions"


@pytest.mark.parametrize(
    ("left", "op", "right", "message"),
    [
        ("id", "in", "x", 'right side of "IN" must be an array'),
        ("predictions.confidence", ">", "high", "needs a number"),
        ("predictions.confidence", "=", True, "needs a number"),
        ("predictions.confidence", "like", "5%", "needs a text column"),
        ("id", "=", "not-a-uuid", "needs a UUID"),
        ("created_at", ">", "yesterday", "ISO 8601"),
        ("type", "=", None, "use 'is' / 'is not'"),
        ("type", "is", "IMAGE", "compares with null"),
        ("type", "like", 5, "string pattern"),
        ("type", "=", ["a"], "cannot be compared with"),
        ("type", "between", [1], r"must be \[low, high\]"),
        ("type", "similar to", "(", "invalid SIMILAR TO pattern"),
        ("metadata.flag", "<", True, "needs a number or a string"),
        ("predictions.class_names", ">", ["a"], "can only be compared with"),
    ],
)
def test_wrongly_typed_values_are_refused(left: str, op: str, right: object, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        parse_filters([{"left": left, "op": op, "right": right}], "datapoints")


@pytest.mark.parametrize(
    "raw",
    [None, {"left": "id"}, {"op": "="}, {"left": "id", "op": "=", "right": UUID, "x": 1}, "id=1"],
)
def test_malformed_filter_objects(raw: object) -> None:
    with pytest.raises(QueryError, match=r"filters\[0\]"):
        parse_filters([raw], "datapoints")
    with pytest.raises(QueryError, match="must be a list"):
        parse_filters({"left": "id"}, "datapoints")


def test_values_take_the_column_type() -> None:
    assert one("predictions.confidence", ">", "0.5").value == 0.5  # 5 and "5" mean the same
    assert one("tags.value", "=", 5).value == "5"
    assert one("tags.value", "=", 5.0).value == "5"
    assert one("id", "=", UUID.upper()).value == UUID
    assert one("created_at", ">", "2024-01-02T03:04:05Z").value == datetime(
        2024, 1, 2, 3, 4, 5, tzinfo=UTC
    )
    assert one("created_at", ">", "2024-01-02").value == datetime(2024, 1, 2, tzinfo=UTC)
    assert one("id", "in", [UUID, None]).value == (UUID, None)


@pytest.mark.parametrize(
    ("right", "value"),
    [
        (100, 100),
        ("100", 100),  # parses as JSON: the number
        ('"s3://b/x.jpg"', "s3://b/x.jpg"),  # the original's workaround still works
        ("s3://b/x.jpg", "s3://b/x.jpg"),  # not JSON: taken as a string
        ("true", True),
        ({"a": 1}, {"a": 1}),
    ],
)
def test_json_path_coercion(right: object, value: object) -> None:
    assert one("metadata.uri", "=", right).value == JsonValue(value)


def test_aliasing_rule_of_the_reference() -> None:
    def aliases(filters: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
        parsed = parse_filters(
            [{"left": f"tags.{col}", "op": "=", "right": v} for col, v in filters], "datapoints"
        )
        return [(g.alias, [str(c.value) for c in g.conditions]) for g in parsed.groups]

    # one filter per column: one join, both on the same row
    assert aliases([("name", "source"), ("value", "dogs")]) == [("tags", ["source", "dogs"])]
    # [name=a, value=1, name=b, value=2]: tags_0 = (a, 1), tags_1 = (b, 2)
    assert aliases([("name", "a"), ("value", "1"), ("name", "b"), ("value", "2")]) == [
        ("tags_0", ["a", "1"]),
        ("tags_1", ["b", "2"]),
    ]
    # [name=a, name=b, value=1]: tags_0, tags_1 and the unaliased tags
    assert aliases([("name", "a"), ("name", "b"), ("value", "1")]) == [
        ("tags_0", ["a"]),
        ("tags_1", ["b"]),
        ("tags", ["1"]),
    ]


def test_primary_columns_are_never_aliased() -> None:
    parsed = parse_filters(
        [
            {"left": "created_at", "op": ">", "right": "2024-01-01"},
            {"left": "created_at", "op": "<", "right": "2030-01-01"},
        ],
        "datapoints",
    )
    assert len(parsed.conditions) == 2 and parsed.groups == ()


def test_like_patterns() -> None:
    import re

    assert re.match(like_regex("a%b_c", insensitive=False), "aXYZbQc")
    assert not re.match(like_regex("a%b_c", insensitive=False), "aXYZbQQc")
    assert re.match(like_regex(r"100\%", insensitive=False), "100%")
    assert not re.match(like_regex(r"100\%", insensitive=False), "1000")
    assert re.match(like_regex("A.B", insensitive=True), "a.b")
    assert not re.match(like_regex("A.B", insensitive=True), "axb")


def test_select_columns_shapes() -> None:
    shape = parse_shape(
        ["id", "metadata.uri", "tags.name", "tags.value", "predictions.*"], "datapoints"
    )
    assert [c.label for c in shape.columns] == ["id", "uri"]
    assert [(c.table, c.whole) for c in shape.children] == [("tags", False), ("predictions", True)]
    assert [c.label for c in parse_shape([], "datapoints").columns][:2] == ["id", "organization_id"]
    assert (
        parse_shape(["predictions.metrics.entropy"], "datapoints")
        .children[0]
        .label(resolve_column("predictions.metrics.entropy", "datapoints"))
        == "metrics->entropy"
    )
    with pytest.raises(QueryError, match=r"selectColumns\[1\]: cannot mix tags\.\* with named"):
        parse_shape(["tags.*", "tags.name"], "datapoints")
    with pytest.raises(QueryError, match="both be named 'uri'"):
        parse_shape(["metadata.uri", "metadata.a.uri"], "datapoints")
    with pytest.raises(QueryError, match="table bboxes cannot be used"):
        parse_shape(["bboxes.*"], "datapoints")


def test_order_and_window() -> None:
    assert parse_order(None, None, "datapoints").column.name == "id"  # type: ignore[union-attr]
    assert parse_order("random()", True, "datapoints").column is None
    assert parse_order("metadata.width", 1, "datapoints").desc is True
    with pytest.raises(QueryError, match="only columns of datapoints"):
        parse_order("tags.name", False, "datapoints")
    assert parse_window(None, None) == (None, 0)
    for bad in (-1, "10", 1.5, True):
        with pytest.raises(QueryError):
            parse_window(bad, None)
