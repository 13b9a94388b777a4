"""The columnar fast path writes exactly what the general path writes for the same records."""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path
from typing import Any

import pytest

from lake import Lake, Uploads
from lake.fastpath import is_simple

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
    assert all(is_simple(r) for r in records)
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
        {
            "type": "IMAGE",
            "predictions": [{"task_type": "CLASSIFICATION", "logits": [1], "embeddings": {}}],
        },
    ],
)
def test_anything_else_takes_the_general_path(record: dict[str, Any]) -> None:
    assert not is_simple(record)
