"""The query engine end to end on a local and an S3 lake: filters, shaping, order, deletes, SQL."""

from __future__ import annotations

import io
import json
from typing import Any

import pyarrow.parquet as pq
import pytest

from lake import Lake, QueryError
from lake.query import delete, select, sql, write

CLS = "CLASSIFICATION"


def record(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "IMAGE",
        "metadata": {"uri": f"s3://b/{name}.jpg", **extra.pop("meta", {})},
        **extra,
    }


RECORDS = [
    record(
        "a",
        meta={"width": 100, "label": "5", "flag": True, "roi": {"top": 1}},
        tags={"split": "train", "source": "web"},
        groundtruths=[{"task_type": CLS, "class_name": "cat"}],
        predictions=[
            {
                "task_type": CLS,
                "model_name": "m1",
                "class_names": ["cat", "dog"],
                "logits": [2.0, 0.0],
            }
        ],
    ),
    record(
        "b",
        meta={"width": 300, "label": "x"},
        tags={"split": "val", "source": "stanford_dogs"},
        groundtruths=[{"task_type": CLS, "class_name": "dog"}],
        predictions=[
            {
                "task_type": CLS,
                "model_name": "m1",
                "class_names": ["cat", "dog"],
                "logits": [0.0, 1.0],
            },
            {
                "task_type": CLS,
                "model_name": "m2",
                "class_names": ["cat", "dog"],
                "logits": [0.0, 3.0],
            },
        ],
    ),
    record("c", meta={"width": "300"}, text="hello"),
    record("d", meta={"width": 50.5}, tags={"split": "train", "source": "stanford_dogs"}),
    {"type": "TEXT", "text": "no metadata", "tags": {"split": "test"}},
]


class Q:
    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        rows = select(lake, "datapoints", columns=["id", "metadata.uri", "text"]).to_pylist()
        self.ids = {
            (r["uri"] or "").removeprefix("s3://b/").removesuffix(".jpg") or "text": r["id"]
            for r in rows
        }
        self.names = {v: k for k, v in self.ids.items()}

    def __call__(
        self, *filters: tuple[str, str, Any], table: str = "datapoints", **kw: Any
    ) -> list[str]:
        """Names (datapoints) or ids of the rows matching ``filters``, in output order."""
        wire = [{"left": left, "op": op, "right": right} for left, op, right in filters]
        rows = select(self.lake, table, filters=wire, columns=["id"], **kw).to_pylist()
        return [self.names.get(r["id"], r["id"]) for r in rows]


@pytest.fixture
def q(lake: Lake, ingest: Any) -> Q:
    assert ingest(RECORDS).status == "SUCCEEDED"
    return Q(lake)


def test_every_comparison_operator(q: Q) -> None:
    a = q.ids["a"]
    assert q(("id", "=", a)) == ["a"]
    assert sorted(q(("id", "!=", a))) == ["b", "c", "d", "text"]
    assert sorted(q(("type", "=", "TEXT"))) == ["c", "text"]  # a record with text is TEXT
    assert sorted(q(("type", "in", ["TEXT", "VIDEO"]))) == ["c", "text"]
    assert sorted(q(("type", "not in", ["TEXT"]))) == ["a", "b", "d"]
    assert q(("type", "in", [])) == [] and len(q(("type", "not in", []))) == 5
    assert q(("text", "like", "hel%")) == ["c"]
    assert q(("text", "not like", "hel%")) == ["text"]  # null text never matches
    assert q(("text", "ilike", "HEL_O")) == ["c"]
    assert q(("text", "not ilike", "HEL%")) == ["text"]
    assert q(("text", "similar to", "(hello|bye)")) == ["c"]
    assert q(("text", "not similar to", "h%")) == ["text"]
    assert sorted(q(("text", "is", None))) == ["a", "b", "d"]
    assert sorted(q(("text", "is not", None))) == ["c", "text"]
    assert sorted(q(("text", "is distinct from", "hello"))) == ["a", "b", "d", "text"]
    assert q(("text", "is not distinct from", "hello")) == ["c"]
    assert sorted(q(("text", "is distinct from", None))) == ["c", "text"]
    ordered = sorted(q.ids.values())
    assert q(("id", ">", ordered[2])) == [q.names[i] for i in ordered[3:]]
    assert q(("id", ">=", ordered[2]), ("id", "<", ordered[4])) == [
        q.names[i] for i in ordered[2:4]
    ]
    assert q(("id", "<=", ordered[0])) == [q.names[ordered[0]]]
    assert q(("id", "between", [ordered[1], ordered[2]])) == [q.names[i] for i in ordered[1:3]]
    assert q(("created_at", ">", "2000-01-01T00:00:00Z"), limit=1) == [q.names[ordered[0]]]
    assert q(("created_at", "<", "2000-01-01")) == []


