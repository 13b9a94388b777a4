"""Table maintenance: compaction, checkpoints and a vacuum that keeps what frozen reads need."""

from __future__ import annotations

import threading
from typing import Any

from lake import Lake, Uploads
from lake.datasets import Datasets
from lake.maintenance import maintain
from lake.query import select

CLS = "CLASSIFICATION"


def batch(start: int, n: int = 3) -> list[dict[str, Any]]:
    return [
        {
            "type": "IMAGE",
            "metadata": {"i": i},
            "tags": {"n": str(i)},
            "groundtruths": [{"task_type": CLS, "class_name": "cat"}],
        }
        for i in range(start, start + n)
    ]


def files(lake: Lake, table: str) -> int:
    return lake.delta.file_count(table, lake.state().versions[table])


def labels(datasets: Datasets, version: str, *, frozen: bool) -> list[str]:
    rows = datasets.select(version, "groundtruths", frozen=frozen, columns=["class_name"])
    return sorted(r["class_name"] for r in rows.to_pylist())


def test_maintenance_compacts_and_keeps_frozen_reads(lake: Lake, ingest: Any) -> None:
    for start in range(0, 12, 3):  # four uploads: four small files per table
        ingest(batch(start))
    ids = [r["id"] for r in select(lake, "datapoints", columns=["id"]).to_pylist()]
    datasets = Datasets(lake)
    dataset = datasets.create("d")
    datasets.add(dataset.id, ids[:4])
    version = datasets.commit(dataset.id).id
    ingest([{"id": ids[0], "groundtruths": [{"task_type": CLS, "class_name": "dog"}]}])
    assert files(lake, "tags") >= 4 and files(lake, "groundtruths") >= 4
    counts = {t: lake.count(t) for t in ("datapoints", "tags", "groundtruths")}

    reports = {r.table: r for r in maintain(lake, retention_hours=0)}
    assert files(lake, "tags") == 1 and files(lake, "datapoints") == 1
    assert reports["groundtruths"].kept_versions == 1
    assert {t: lake.count(t) for t in counts} == counts
    # the second run may drop the files only the replaced state read; the committed version's
    # files stay: its frozen read still gives the labels of the commit
    reports = {r.table: r for r in maintain(lake, retention_hours=0)}
    assert reports["groundtruths"].vacuumed >= 1  # the relabel's file, compacted since
    assert reports["datapoints"].vacuumed == 0  # the four files the commit reads
    assert labels(datasets, version, frozen=False) == ["cat", "cat", "cat", "dog"]
    assert labels(datasets, version, frozen=True) == ["cat", "cat", "cat", "cat"]
    assert {t: lake.count(t) for t in counts} == counts

    datasets.delete(dataset.id)  # nothing pins the old files any more
    maintain(lake, retention_hours=0)
    reports = {r.table: r for r in maintain(lake, retention_hours=0)}
    assert reports["datapoints"].kept_versions == 0
    assert sum(r.vacuumed for r in reports.values()) > 0
    assert {t: lake.count(t) for t in counts} == counts
    data_files = [k for k in lake.store.list("datapoints/") if "_delta_log" not in k]
    assert len(data_files) == 1  # the old data files are gone


def test_ingestion_during_maintenance_loses_nothing(lake: Lake, ingest: Any) -> None:
    for start in range(0, 30, 3):
        ingest(batch(start))
    errors: list[BaseException] = []

    def ingest_more() -> None:
        try:
            uploads = Uploads(lake)
            for start in range(100, 130, 3):
                data = "\n".join(__import__("json").dumps(r) for r in batch(start)).encode()
                assert uploads.run(uploads.create(data).id).status == "SUCCEEDED"
        except BaseException as exc:  # reported below
            errors.append(exc)

    writer = threading.Thread(target=ingest_more)
    writer.start()
    maintain(lake, retention_hours=0)
    maintain(lake, retention_hours=0)
    writer.join()
    assert errors == []
    assert lake.count("datapoints") == 60 and lake.count("tags") == 60
    values = sorted(int(r["value"]) for r in lake.read("tags").to_pylist())
    assert values == [*range(30), *range(100, 130)]
