"""The native batch path writes exactly what the per-record path writes for the same records."""

from __future__ import annotations

import io
import json
import random
import uuid
from pathlib import Path
from typing import Any

import pytest

from lake import Lake, Uploads
from lake.batch import IdSource
from lake.ids import salt_of
from lake.ndjson import read_batches

ID_COLUMNS = ("id", "datapoint", "prediction", "groundtruth")


def line_and_slot(value: str) -> tuple[int, int]:
    low = uuid.UUID(value).int & ((1 << 62) - 1) | ((uuid.UUID(value).int >> 64) & 0xFFF) << 62
    return low >> 38, (low >> 26) & 0xFFF


def simple_record(rng: random.Random) -> dict[str, Any]:
    record: dict[str, Any] = {"type": rng.choice(["IMAGE", "VIDEO", "AUDIO", "TEXT"])}
    if rng.random() < 0.8:
        record["metadata"] = {
            "uri": f"s3://b/{rng.randrange(10**6)}.jpg",
            "width": rng.choice([640, 1.5, None]),
            "nested": {"a": [1, 2]},
        }
    if rng.random() < 0.9:
        record["tags"] = {
            name: rng.choice(["x", 3, 2.5, True, False, None])
            for name in rng.sample(["split", "source", "camera", "night"], 3)
        }
    if rng.random() < 0.8:
        record["groundtruths"] = [{"task_type": "CLASSIFICATION", "class_name": rng.choice("abc")}]
    predictions = []
    for model in rng.sample(["m1", "m2", ""], rng.randrange(3)):
        classes = rng.choice([1, 2, 5])
        prediction: dict[str, Any] = {
            "task_type": "CLASSIFICATION",
            "model_name": model,
            "logits": [rng.choice([rng.gauss(0, 3), 800.0]) for _ in range(classes)],
        }
        if model == "":
            del prediction["model_name"]
        if rng.random() < 0.7:
            prediction["class_names"] = [f"c{i}" for i in range(max(classes, 2))]
        if rng.random() < 0.5:
            prediction["embeddings"] = (
                {"l1": [rng.random() for _ in range(4)], "l2": [rng.random()]}
                if rng.random() < 0.5
                else [rng.random() for _ in range(6)]
            )
        predictions.append(prediction)
    if predictions or rng.random() < 0.5:
        record["predictions"] = predictions
    return record


def canonical_rows(lake: Lake, table: str) -> list[dict[str, Any]]:
    rows = []
    for row in lake.read(table).to_pylist():
        row = dict(row)
        for column in ID_COLUMNS:
            if row.get(column):
                row[column] = line_and_slot(row[column])
        row.pop("created_at", None)
        rows.append(row)
    return sorted(rows, key=lambda r: r["id"])


def test_fast_and_general_paths_agree(tmp_path: Path) -> None:
    rng = random.Random(20261122)
    records = [simple_record(rng) for _ in range(400)]
    data = "\n".join(json.dumps(r) for r in records).encode()
    lakes = {}
    for fast in (True, False):
        lake = Lake(str(tmp_path / f"fast-{fast}"))
        uploads = Uploads(lake, fast_path=fast, batch_size=150)
        upload = uploads.run(uploads.create(data).id)
        assert upload.failures == 0, upload.errors
        lakes[fast] = (lake, upload)
    assert lakes[True][1].summary()["datapoints_created"] == 400
    assert {k: v for k, v in lakes[True][1].summary().items() if k != "id"} == {
        k: v for k, v in lakes[False][1].summary().items() if k != "id"
    }
    for table in ("datapoints", "tags", "groundtruths", "predictions", "feature_vectors"):
        fast_rows = canonical_rows(lakes[True][0], table)
        general_rows = canonical_rows(lakes[False][0], table)
        assert fast_rows, table
        assert fast_rows == general_rows, table


