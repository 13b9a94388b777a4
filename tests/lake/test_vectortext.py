"""Embedding vectors cut from a batch's text and parsed apart give the very rows of a full parse."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.json as pj
import pytest

from lake import vectortext
from lake.ndjson import read_batches
from tests.integration.test_fast_path import canonical_rows, ingest_both_ways, native_leftover

DIM = 64  # large enough that vectors are most of the text, as real embeddings are


def vector(rng: random.Random, dim: int = DIM) -> list[float]:
    return [rng.random() for _ in range(dim)]


def record(rng: random.Random, form: str = "layers") -> dict[str, Any]:
    predictions = []
    for model in ("m1", "m2")[: rng.randrange(1, 3)]:
        prediction: dict[str, Any] = {
            "task_type": "CLASSIFICATION",
            "model_name": model,
            "logits": [rng.gauss(0, 2) for _ in range(3)],
        }
        if form == "layers":
            layers = {"pool": vector(rng), "fc": rng.choice([vector(rng, 8), [], None])}
            if rng.random() < 0.5:  # key order differs from record to record
                layers = dict(reversed(list(layers.items())))
            if rng.random() < 0.2:
                del layers["fc"]
            prediction["embeddings"] = rng.choice([layers, layers, None])
        else:
            prediction["embeddings"] = vector(rng, rng.choice([DIM, DIM // 2]))
        predictions.append(prediction)
    return {"type": "IMAGE", "tags": {"split": rng.choice(["a", "b"])}, "predictions": predictions}


def same_rows(lakes: dict[bool, Any], table: str) -> bool:
    """Both lakes hold the same rows. Vectors are matched by datapoint and name: where a
    record lists its layers in another order than the batch's first, the native path gives
    their rows other id slots (a documented difference, lake.columnar)."""
    if table != "feature_vectors":
        return canonical_rows(lakes[True], table) == canonical_rows(lakes[False], table)

    def keyed(lake: Any) -> list[dict[str, Any]]:
        rows = [
            {k: _nan_free(v) if k == "value" else v for k, v in r.items() if k != "id"}
            for r in canonical_rows(lake, table)
        ]
        return sorted(rows, key=lambda r: (r["datapoint"], r["type"], r["model_name"]))

    return keyed(lakes[True]) == keyed(lakes[False])


def _nan_free(value: Any) -> Any:
    """NaN never equals itself; a marker in its place lets stored vectors be compared."""
    if isinstance(value, list):
        return ["NaN" if isinstance(x, float) and x != x else x for x in value]
    return value


def text(records: list[dict[str, Any]], *, compact: bool = False) -> bytes:
    separators = (",", ":") if compact else (", ", ": ")
    return "\n".join(json.dumps(r, separators=separators) for r in records).encode()


def batch_data(data: bytes) -> bytes:
    (batch,) = read_batches(io.BytesIO(data), batch_lines=10**6)
    return batch.data


@pytest.mark.parametrize("compact", [False, True])
def test_the_cut_text_holds_empty_lists_and_the_vectors_parse_exactly(compact: bool) -> None:
    rng = random.Random(1)
    records = [record(rng) for _ in range(50)]
    data = batch_data(text(records, compact=compact))
    cut = vectortext.cut(data)
    assert cut is not None
    assert len(cut.data) < len(data) / 4
    expected = [
        (row, name, values)
        for row, r in enumerate(records)
        for p in r["predictions"]
        if p["embeddings"] is not None
        for name, values in p["embeddings"].items()
        if values is not None  # a null layer has nothing to cut
    ]
    assert cut.layers == [name for _, name, _ in expected]
    assert cut.rows[cut.owners].tolist() == [row for row, _, _ in expected]
    assert cut.vectors.to_pylist() == [values for _, _, values in expected]
    # the text left is what Arrow reads: the same records, every vector emptied
    parsed = pj.read_json(io.BytesIO(cut.data)).to_pylist()
    for got, want in zip(parsed, records, strict=True):
        for p_got, p_want in zip(got["predictions"], want["predictions"], strict=True):
            if p_want["embeddings"] is not None:
                for name, values in p_want["embeddings"].items():
                    assert p_got["embeddings"][name] == ([] if values is not None else None)


@pytest.mark.parametrize(
    "line",
    [
        # the key only ends like one: the quote before it is escaped
        b'{"type": "IMAGE", "metadata": {"a\\"embeddings": [1]}}',
        # a layer name with an escape
        b'{"type": "IMAGE", "predictions": [{"embeddings": {"a\\u0062": [1.0]}}]}',
        # a layer that is neither a list nor null
        b'{"type": "IMAGE", "predictions": [{"embeddings": {"l": 3}}]}',
        # vectors JSON does not allow, or that are not vectors of numbers
        b'{"type": "IMAGE", "predictions": [{"embeddings": {"l": [.5, 1]}}]}',
        b'{"type": "IMAGE", "predictions": [{"embeddings": {"l": [NaN, 1]}}]}',
        b'{"type": "IMAGE", "predictions": [{"embeddings": {"l": ["1", 1]}}]}',
        b'{"type": "IMAGE", "predictions": [{"embeddings": {"l": [[1], 1]}}]}',
        b'{"type": "IMAGE", "predictions": [{"embeddings": {"l": [01, 1]}}]}',
    ],
)
def test_text_this_reading_does_not_foresee_is_left_whole(line: bytes) -> None:
    rng = random.Random(2)
    data = batch_data(text([record(rng) for _ in range(20)]) + b"\n" + line)
    assert vectortext.cut(data) is None


@pytest.mark.parametrize(
    "body",
    [
        b".5",
        b"-.5",
        b"5.",
        b"01",
        b"+5",
        b"1.e5",
        b"1e999",
        b"-2e308",
        b"NaN",
        b"Infinity",
        b"true",
        b'"1"',
        b"{}",
        b"1,",
        b",1",
        b"1 2",
        b"1,[2",
        b"[",
    ],
)
def test_a_vector_that_is_not_json_numbers_fails_the_whole_parse(body: bytes) -> None:
    """One bad body among good ones (in the first group or the last) leaves the batch to the
    usual parse, which reports the record."""
    good = [memoryview(b"1, 2.5")] * (vectortext._GROUP + 3)
    for at in (0, len(good) - 1):
        bodies = list(good)
        bodies[at] = memoryview(body)
        assert vectortext._parse(bodies) is None, at


def test_vectors_parse_to_the_doubles_json_means() -> None:
    """Numbers of every form JSON allows; nulls and integers beyond 64 bits, which simdjson
    does not put in a buffer of doubles, in some groups (read by Polars there)."""
    rng = random.Random(9)
    vectors: list[list[Any]] = [[], [0], [-0.0, 1e-400, 2.5e-308], [9007199254740993, -7, 1e300]]
    vectors += [
        [
            rng.choice([rng.gauss(0, 1e6), rng.randrange(-(10**12), 10**12), rng.random()])
            for _ in range(rng.randrange(0, 40))
        ]
        for _ in range(4 * vectortext._GROUP)
    ]
    vectors[vectortext._GROUP + 1].append(None)
    vectors[3 * vectortext._GROUP].append(-(2**70))
    vectors[3 * vectortext._GROUP + 2].append(2**64)
    bodies = [memoryview(json.dumps(v)[1:-1].encode()) for v in vectors]
    parsed = vectortext._parse(bodies)
    assert parsed is not None
    assert str(parsed.type) == "large_list<item: double>"
    assert parsed.to_pylist() == [
        [None if x is None else float(x) for x in json.loads(json.dumps(v))] for v in vectors
    ]
    empty = vectortext._parse([])
    assert empty is not None and len(empty) == 0


def test_a_key_of_that_name_holding_a_number_is_passed_over(tmp_path: Path) -> None:
    """The value is left in the text; Arrow, meeting a number where the other records have
    layers, refuses the batch, and the record path reports the record."""
    rng = random.Random(7)
    line = b'{"type": "IMAGE", "predictions": [{"task_type": "CLASSIFICATION", "embeddings": 3}]}'
    data = text([record(rng) for _ in range(20)]) + b"\n" + line
    cut = vectortext.cut(batch_data(data))
    assert cut is not None
    assert b'"embeddings": 3}' in cut.data
    assert native_leftover(data) is None
    lakes = ingest_both_ways(tmp_path, data)
    for table in ("datapoints", "tags", "predictions", "feature_vectors"):
        assert same_rows(lakes, table), table


def test_small_vectors_are_not_worth_cutting() -> None:
    rng = random.Random(3)
    records = [record(rng) for _ in range(200)]
    for r in records:
        for p in r["predictions"]:
            p["embeddings"] = [0.5]
    assert vectortext.cut(batch_data(text(records))) is None


@pytest.mark.parametrize("form", ["layers", "bare"])
def test_cut_batches_agree_with_the_general_path(tmp_path: Path, form: str) -> None:
    rng = random.Random(4)
    records = [record(rng, form) for _ in range(300)]
    data = text(records)
    assert vectortext.cut(batch_data(data)) is not None  # the cut is taken
    assert native_leftover(data) == []  # and every record is planned natively
    lakes = ingest_both_ways(tmp_path, data)
    vectors = canonical_rows(lakes[True], "feature_vectors")
    assert len(vectors) > 300
    for table in ("datapoints", "tags", "predictions", "feature_vectors"):
        assert same_rows(lakes, table), table


ODD_LINES = {
    # an "embeddings" key elsewhere in the record: its row goes to the record path
    5: '{"type": "IMAGE", "metadata": {"embeddings": [1, 2]}, "predictions": '
    '[{"task_type": "CLASSIFICATION", "logits": [1, 2], "embeddings": {"pool": [%s]}}]}',
    # the key written with an escape: Arrow reads it, the text search does not find it
    9: '{"type": "IMAGE", "predictions": [{"task_type": "CLASSIFICATION", "logits": [1, 2], '
    '"embe\\u0064dings": {"pool": [%s]}}]}',
    # integers, -0, exponents and no spaces
    17: '{"type":"IMAGE","predictions":[{"task_type":"CLASSIFICATION","logits":[1,2],'
    '"embeddings":{"pool":[-0,3,1e-3,2E2,-1.5e+1,%s]}}]}',
    # a null inside a vector (stored as NaN) and a number beyond float16 (reported): both
    # rows go to the record path
    21: '{"type": "IMAGE", "predictions": [{"task_type": "CLASSIFICATION", "logits": [1, 2], '
    '"embeddings": {"pool": [null, %s]}}]}',
    25: '{"type": "IMAGE", "predictions": [{"task_type": "CLASSIFICATION", "logits": [1, 2], '
    '"embeddings": {"pool": [1e9, %s]}}]}',
    # "embeddings" as a value, and an empty object of layers
    29: '{"type": "IMAGE", "tags": {"kind": "embeddings"}, "predictions": [{"task_type": '
    '"CLASSIFICATION", "logits": [1, 2], "embeddings": {}}], "metadata": {"v": "%s"}}',
    # a tag of that name: not a vector, nothing to cut, the row stays on the native path
    33: '{"type": "IMAGE", "tags": {"embeddings": "yes", "n": 1}, "predictions": [{"task_type": '
    '"CLASSIFICATION", "logits": [1, 2], "embeddings": {"pool": [%s]}}]}',
}


def test_odd_records_among_cut_ones_agree_with_the_general_path(tmp_path: Path) -> None:
    rng = random.Random(5)
    lines = [json.dumps(record(rng)) for _ in range(40)]
    for position, template in ODD_LINES.items():
        lines[position] = template % ", ".join(str(x) for x in vector(rng))
    data = "\n".join(lines).encode()
    cut = vectortext.cut(batch_data(data))
    assert cut is not None
    leftover = native_leftover(data)
    assert leftover is not None
    # rows whose cut does not match their predictions' embeddings take the record path
    assert {6, 10, 22, 26} <= set(leftover)
    assert 18 not in leftover and 34 not in leftover
    lakes = ingest_both_ways(tmp_path, data)
    for table in ("datapoints", "tags", "predictions", "feature_vectors"):
        assert same_rows(lakes, table), table
    stored = {
        tuple(np.round(r["value"][:5], 3)) for r in lakes[True].read("feature_vectors").to_pylist()
    }
    assert (0.0, 3.0, 0.001, 200.0, -15.0) in stored


def test_a_layer_named_twice_leaves_the_batch_to_the_record_path(tmp_path: Path) -> None:
    """Arrow refuses a key written twice in one object, so the batch is read record by
    record, and the record keeps the last value (as Python's JSON reading does)."""
    rng = random.Random(6)
    lines = [json.dumps(record(rng)) for _ in range(10)]
    last = vector(rng)
    lines[3] = json.dumps(
        {
            "type": "IMAGE",
            "predictions": [
                {
                    "task_type": "CLASSIFICATION",
                    "logits": [1, 2],
                    "embeddings": {"pool": "PLACEHOLDER"},
                }
            ],
        }
    ).replace('"PLACEHOLDER"', "[1, 2], " + json.dumps("pool") + ": " + json.dumps(last))
    data = "\n".join(lines).encode()
    assert vectortext.cut(batch_data(data)) is not None
    assert native_leftover(data) is None
    lakes = ingest_both_ways(tmp_path, data)
    for table in ("datapoints", "tags", "predictions", "feature_vectors"):
        assert same_rows(lakes, table), table
    pools = [
        r["value"]
        for r in lakes[True].read("feature_vectors").to_pylist()
        if r["model_name"].endswith(":pool")
    ]
    assert all(len(v) == DIM for v in pools)  # never the first [1, 2]
    assert any(np.allclose(v, last, atol=1e-3) for v in pools)


def odd_record(rng: random.Random, form: str) -> dict[str, Any]:
    """A record with one of the unusual uses of an ``"embeddings"`` key, or none."""
    r = record(rng, form)
    first = r["predictions"][0]
    choice = rng.randrange(7)
    if choice == 0:
        r["metadata"] = {"embeddings": vector(rng, 3)}
    elif choice == 1:
        r["tags"]["embeddings"] = "x"
    elif choice == 2:
        first["embeddings"] = rng.choice([{}, [], {"pool": None, "fc": None}])
    elif choice == 3:
        first["embeddings"] = {"pool": [1e5, 2]}  # beyond float16: reported
    elif choice == 4:
        r["groundtruths"] = [
            {"task_type": "CLASSIFICATION", "class_name": "c", "embeddings": vector(rng, 4)}
        ]
    return r


@pytest.mark.parametrize("seed", range(6))
def test_random_mixtures_store_what_the_record_path_stores(tmp_path: Path, seed: int) -> None:
    rng = random.Random(100 + seed)
    form = rng.choice(["layers", "bare"])
    records = [
        record(rng, form) if rng.random() < 0.8 else odd_record(rng, form) for _ in range(30)
    ]
    data = text(records, compact=rng.random() < 0.5)
    assert vectortext.cut(batch_data(data)) is not None
    lakes = ingest_both_ways(tmp_path, data)
    for table in ("datapoints", "tags", "groundtruths", "predictions", "feature_vectors"):
        assert same_rows(lakes, table), table
