"""Export of dataset versions: Parquet tables and ingestion NDJSON that re-ingests equal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from lake import Lake, Uploads
from lake.datasets import Datasets
from lake.export import EXPORT_TABLES, export
from lake.query import select

# logits and embeddings as the dioptra client sends them: float16 values, which the lake stores
# exactly (other values are stored rounded to float16, and values derived again from them on
# re-ingestion differ from the first ones in the 5th decimal)
CLASSIFIED = [
    {
        "type": "IMAGE",
        "metadata": {"uri": f"s3://b/{i}.jpg", "width": 640},
        "tags": {"split": ("train", "val")[i % 2], "n": str(i)},
        "groundtruths": [{"task_type": "CLASSIFICATION", "class_name": ("cat", "dog")[i % 2]}],
        "predictions": [
            {
                "task_type": "CLASSIFICATION",
                "model_name": "resnet",
                "class_names": ["cat", "dog", "bird"],
                "logits": [1.5 - i * 0.25, 0.125 * i, -1.0],
                "embeddings": {"avgpool": [0.5, 0.25 * i, 0.75]},
            }
        ],
    }
    for i in range(22)
]

EXTRA = [
    {
        "type": "IMAGE",
        "metadata": {"uri": "s3://b/seg.png", "size": [2, 2]},
        "groundtruths": [
            {
                "task_type": "SEGMENTATION",
                "segmentation_class_mask": [[0, 1], [1, 1]],
                "class_names": ["bg", "fg"],
            },
            {
                "task_type": "OBJECT_DETECTION",
                "bboxes": [{"class_name": "car", "coco_polygon": [0, 0, 4, 0, 4, 3]}],
            },
        ],
        "predictions": [
            {
                "task_type": "LANE_DETECTION",
                "model_name": "lanes",
                "lanes": [
                    {
                        "coco_polyline": [0, 0, 1, 1],
                        "confidence": 0.4,
                        "classifications": [
                            {"name": "kind", "class_names": ["a", "b"], "confidences": [0.3, 0.7]}
                        ],
                    }
                ],
            },
            {
                "task_type": "COMPLETION",
                "model_name": "llm",
                "completions": [{"text": "hello", "confidence": 0.9, "metrics": {"rlhf_score": 1}}],
            },
            {
                "task_type": "INSTANCE_SEGMENTATION",
                "model_name": "seg",
                "bboxes": [
                    {
                        "segmentation_mask": [[0, 1], [1, 1]],
                        "confidences": [0.2, 0.8],
                        "class_names": ["a", "b"],
                        "objectness": 0.5,
                    }
                ],
                "embeddings": {"layer1": [0.5, 0.25], "layer2": [1.0]},
            },
            {
                "task_type": "CLASSIFICATION",
                "model_name": "plain",
                "class_name": "x",
                "confidence": 0.7,
            },
        ],
    },
    {"type": "TEXT", "text": "a sentence", "tags": {"lang": "en"}},
]

_SKIP = {"id", "created_at", "organization_id", "datapoint", "prediction", "groundtruth"}


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (json.loads(v) if k in ("metadata", "metrics", "classifications") and v else v)
        for k, v in row.items()
        if k not in _SKIP
    }


def snapshot(lake: Lake) -> list[Any]:
    """Every datapoint with its rows, ids left out, in a stable order."""
    tables = {t: lake.read(t).to_pylist() for t in EXPORT_TABLES}

    def children(table: str, owner: str, owner_id: str) -> list[Any]:
        rows = [_clean(r) for r in tables[table] if r[owner] == owner_id]
        return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))

    def attachments(table: str, datapoint: str, owner: str) -> list[Any]:
        out = []
        for row in tables[table]:
            if row["datapoint"] != datapoint:
                continue
            item = _clean(row)
            for kind in ("bboxes", "lanes", "completions"):
                item[kind] = children(kind, owner, row["id"])
            if owner == "prediction":
                item["vectors"] = children("feature_vectors", "prediction", row["id"])
            out.append(item)
        return sorted(out, key=lambda r: json.dumps(r, sort_keys=True, default=str))

    result = []
    for dp in tables["datapoints"]:
        item = _clean(dp)
        item["tags"] = sorted(
            (t["name"], t["value"]) for t in tables["tags"] if t["datapoint"] == dp["id"]
        )
        item["groundtruths"] = attachments("groundtruths", dp["id"], "groundtruth")
        item["predictions"] = attachments("predictions", dp["id"], "prediction")
        result.append(item)
    return sorted(result, key=lambda r: json.dumps(r, sort_keys=True, default=str))


@pytest.fixture
def version(lake: Lake, ingest: Any) -> str:
    assert ingest(CLASSIFIED).status == "SUCCEEDED"
    assert ingest(EXTRA).status == "SUCCEEDED"
    datasets = Datasets(lake)
    dataset = datasets.create("everything")
    datasets.add(dataset.id, select(lake, "datapoints", columns=["id"]).to_arrow().column("id"))
    return datasets.commit(dataset.id, "all").id


def test_ndjson_export_reingests_equal(lake: Lake, version: str, tmp_path: Path) -> None:
    path = tmp_path / "export.ndjson"
    seen: list[int] = []
    assert export(Datasets(lake), version, path, format="ndjson", progress=seen.append) == 24
    assert seen[-1] == 24
    other = Lake(str(tmp_path / "other"))
    uploads = Uploads(other)
    upload = uploads.run(uploads.create(path).id)
    assert upload.status == "SUCCEEDED" and upload.failures == 0, upload.summary()
    assert snapshot(other) == snapshot(lake)


def test_parquet_export_holds_the_version_rows(lake: Lake, version: str, tmp_path: Path) -> None:
    datasets = Datasets(lake)
    dataset = datasets.version(version).dataset
    datasets.remove(
        dataset, select(lake, "datapoints", columns=["id"], limit=20).to_arrow().column("id")
    )
    smaller = datasets.commit(dataset, "four").id
    assert export(datasets, smaller, tmp_path / "out", format="parquet") == 4
    kept = set(datasets.members(smaller).to_pylist())
    for table in EXPORT_TABLES:
        rows = pq.read_table(tmp_path / "out" / f"{table}.parquet")
        key = "id" if table == "datapoints" else "datapoint"
        assert set(rows.column(key).to_pylist()) <= kept, table
        assert rows.num_rows == sum(1 for r in lake.read(table).to_pylist() if r[key] in kept)


def test_frozen_export_keeps_the_old_labels(
    lake: Lake, ingest: Any, version: str, tmp_path: Path
) -> None:
    first = select(lake, "datapoints", columns=["id"], limit=1).to_pylist()[0]["id"]
    ingest([{"id": first, "groundtruths": [{"task_type": "CLASSIFICATION", "class_name": "new"}]}])
    datasets = Datasets(lake)
    export(datasets, version, tmp_path / "live.ndjson", format="ndjson")
    export(datasets, version, tmp_path / "frozen.ndjson", format="ndjson", frozen=True)

    def labels(name: str) -> list[str]:
        lines = (tmp_path / name).read_text().splitlines()
        return [
            g.get("class_name")
            for r in map(json.loads, lines[:1])
            for g in r.get("groundtruths", [])
        ]

    assert labels("live.ndjson") == ["new"]
    assert labels("frozen.ndjson") == ["cat"]