@pytest.mark.parametrize(
    "record",
    [
        {"id": "6f1c2a7e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"},
        {"type": "IMAGE", "text": "x"},
        {"type": "image"},
        {"type": "IMAGE", "tags": {"a": [1]}},
        {
            "type": "IMAGE",
            "groundtruths": [
                {"task_type": "CLASSIFICATION", "class_name": "a"},
                {"task_type": "CLASSIFICATION", "class_name": "b"},
            ],
        },
        {"type": "IMAGE", "predictions": [{"task_type": "CLASSIFICATION", "logits": [1, None]}]},
        {"type": "IMAGE", "predictions": [{"task_type": "CLASSIFICATION", "logits": [True]}]},
        {
            "type": "IMAGE",
            "predictions": [
                {"task_type": "CLASSIFICATION", "logits": [1]},
                {"task_type": "CLASSIFICATION", "logits": [2]},
            ],
        },
        {"type": "IMAGE", "predictions": [{"task_type": "CLASSIFICATION", "logits": [[1, 2]]}]},
        {"type": "IMAGE", "predictions": [{"task_type": "OBJECT_DETECTION", "logits": [1]}]},
        # beyond float16: the record path reports it (never a silent infinity)
        {"type": "IMAGE", "predictions": [{"task_type": "CLASSIFICATION", "logits": [1e6, 0]}]},
        {
            "type": "IMAGE",
            "predictions": [
                {"task_type": "CLASSIFICATION", "logits": [1, 0], "embeddings": [7e4, 1]}
            ],
        },
    ],
)
def test_anything_else_takes_the_record_path(record: dict[str, Any]) -> None:
    rng = random.Random(5)
    lines = [json.dumps(plain_record(rng, "layers")) for _ in range(100)]
    leftover = native_leftover("\n".join([*lines, json.dumps(record)]).encode())
    assert leftover is None or leftover == [101]  # the batch, or just the record, leaves


def plain_record(rng: random.Random, embeddings: str) -> dict[str, Any]:
    """A record the native path takes, keys always in the same relative order."""
    metadata = {
        "uri": rng.choice(['s3://b/"quoted".jpg', "s3://b/back\\slash", "s3://b/é✓.jpg"]),
        "width": rng.choice([640, 1024, None]),
        "ratio": rng.choice([0.75, 1.3333333333333333, 0.00012, None]),
        "ok": rng.choice([True, False]),
    }
    record: dict[str, Any] = {"type": "IMAGE", "metadata": metadata}
    record["tags"] = {
        "split": rng.choice(["train", "val", None]),
        "shard": rng.choice([1, 22, None]),
        "night": rng.choice([True, False, None]),
        "score": rng.choice([0.5, 12.25, None]),
    }
    if rng.random() < 0.7:
        record["groundtruths"] = [{"task_type": "CLASSIFICATION", "class_name": rng.choice("ab")}]
    predictions = []
    for model in ("m1", "m2")[: rng.randrange(3)]:
        classes = rng.choice([1, 3, 4])
        prediction: dict[str, Any] = {
            "task_type": "CLASSIFICATION",
            "model_name": model,
            "class_names": [f"c{i}" for i in range(rng.choice([0, 2, 4]))],
            "logits": [rng.choice([rng.gauss(0, 2), 900.0, 30.0]) for _ in range(classes)],
        }
        if embeddings == "layers":
            prediction["embeddings"] = {
                "l1": [rng.random() for _ in range(3)],
                "l2": rng.choice([[rng.random()], [], None]),
            }
        elif embeddings == "bare":
            prediction["embeddings"] = [rng.random() for _ in range(rng.randrange(1, 5))]
        predictions.append(prediction)
    record["predictions"] = predictions
    return record


def native_leftover(data: bytes) -> list[int] | None:
    """Line numbers the native path leaves to the record path (None: it takes none)."""
    import io
    from datetime import UTC, datetime

    from lake.batch import IdSource
    from lake.columnar import plan_batch
    from lake.ndjson import read_batches

    (batch,) = read_batches(io.BytesIO(data), batch_lines=10**6)
    planned = plan_batch(
        batch, organization_id="o", id_source=IdSource(1, 2), now=datetime.now(UTC)
    )
    return None if planned is None else [int(batch.numbers[i]) for i in planned[1]]


def ingest_both_ways(tmp_path: Path, data: bytes) -> dict[bool, Lake]:
    lakes = {}
    summaries = []
    for fast in (True, False):
        lake = Lake(str(tmp_path / f"fast-{fast}"))
        uploads = Uploads(lake, fast_path=fast, batch_size=1000)
        upload = uploads.run(uploads.create(data).id)
        lakes[fast] = lake
        assert upload.status == "SUCCEEDED"
        summaries.append({k: v for k, v in upload.summary(max_errors=100).items() if k != "id"})
    assert summaries[0] == summaries[1]
    return lakes