def test_json_paths_coerce_like_the_reference(q: Q) -> None:
    assert sorted(q(("metadata.width", ">", 100))) == ["b", "c"]  # "300" the string too
    assert sorted(q(("metadata.width", ">", "100"))) == ["b", "c"]  # "100" parses as JSON
    assert q(("metadata.width", "=", 50.5)) == ["d"]
    assert q(("metadata.uri", "=", "s3://b/a.jpg")) == ["a"]  # plain string
    assert q(("metadata.uri", "=", '"s3://b/a.jpg"')) == ["a"]  # the original's quoted form
    assert q(("metadata.uri", "like", "%/b.jpg")) == ["b"]
    assert q(("metadata.label", "=", "x")) == ["b"]
    assert q(("metadata.flag", "=", True)) == ["a"]
    assert q(("metadata.flag", "is", True)) == ["a"]
    assert q(("metadata.roi.top", "=", 1)) == ["a"]
    assert q(("metadata.roi", "=", {"top": 1})) == ["a"]
    assert sorted(q(("metadata.uri", "in", ["s3://b/a.jpg", "s3://b/c.jpg"]))) == ["a", "c"]
    assert sorted(q(("metadata.width", "in", [100, 50.5]))) == ["a", "d"]
    assert q(("metadata.missing", "is not", None)) == []
    assert sorted(q(("metadata", "is", None))) == ["text"]


def test_child_filters_are_existential(q: Q) -> None:
    # some tag not named split: every datapoint with a tag other than split; none without tags
    assert sorted(q(("tags.name", "!=", "split"))) == ["a", "b", "d"]
    # datapoints without tags join one null row: 'is null' holds on it
    assert sorted(q(("tags.name", "is", None))) == ["c"]
    assert sorted(q(("groundtruths.class_name", "=", "dog"))) == ["b"]
    assert q(("predictions.model_name", "=", "m2")) == ["b"]
    assert sorted(q(("predictions.confidence", ">", 0.8))) == ["a", "b"]


def test_same_row_and_aliasing_rule(q: Q) -> None:
    # name and value on the same tag row: "has tag source=stanford_dogs"
    assert sorted(q(("tags.name", "=", "source"), ("tags.value", "=", "stanford_dogs"))) == [
        "b",
        "d",
    ]
    # not the same row: split=stanford_dogs exists nowhere
    assert q(("tags.name", "=", "split"), ("tags.value", "=", "web")) == []
    # [name=a, value=1, name=b, value=2]: has tag a=1 and tag b=2
    both = q(
        ("tags.name", "=", "split"),
        ("tags.value", "=", "train"),
        ("tags.name", "=", "source"),
        ("tags.value", "=", "stanford_dogs"),
    )
    assert both == ["d"]
    # [name=a, name=b, value=1]: has a tag split, a tag source and some tag valued web
    assert q(
        ("tags.name", "=", "split"), ("tags.name", "=", "source"), ("tags.value", "=", "web")
    ) == ["a"]


def test_child_prefixes_per_endpoint(q: Q) -> None:
    assert len(q(("feature_vectors.model_name", "=", "m1:avgpool"), table="predictions")) == 0
    m2 = q(("model_name", "=", "m2"), table="predictions")
    assert len(m2) == 1
    b = q.ids["b"]
    assert len(q(("datapoint", "=", b), table="predictions")) == 2
    assert len(q(("datapoint", "=", b), table="groundtruths")) == 1
    with pytest.raises(QueryError, match="table tags cannot be used"):
        q(("tags.name", "=", "x"), table="predictions")
    with pytest.raises(QueryError, match=r"child tables allowed: none"):
        q(("predictions.id", "=", b), table="bboxes")


def test_select_columns_shaping(q: Q) -> None:
    rows = select(
        q.lake,
        "datapoints",
        filters=[{"left": "id", "op": "in", "right": [q.ids["b"], q.ids["c"]]}],
        columns=[
            "id",
            "metadata.uri",
            "metadata.width",
            "tags.name",
            "tags.value",
            "predictions.*",
        ],
    ).to_pylist()
    b, c = sorted(rows, key=lambda r: q.names[r["id"]])
    assert set(b) == {"id", "uri", "width", "tags", "predictions"}
    assert (b["uri"], b["width"], c["width"]) == ("s3://b/b.jpg", 300, "300")  # JSON values
    assert sorted((t["name"], t["value"]) for t in b["tags"]) == [
        ("source", "stanford_dogs"),
        ("split", "val"),
    ]
    assert set(b["tags"][0]) == {"name", "value"}
    assert sorted(p["model_name"] for p in b["predictions"]) == ["m1", "m2"]
    assert "confidences" in b["predictions"][0] and isinstance(b["predictions"][0]["metrics"], dict)
    assert c["tags"] == [] and c["predictions"] == []  # no children: empty lists
    # children are every child of the row, not only those the filters matched
    only = select(
        q.lake,
        "datapoints",
        filters=[{"left": "predictions.model_name", "op": "=", "right": "m2"}],
        columns=["id", "predictions.model_name"],
    ).to_pylist()
    assert [sorted(p["model_name"] for p in r["predictions"]) for r in only] == [["m1", "m2"]]
    entropy = select(
        q.lake, "datapoints", columns=["predictions.metrics.entropy"], limit=1
    ).to_pylist()
    assert isinstance(entropy[0]["predictions"][0]["metrics->entropy"], float)


