"""Table maintenance: compaction, checkpoints and a vacuum that keeps what frozen reads need."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from conftest import data_files, ndjson

from lake import Lake, Uploads
from lake.datasets import Datasets
from lake.groups import make_pending
from lake.maintenance import _mergeable, _runs, maintain, merge_small_files, tidy
from lake.query import select
from lake.tables import SCHEMAS
from lake.uploads import LANDING_PREFIX, LandingReport, prune_landing

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
    assert len(data_files(lake, "datapoints")) == 1  # the old data files are gone


def test_maintenance_deletes_data_files_no_commit_took_once_older_than_retention(
    lake: Lake, ingest: Any
) -> None:
    # a writer that dies between writing a data file and committing it leaves the file in the
    # table's folder, in no version: no reader sees it, and maintenance reclaims it
    ingest(batch(0))
    ingest(batch(3))
    (written, *_) = data_files(lake, "tags")
    data = lake.store.get(written)
    assert data is not None
    orphan = "tags/part-00000-00000000-0000-4000-8000-000000000000-c000.zstd.parquet"
    lake.store.put(orphan, data)
    values = sorted(r["value"] for r in lake.read("tags").to_pylist())
    assert len(values) == 6  # (the orphan's rows are not read)

    maintain(lake, retention_hours=1)  # younger than that: it may be a commit on its way
    assert orphan in lake.store.list("tags/")
    maintain(lake, retention_hours=0)
    assert orphan not in lake.store.list("tags/")
    assert sorted(r["value"] for r in lake.read("tags").to_pylist()) == values
    (left,) = data_files(lake, "tags")
    assert left != orphan


def test_a_file_removed_within_the_retention_stays_however_old_it_is(
    local_lake: Lake, local_ingest: Any
) -> None:
    # readers of a lake state older than the previous one need the files it read for
    # retention_hours after their removal, whenever the files were written (a vacuum that
    # lists the folder must judge them by their removal, not by their age: local folder only,
    # where a file's age can be set)
    lake = local_lake
    local_ingest(batch(0))
    local_ingest(batch(3))
    old_state = lake.state()
    first = data_files(lake, "tags")
    assert len(first) == 2
    long_ago = time.time() - 10 * 3600
    for key in first:
        os.utime(Path(lake.location.path, key), (long_ago, long_ago))
    maintain(lake, retention_hours=1)  # compacts them away: removed now
    local_ingest(batch(6))
    maintain(lake, retention_hours=1)  # the state that read them is two states back now
    assert set(first) <= set(data_files(lake, "tags"))
    values = sorted(r["value"] for r in lake.read("tags", state=old_state).to_pylist())
    assert values == [str(i) for i in range(6)]


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


def rows_by_id(lake: Lake, table: str, state: Any = None) -> list[dict[str, Any]]:
    return sorted(lake.read(table, state=state).to_pylist(), key=lambda r: r["id"])


def test_small_files_are_merged_in_runs_of_bounded_rows(lake: Lake, ingest: Any) -> None:
    for start in range(0, 36, 3):  # twelve uploads: twelve files of three rows per table
        ingest(batch(start))
    before = lake.state()
    tables = ("datapoints", "tags", "groundtruths", "uploads")
    rows = {t: rows_by_id(lake, t) for t in tables}
    assert files(lake, "datapoints") == 12 and files(lake, "tags") == 12

    # too few small files: nothing is looked at closely, nothing is written
    assert merge_small_files(lake, look_every=1, at_least=13, rows=10) == {}
    assert lake.state().seq == before.seq

    # (that look counts: look_every=0 looks again at once)
    merged = merge_small_files(lake, look_every=0, at_least=4, rows=10, budget=1000)
    # files of fewer than 5 rows are small; runs of up to 10 rows: three files each
    assert merged["datapoints"] == 12 and merged["tags"] == 12
    assert files(lake, "datapoints") == 4 and files(lake, "tags") == 4
    assert lake.state().seq == before.seq + len(merged)  # one transaction per table
    for table in tables:
        assert rows_by_id(lake, table) == rows[table], table
        # a reader still at the state before reads the same rows from the files it knew
        assert rows_by_id(lake, table, before) == rows[table], table

    # looked at a moment ago: no new look until the process commits to the table again
    assert merge_small_files(lake, at_least=1, rows=10) == {}
    ingest(batch(100))
    assert lake.delta.commits_since_look["datapoints"] == 1


def test_an_update_after_a_merge_finds_its_rows(lake: Lake, ingest: Any) -> None:
    for start in range(0, 24, 3):
        ingest(batch(start))
    merge_small_files(lake, look_every=0, at_least=2, rows=100, budget=1000)
    assert files(lake, "groundtruths") == 1
    target = rows_by_id(lake, "datapoints")[5]["id"]
    ingest([{"id": target, "groundtruths": [{"task_type": CLS, "class_name": "dog"}]}])
    labels = {r["datapoint"]: r["class_name"] for r in lake.read("groundtruths").to_pylist()}
    assert len(labels) == 24 and labels[target] == "dog"
    assert sorted(labels.values()).count("cat") == 23


def paths(lake: Lake, table: str) -> set[str]:
    return set(lake.delta.open(table, lake.state().versions[table]).file_uris())


def test_a_merge_leaves_large_files_alone(lake: Lake, ingest: Any) -> None:
    ingest(batch(0, 20))  # one large file (a merge of runs of up to 10 rows: large is >= 5)
    for start in range(100, 118, 3):  # six small files
        ingest(batch(start))
    first, *_, last = rows_by_id(lake, "datapoints")[:20]
    # two rows far apart in one small file (as a rewrite of scattered rows may leave): its id
    # range spans the large file's
    spanning = [{**first, "id": first["id"] + "+"}, {**last, "id": last["id"][:-1]}]
    with lake.transaction() as txn:
        txn.append("datapoints", pa.Table.from_pylist(spanning, SCHEMAS["datapoints"]))
    before = paths(lake, "datapoints")
    rows = rows_by_id(lake, "datapoints")
    assert len(before) == 8
    merged = merge_small_files(lake, look_every=0, at_least=4, rows=10, budget=1000)
    assert merged["datapoints"] == 6
    after = paths(lake, "datapoints")
    assert len(after) == 4 and len(before & after) == 2  # the large and the spanning one
    assert rows_by_id(lake, "datapoints") == rows


def _files(*spans: tuple[str, str, int]) -> pa.Table:
    low, high, rows = zip(*spans, strict=True)
    return pa.table({"low": list(low), "high": list(high), "rows": list(rows)})


@pytest.mark.parametrize(
    ("spans", "rows", "budget", "expected"),
    [
        # runs close before they would pass ``rows``
        (
            [("a", "b", 4), ("c", "d", 4), ("e", "f", 4), ("g", "h", 4)],
            8,
            100,
            [("a", "d", 2, 8), ("e", "h", 2, 8)],
        ),
        # a run of one file is left alone
        ([("a", "b", 4), ("c", "d", 7), ("e", "f", 1)], 8, 100, [("c", "f", 2, 8)]),
        # files whose id ranges overlap go together whatever their rows
        ([("a", "m", 6), ("c", "d", 6), ("n", "p", 1)], 8, 100, [("a", "m", 2, 12)]),
        # the budget stops the runs
        ([("a", "b", 4), ("c", "d", 4), ("e", "f", 4), ("g", "h", 4)], 8, 8, [("a", "d", 2, 8)]),
    ],
)
def test_runs(
    spans: list[tuple[str, str, int]],
    rows: int,
    budget: int,
    expected: list[tuple[str, str, int, int]],
) -> None:
    assert _runs(_files(*spans), rows=rows, budget=budget) == expected


def test_mergeable_files_meet_no_large_file() -> None:
    files = _files(
        ("a", "b", 5),  # small, alone: kept
        ("a", "z", 2),  # small but spans the large file: left
        ("c", "f", 100),  # large
        ("d", "e", 5),  # inside the large file's range: left
        ("g", "h", 5),  # kept
    )
    kept = _mergeable(files, 10)
    assert kept.column("low").to_pylist() == ["a", "g"]
    assert kept.column("high").to_pylist() == ["b", "h"]
    unknown = pa.table({"rows": [5, 5], "low": ["a", None], "high": ["b", None]})
    assert _mergeable(unknown, 10).num_rows == 0  # a range unknown: nothing is merged


def test_a_failing_merge_does_not_fail_the_upload(
    local_lake: Lake, local_ingest: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("merge bug")

    monkeypatch.setattr("lake.maintenance.merge_small_files", broken)
    upload = local_ingest(batch(0))
    assert upload.status == "SUCCEEDED" and local_lake.count("datapoints") == 3


def test_a_busy_writer_leaves_merges_for_a_lull_up_to_a_cap(
    local_lake: Lake, local_ingest: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("lake.uploads.tidy", lambda lake, **kwargs: None)  # merged here only
    for name, value in {
        "MERGE_AT": 4,
        "MERGE_BUSY_AT": 10,
        "LOOK_EVERY": 1,
        "BUSY_LOOK_EVERY": 1,
    }.items():
        monkeypatch.setattr(f"lake.maintenance.{name}", value)
    for start in range(0, 18, 3):
        local_ingest(batch(start))
    tidy(local_lake, busy=True)
    assert files(local_lake, "datapoints") == 6  # fewer than the busy cap: left for later
    local_ingest(batch(18))
    tidy(local_lake)  # a lull
    assert files(local_lake, "datapoints") <= 2
    for start in range(21, 51, 3):
        local_ingest(batch(start))
    tidy(local_lake, busy=True)
    assert files(local_lake, "datapoints") <= 4  # the cap reached: merged though busy
    assert local_lake.count("datapoints") == 51


def test_the_landing_area_keeps_only_what_uploads_read(lake: Lake, ingest: Any) -> None:
    uploads = ingest.uploads
    finished = ingest(batch(0))
    assert finished.status == "SUCCEEDED"
    running = uploads.create(ndjson(batch(3)))  # recorded RUNNING, not run yet
    lake.store.put(LANDING_PREFIX + "tag/token", b"{}\n")  # uploaded, never ingested
    lake.store.put(LANDING_PREFIX + "tag/pending", b"{}\n")  # accepted for group commit
    waiting = make_pending(
        lake, LANDING_PREFIX + "tag/pending", organization_id="default", options={}, source=""
    )
    landed = {key for key, _ in lake.store.list_dated(LANDING_PREFIX)}
    assert landed == {
        finished.landing_key,
        running.landing_key,
        LANDING_PREFIX + "tag/token",
        LANDING_PREFIX + "tag/pending",
    }

    # nothing is older than an hour: everything stays
    assert prune_landing(lake, retention_hours=1) == LandingReport(0, 0)
    assert {key for key, _ in lake.store.list_dated(LANDING_PREFIX)} == landed

    assert prune_landing(lake, retention_hours=0) == LandingReport(deleted=2, kept=2)
    assert {key for key, _ in lake.store.list_dated(LANDING_PREFIX)} == {
        running.landing_key,
        LANDING_PREFIX + "tag/pending",
    }
    # the finished upload keeps its row; the running and the pending ones still run
    assert uploads.get(finished.id).counts.datapoints_created == 3
    assert uploads.run(running.id).status == "SUCCEEDED"
    assert uploads.pending(waiting.id) is not None
    assert lake.count("datapoints") == 6
    # once it ended, the running upload's file goes too
    assert prune_landing(lake, retention_hours=0).deleted == 1


def test_a_file_linked_into_the_landing_area_is_as_young_as_the_link(
    local_lake: Lake, tmp_path: Path
) -> None:
    source = tmp_path / "old.ndjson"
    source.write_bytes(ndjson(batch(0)))
    two_days_ago = time.time() - 2 * 86400
    os.utime(source, (two_days_ago, two_days_ago))
    key = LANDING_PREFIX + "linked"
    assert local_lake.store.land_file(key, source) is not None  # a link, not a copy
    # not yet an upload's (its row comes next): an old file by its own date, not by the link's
    assert prune_landing(local_lake, retention_hours=1) == LandingReport(0, 0)
    assert local_lake.store.size(key) is not None