@pytest.mark.parametrize("embeddings", ["layers", "bare", "none"])
def test_native_batches_agree_with_the_general_path(tmp_path: Path, embeddings: str) -> None:
    rng = random.Random(7)
    data = "\n".join(json.dumps(plain_record(rng, embeddings)) for _ in range(300)).encode()
    assert native_leftover(data) == []  # every record takes the native path
    lakes = ingest_both_ways(tmp_path, data)
    for table in ("datapoints", "tags", "groundtruths", "predictions", "feature_vectors"):
        assert canonical_rows(lakes[True], table) == canonical_rows(lakes[False], table), table


def test_objects_holding_every_key_or_none_agree_with_the_general_path(tmp_path: Path) -> None:
    """The native path writes complete objects in one pass; absent ones stay null."""
    rng = random.Random(11)
    records = []
    for i in range(300):
        record = plain_record(rng, "none")
        record["metadata"] = {"uri": f's3://b/"{i}"\\x.jpg', "width": 640 + i, "ok": i % 2 == 0}
        if i % 7 == 0:
            del record["metadata"]
        record["tags"] = {"split": rng.choice(["train", "val"]), "shard": i}
        records.append(record)
    data = "\n".join(json.dumps(r) for r in records).encode()
    assert native_leftover(data) == []
    lakes = ingest_both_ways(tmp_path, data)
    for table in ("datapoints", "tags", "groundtruths", "predictions", "feature_vectors"):
        assert canonical_rows(lakes[True], table) == canonical_rows(lakes[False], table), table
    metadata = [r["metadata"] for r in lakes[True].read("datapoints").to_pylist()]
    assert metadata.count(None) == len(range(0, 300, 7))


def test_mixed_batches_send_the_rest_to_the_record_path(tmp_path: Path) -> None:
    rng = random.Random(3)
    lines = [json.dumps(plain_record(rng, "layers")) for _ in range(200)]
    odd = {
        11: {"type": "IMAGE", "timestamp": "2020-01-01"},  # a key the fast path does not take
        21: {"type": "IMAGE", "tags": {"split": "x", "score": 3.0}},  # an integral float
        31: {
            "type": "VIDEO",
            "groundtruths": [
                {"task_type": "CLASSIFICATION", "class_name": "a"},
                {"task_type": "CLASSIFICATION", "class_name": "b"},
            ],
        },
        41: {"type": "PICTURE"},
        51: {"type": "IMAGE", "metadata": {"uri": "a\nb", "width": 3}},  # a control character
        61: {
            "type": "IMAGE",
            "predictions": [
                {"task_type": "CLASSIFICATION", "model_name": "m1", "logits": [1.0]},
                {"task_type": "CLASSIFICATION", "model_name": "m1", "logits": [2.0]},
            ],
        },
        71: {"id": "6f1c2a7e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"},
    }
    for number, record in odd.items():
        lines[number - 1] = json.dumps(record)
    # plain after all: an empty embeddings object adds no vector on either path
    lines[90] = json.dumps(
        {
            "type": "IMAGE",
            "predictions": [{"task_type": "CLASSIFICATION", "logits": [1], "embeddings": {}}],
        }
    )
    data = "\n\r\n".join(lines).encode()  # blank lines between records
    numbers = [2 * n - 1 for n in odd]
    assert native_leftover(data) == numbers
    lakes = ingest_both_ways(tmp_path, data)
    for table in ("datapoints", "tags", "groundtruths", "predictions", "feature_vectors"):
        assert canonical_rows(lakes[True], table) == canonical_rows(lakes[False], table), table
    tags = {row["value"] for row in lakes[True].read("tags").to_pylist()}
    assert "3.0" in tags
    metadata = {row["metadata"] for row in lakes[True].read("datapoints").to_pylist()}
    assert '{"uri":"a\\nb","width":3}' in metadata