def test_order_limit_offset_and_pagination(q: Q) -> None:
    everything = q()
    assert everything == [q.names[i] for i in sorted(q.ids.values())]  # stable default: by id
    pages = [q(limit=2, offset=o) for o in (0, 2, 4)]
    assert [n for page in pages for n in page] == everything  # no overlap, nothing missed
    assert q(order_by="id", desc=True) == everything[::-1]
    assert q(order_by="metadata.width")[:4] == ["d", "a", "b", "c"]  # numbers, then text
    assert q(order_by="text", desc=True)[:3] == sorted(
        ["a", "b", "d"], key=q.ids.get
    )  # nulls first
    assert q(order_by="text")[-3:] == sorted(["a", "b", "d"], key=q.ids.get)  # nulls last
    shuffled = q(order_by="RANDOM()")
    assert sorted(shuffled) == sorted(everything)
    top = select(q.lake, "predictions", order_by="confidence", desc=True, limit=1).to_pylist()
    assert top[0]["model_name"] == "m2"  # logits [0, 3]: the most confident
    with pytest.raises(QueryError, match="orderBy"):
        q(order_by="tags.name")


def test_results_stream_in_batches(q: Q) -> None:
    rows = select(q.lake, "datapoints", chunk_rows=2)
    sizes = [b.num_rows for b in rows]
    assert sum(sizes) == 5 and max(sizes) <= 2


def test_organizations_see_only_their_rows(lake: Lake, ingest: Any) -> None:
    ingest([record("mine")], org="acme")
    ingest([record("theirs"), record("theirs2")], org="other")
    acme = select(
        lake, "datapoints", columns=["uri" if False else "metadata.uri"], organization_id="acme"
    )
    assert [r["uri"] for r in acme.to_pylist()] == ["s3://b/mine.jpg"]
    counted = sql(lake, "SELECT count(*) AS n FROM datapoints", organization_id="other").to_pylist()
    assert counted == [{"n": 2}]
    assert delete(lake, "datapoints", filters=[], organization_id="acme").num_rows == 1
    assert lake.count("datapoints") == 2


def test_delete_datapoints_cascades(q: Q) -> None:
    lake = q.lake
    b = q.ids["b"]
    before = {
        t: lake.count(t)
        for t in ("datapoints", "tags", "predictions", "groundtruths", "feature_vectors")
    }
    deleted = delete(
        lake, "datapoints", filters=[{"left": "metadata.uri", "op": "=", "right": "s3://b/b.jpg"}]
    )
    assert deleted.column("id").to_pylist() == [b]
    assert "metadata" in deleted.column_names
    after = {t: lake.count(t) for t in before}
    assert after["datapoints"] == before["datapoints"] - 1
    assert after["tags"] == before["tags"] - 2
    assert after["predictions"] == before["predictions"] - 2
    assert after["groundtruths"] == before["groundtruths"] - 1
    for table in ("tags", "predictions", "groundtruths", "feature_vectors"):
        assert not [r for r in lake.read(table).to_pylist() if r["datapoint"] == b], table
    assert sorted(q()) == ["a", "c", "d", "text"]  # the others are untouched


def test_delete_predictions_cascades_to_vectors_and_keeps_the_rest(q: Q) -> None:
    lake = q.lake
    vectors = lake.count("feature_vectors")
    deleted = delete(
        lake, "predictions", filters=[{"left": "model_name", "op": "=", "right": "m1"}]
    )
    assert sorted(deleted.column("model_name").to_pylist()) == ["m1", "m1"]
    remaining = lake.read("predictions").to_pylist()
    assert [p["model_name"] for p in remaining] == ["m2"]
    gone = set(deleted.column("id").to_pylist())
    assert not [v for v in lake.read("feature_vectors").to_pylist() if v["prediction"] in gone]
    assert lake.count("feature_vectors") < vectors
    assert lake.count("groundtruths") == 2 and lake.count("datapoints") == 5