def test_batches_parsed_together_commit_in_line_order(tmp_path: Path) -> None:
    """Several parse workers: the same rows, counts, errors and progress as one."""
    rng = random.Random(9)
    lines = [json.dumps(plain_record(rng, "layers")) for _ in range(300)]
    for bad in (4, 70, 71, 299):
        lines[bad] = '{"type": "IMAGE", "metadata": '  # malformed: a per-record error
    data = "\n".join(lines).encode()
    results = {}
    for workers in (1, 3):
        lake = Lake(str(tmp_path / f"workers-{workers}"))
        uploads = Uploads(lake, batch_size=70, parse_workers=workers)
        seen: list[int] = []
        upload = uploads.run(uploads.create(data).id, progress=seen.append)
        assert upload.status == "SUCCEEDED"
        summary = {k: v for k, v in upload.summary(max_errors=10).items() if k != "id"}
        tables = {t: canonical_rows(lake, t) for t in ("datapoints", "tags", "feature_vectors")}
        results[workers] = (summary, tables, len(seen))
    assert results[1] == results[3]
    summary = results[3][0]
    assert [e["line"] for e in summary["errors"]] == [5, 71, 72, 300]
    assert results[3][2] == 5  # one progress report per committed batch of 70 lines


# -- plain updates: new groundtruths and predictions for datapoints already in the lake -------
BOX = {"top": 1, "left": 2, "height": 3, "width": 4, "class_name": "x"}


def seed_record(rng: random.Random, i: int) -> dict[str, Any]:
    """What a datapoint holds before the update: attachments of the slots an update replaces
    (with children and vectors) and of slots it leaves alone."""
    record: dict[str, Any] = {"type": "IMAGE", "metadata": {"i": i}, "tags": {"n": str(i)}}
    record["groundtruths"] = [
        {"task_type": "CLASSIFICATION", "class_name": "old", "bboxes": [BOX]},
        {"task_type": "SEGMENTATION", "segmentation_class_mask": [[0, 1], [1, 0]]},
    ][: rng.randrange(3)]
    record["predictions"] = [
        {
            "task_type": "CLASSIFICATION",
            "model_name": "m1",
            "logits": [0.5, 0.1],
            "embeddings": {"l1": [0.1, 0.2]},
            "bboxes": [BOX, BOX],
        },
        {"task_type": "CLASSIFICATION", "logits": [1.0, 2.0, 3.0]},  # the model-less slot
        {"task_type": "OBJECT_DETECTION", "model_name": "m1", "bboxes": [BOX]},
        {"task_type": "CLASSIFICATION", "model_name": "m3", "logits": [3.0]},
    ][: rng.randrange(5)]
    return record


def update_record(rng: random.Random, datapoint: str) -> dict[str, Any]:
    record: dict[str, Any] = {"id": datapoint}
    if rng.random() < 0.6:
        record["groundtruths"] = [
            {"task_type": "CLASSIFICATION", "class_name": rng.choice(["new", "newer"])}
        ]
    predictions = []
    for model in rng.sample(["m1", "m2", ""], rng.randrange(3)):
        prediction: dict[str, Any] = {
            "task_type": "CLASSIFICATION",
            "logits": [rng.gauss(0, 2) for _ in range(rng.choice([1, 2, 4]))],
        }
        if model:
            prediction["model_name"] = model
        if rng.random() < 0.5:
            prediction["class_names"] = ["a", "b", "c", "d"]
        if rng.random() < 0.5:
            prediction["embeddings"] = {"l1": [rng.random()], "l2": [rng.random(), 0.5]}
        predictions.append(prediction)
    if predictions or rng.random() < 0.5:
        record["predictions"] = predictions
    return record


def seeded_lakes(tmp_path: Path, count: int) -> dict[bool, tuple[Lake, list[str]]]:
    """Two lakes holding the same datapoints (by line); and their ids, in line order."""
    rng = random.Random(17)
    data = "\n".join(json.dumps(seed_record(rng, i)) for i in range(count)).encode()
    lakes = {}
    for fast in (True, False):
        lake = Lake(str(tmp_path / f"updates-{fast}"))
        uploads = Uploads(lake, batch_size=1000)
        upload = uploads.run(uploads.create(data).id)
        assert upload.failures == 0, upload.errors
        datapoints = sorted(lake.read("datapoints").column("id").to_pylist(), key=line_and_slot)
        lakes[fast] = (lake, datapoints)
    return lakes