def test_delete_with_limit_and_bad_filters_changes_nothing(q: Q) -> None:
    lake = q.lake
    state = lake.state()
    with pytest.raises(QueryError, match="unknown column"):
        delete(lake, "datapoints", filters=[{"left": "nope", "op": "=", "right": 1}])
    with pytest.raises(QueryError, match="cannot delete from 'bboxes'"):
        delete(lake, "bboxes", filters=[])
    assert lake.state().seq == state.seq
    first = delete(lake, "datapoints", filters=[], limit=2).column("id").to_pylist()
    assert first == sorted(q.ids.values())[:2] and lake.count("datapoints") == 3


def test_sql_reads_and_refuses_everything_else(q: Q) -> None:
    rows = sql(
        q.lake,
        "SELECT g.class_name, count(*) AS n FROM datapoints d JOIN groundtruths g "
        "ON g.datapoint = d.id GROUP BY 1 ORDER BY 1",
    ).to_pylist()
    assert rows == [{"class_name": "cat", "n": 1}, {"class_name": "dog", "n": 1}]
    assert sql(q.lake, "WITH t AS (SELECT 1 AS x) SELECT x FROM t").to_pylist() == [{"x": 1}]
    refused = {
        "DELETE FROM datapoints": "only SELECT statements are allowed, got DELETE",
        "SELECT 1; SELECT 2": "exactly one SQL statement",
        "CREATE TABLE x AS SELECT 1": "got CREATE",
        "COPY datapoints TO 'x.csv'": "got COPY",
        "ATTACH 'x.db'": "got ATTACH",
        "PRAGMA version": "got PRAGMA",
        "INSTALL httpfs": "got LOAD",
        "SELECT * FROM read_csv('/etc/passwd')": "file system operations are disabled",
        "SELECT * FROM read_parquet('x/*.parquet')": "file system operations are disabled",
        "SELECT * FROM uploads": "uploads does not exist",
        "SELEC 1": "syntax error",
        "": "empty",
    }
    for statement, message in refused.items():
        with pytest.raises(QueryError, match=message):
            sql(q.lake, statement).to_pylist()
    assert q.lake.count("datapoints") == 5


def test_output_formats(q: Q) -> None:
    def run(fmt: str) -> bytes:
        out = io.BytesIO()
        rows = select(q.lake, "datapoints", columns=["id", "metadata", "tags.*"], limit=2)
        assert write(rows, out, fmt) == 2  # type: ignore[arg-type]
        return out.getvalue()

    lines = [json.loads(line) for line in run("ndjson").splitlines()]
    assert lines[0]["metadata"]["uri"] == "s3://b/a.jpg" and lines[0]["tags"][0]["name"]
    assert json.loads(run("json")) == lines
    csv = run("csv").decode().splitlines()
    assert csv[0] == '"id","metadata","tags"' and len(csv) == 3
    table = pq.read_table(io.BytesIO(run("parquet")))
    assert table.num_rows == 2 and table.column_names == ["id", "metadata", "tags"]


def test_an_empty_lake_answers_empty_results(lake: Lake) -> None:
    rows = select(lake, "predictions", columns=["*", "bboxes.*"])
    table = rows.to_arrow()
    assert table.num_rows == 0 and "bboxes" in table.column_names
    assert sql(lake, "SELECT count(*) AS n FROM tags").to_pylist() == [{"n": 0}]
    assert delete(lake, "datapoints", filters=[]).num_rows == 0


@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 5, 100])
def test_range_by_range_reading_matches_one_pass(lake: Lake, ingest: Any, chunk_rows: int) -> None:
    for upload in range(3):  # three uploads: three files per table, three id ranges
        ingest([record(f"u{upload}-{i}", tags={"odd": str(i % 2)}) for i in range(4)])
    every = sorted(r["id"] for r in select(lake, "datapoints", columns=["id"]).to_pylist())
    odd = [{"left": "tags.value", "op": "=", "right": "1"}]
    expected_odd = [
        r["id"]
        for r in select(lake, "datapoints", filters=odd, columns=["id", "tags.value"]).to_pylist()
    ]
    assert len(every) == 12 and len(expected_odd) == 6

    def ids(**kw: Any) -> list[str]:
        rows = select(lake, "datapoints", columns=["id"], chunk_rows=chunk_rows, **kw)
        return [r["id"] for r in rows.to_pylist()]

    assert ids() == every
    assert ids(desc=True) == every[::-1]
    assert ids(filters=odd) == sorted(expected_odd)
    assert ids(filters=odd, desc=True, offset=1, limit=3) == sorted(expected_odd)[::-1][1:4]
    assert ids(offset=5, limit=4) == every[5:9]
    assert ids(filters=[{"left": "id", "op": "=", "right": every[7]}]) == [every[7]]
    assert ids(filters=[{"left": "id", "op": ">", "right": every[9]}]) == every[10:]