def update_both_ways(
    lakes: dict[bool, tuple[Lake, list[str]]], lines: list[dict[str, Any]]
) -> tuple[dict[str, Any], list[int] | None]:
    """Run the same update upload on both lakes, the native path on one; ``lines`` holds
    records whose int ``id`` stands for the id of that seeded datapoint (by position), or a
    string id as it is. Return the summary, and the lines the native path left out."""
    summaries = {}
    leftover = None
    for fast, (lake, datapoints) in lakes.items():
        records = [
            {**line, "id": datapoints[line["id"]]} if isinstance(line["id"], int) else line
            for line in lines
        ]
        data = "\n".join(json.dumps(record) for record in records).encode()
        if fast:
            leftover = native_leftover(data)
        uploads = Uploads(lake, fast_path=fast, batch_size=1000)
        upload = uploads.run(uploads.create(data).id)
        assert upload.status == "SUCCEEDED"
        summaries[fast] = {k: v for k, v in upload.summary(max_errors=100).items() if k != "id"}
    assert summaries[True] == summaries[False]
    return summaries[True], leftover


ALL_TABLES = (
    "datapoints",
    "tags",
    "groundtruths",
    "predictions",
    "bboxes",
    "feature_vectors",
)


def rows_by_upload(lake: Lake, table: str) -> list[dict[str, Any]]:
    """Rows with ids as (which upload, line, slot): the same in two lakes given the same
    uploads."""
    order = sorted(lake.read("uploads").to_pylist(), key=lambda u: u["created_at"])
    salts = {salt_of(u["id"]): k for k, u in enumerate(order)}
    rows = []
    for row in lake.read(table).to_pylist():
        for column in ID_COLUMNS:
            if row.get(column):
                value = uuid.UUID(row[column]).int
                low = value & ((1 << 62) - 1) | ((value >> 64) & 0xFFF) << 62
                row[column] = (salts[low & ((1 << 26) - 1)], *line_and_slot(row[column]))
        row.pop("created_at", None)
        rows.append(row)
    return sorted(rows, key=lambda r: r["id"])


def assert_same_rows(lakes: dict[bool, tuple[Lake, list[str]]]) -> None:
    for table in ALL_TABLES:
        fast_rows = rows_by_upload(lakes[True][0], table)
        assert fast_rows == rows_by_upload(lakes[False][0], table), table


def test_plain_updates_replace_what_the_record_path_replaces(tmp_path: Path) -> None:
    lakes = seeded_lakes(tmp_path, 200)
    rng = random.Random(23)
    updates = [update_record(rng, "") for _ in range(150)]
    for position, record in enumerate(updates):
        record["id"] = position  # stands for the id of seeded datapoint ``position``
    before = {table: lakes[True][0].read(table).num_rows for table in ("predictions", "bboxes")}
    summary, leftover = update_both_ways(lakes, updates)
    assert leftover == []  # all of them native
    assert summary["datapoints_updated"] == 150
    assert summary["datapoints_created"] == 0
    assert summary["failures"] == 0
    assert_same_rows(lakes)
    lake, datapoints = lakes[True]
    # one prediction per (datapoint, task, model): the replaced ones went with their children
    predictions = lake.read("predictions").to_pylist()
    slots = [(p["datapoint"], p["task_type"], p["model_name"]) for p in predictions]
    assert len(slots) == len(set(slots))
    assert predictions and before["predictions"] != len(predictions)
    parents = {p["id"] for p in predictions} | {
        g["id"] for g in lake.read("groundtruths").to_pylist()
    }
    boxes = lake.read("bboxes").to_pylist()
    assert len(boxes) < before["bboxes"]
    assert all((b["prediction"] or b["groundtruth"]) in parents for b in boxes)
    vectors = lake.read("feature_vectors").to_pylist()
    assert all(v["prediction"] in parents for v in vectors)
    # the datapoints beyond the updated ones kept everything
    untouched = set(datapoints[150:])
    assert any(b["datapoint"] in untouched for b in boxes)


def test_plain_updates_take_the_native_path(tmp_path: Path) -> None:
    rng = random.Random(29)
    records = [update_record(rng, str(uuid.UUID(int=rng.getrandbits(128)))) for _ in range(100)]
    data = "\n".join(json.dumps(r) for r in records).encode()
    assert native_leftover(data) == []
    # a datapoint named twice goes the per-record way (both records, in line order)
    twice = [*records, {**records[10], "groundtruths": []}]
    data = "\n".join(json.dumps(r) for r in twice).encode()
    assert native_leftover(data) == [11, 101]
    # an id not in canonical text, or a key an update may not hold: none of them is native
    for odd in (
        {"id": records[3]["id"].upper()},
        {"id": records[3]["id"], "tags": None},
        {"id": records[3]["id"], "metadata": None},
    ):
        data = "\n".join(json.dumps(r) for r in [*records[:5], odd]).encode()
        assert native_leftover(data) in (None, [1, 2, 3, 4, 5, 6])


def test_updates_of_unknown_datapoints_fail_alone(tmp_path: Path) -> None:
    lakes = seeded_lakes(tmp_path, 80)
    rng = random.Random(31)
    lines: list[Any] = []
    for position in range(80):
        record = update_record(rng, "")
        record["id"] = position
        lines.append(record)
    unknown = [str(uuid.UUID(int=7 + line)) for line in (5, 40, 77)]
    for line, datapoint in zip((5, 40, 77), unknown, strict=True):
        lines[line - 1] = {**lines[line - 1], "id": datapoint}
    summary, leftover = update_both_ways(lakes, lines)
    assert leftover == []
    assert summary["failures"] == 3
    assert [(e["line"], e["field"]) for e in summary["errors"]] == [
        (5, "id"),
        (40, "id"),
        (77, "id"),
    ]
    assert f"Datapoint {unknown[0]} not found" in summary["errors"][0]["reason"]
    assert summary["datapoints_updated"] == 77
    assert_same_rows(lakes)


def test_updates_mixed_with_record_path_updates_apply_in_line_order(tmp_path: Path) -> None:
    """A record updating a prediction by its id, or a datapoint named twice, beside plain
    updates: the same rows as the per-record path (which applies the batch in line order)."""
    lakes = seeded_lakes(tmp_path, 60)
    rng = random.Random(37)
    lines: list[Any] = []
    for position in range(60):
        record = update_record(rng, "")
        record["id"] = position
        lines.append(record)
    lines.append({"id": 3, "predictions": [{"task_type": "CLASSIFICATION", "logits": [9, 1]}]})
    summary, leftover = update_both_ways(lakes, lines)
    assert leftover == [4, 61]  # the datapoint named twice
    assert summary["failures"] == 0
    assert_same_rows(lakes)
    # now by attachment id: the m3 prediction of a datapoint that holds one
    lake, datapoints = lakes[True]
    by_line = {}
    for fast, (lake, datapoints) in lakes.items():
        m3 = {
            p["datapoint"]: p["id"]
            for p in lake.read("predictions").to_pylist()
            if p["model_name"] == "m3"
        }
        by_line[fast] = [m3.get(d) for d in datapoints]
    position = next(i for i in range(20, 60) if by_line[True][i] is not None)
    for fast, (lake, datapoints) in lakes.items():
        records = [update_record(random.Random(41 + i), datapoints[i]) for i in range(20)]
        records.append(
            {
                "id": datapoints[position],
                "predictions": [{"id": by_line[fast][position], "metrics": {"m": 1}}],
            }
        )
        data = "\n".join(json.dumps(r) for r in records).encode()
        uploads = Uploads(lake, fast_path=fast, batch_size=1000)
        if fast:  # Arrow plans some, then hands them to the record path with the 21st
            leftover = native_leftover(data)
            assert leftover is not None and 21 in leftover and len(leftover) < 21
            (raw,) = read_batches(io.BytesIO(data), batch_lines=1000)
            prepared = uploads._prepare(raw, "default", IdSource(1, 2))
            assert prepared.fast.update is None
            assert [spec.line for spec in prepared.specs] == list(range(1, 22))
        upload = uploads.run(uploads.create(data).id)
        assert upload.failures == 0, upload.errors
        m3 = [p for p in lake.read("predictions").to_pylist() if p["model_name"] == "m3"]
        assert {'"m":1'} <= {p["metrics"][-6:-1] for p in m3}
    assert_same_rows(lakes)
