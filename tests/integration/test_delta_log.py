"""Small appends are committed by Shoal itself (a data file, then the commit file written only
if absent): the tables stay plain Delta tables that delta-rs, pyarrow and polars read, with
file statistics, checkpoints, and delta-rs taking over whenever the version is taken."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import another_writer, data_files
from deltalake import DeltaTable

from lake import Lake
from lake import delta as delta_module
from lake.maintenance import merge_small_files
from lake.tables import SCHEMAS


def tags(first: int, n: int = 5) -> pa.Table:
    return pa.table(
        {
            "id": [f"{k:08d}-0000-7000-8000-000000000000" for k in range(first, first + n)],
            "organization_id": ["org"] * n,
            "datapoint": [f"dp-{k}" for k in range(first, first + n)],
            "name": ["split"] * n,
            "value": [None if k % 2 else "train" for k in range(first, first + n)],
            "created_at": pa.array([1_700_000_000_000_000] * n, pa.timestamp("us", tz="UTC")),
        }
    ).cast(SCHEMAS["tags"])


def append(lake: Lake, rows: pa.Table) -> None:
    with lake.transaction() as txn:
        txn.append("tags", rows)


def table(lake: Lake) -> DeltaTable:
    return DeltaTable(lake.delta.uri("tags"), storage_options=lake.delta.options)


def commit_entry(lake: Lake, version: int) -> list[dict[str, object]]:
    data = lake.store.get(f"tags/_delta_log/{version:020d}.json")
    assert data is not None
    return [json.loads(line) for line in data.decode().splitlines()]


def test_small_appends_are_plain_delta_commits_every_reader_reads(lake: Lake) -> None:
    append(lake, tags(0))
    append(lake, tags(5))
    version = lake.state().versions["tags"]
    entry = commit_entry(lake, version)
    info = next(action["commitInfo"] for action in entry if "commitInfo" in action)
    assert info["engineInfo"] == "shoal" and info["isBlindAppend"] is True
    assert info["readVersion"] == version - 1

    dt = table(lake)
    assert dt.version() == version
    expected = sorted(tags(0).column("id").to_pylist() + tags(5).column("id").to_pylist())
    assert sorted(dt.to_pyarrow_table().column("id").to_pylist()) == expected
    scanned = pl.scan_delta(lake.delta.uri("tags"), storage_options=lake.delta.options)
    assert scanned.select(pl.len()).collect().item() == 10
    assert lake.read("tags", columns=["id"]).num_rows == 10

    # the file statistics are exact: pruning by id keeps one file of the two
    actions = pa.table(dt.get_add_actions(flatten=True)).sort_by("min.id")
    assert actions.column("min.id").to_pylist() == [expected[0], expected[5]]
    assert actions.column("max.id").to_pylist() == [expected[4], expected[9]]
    assert actions.column("null_count.value").to_pylist() == [2, 3]
    assert actions.column("num_records").to_pylist() == [5, 5]
    pruned = lake.read("tags", columns=["id"], prune=f"id >= '{expected[5]}'")
    assert sorted(pruned.column("id").to_pylist()) == expected[5:]


def test_own_appends_encode_vectors_by_byte_stream_split_and_lists_by_dictionary(
    lake: Lake,
) -> None:
    n = 40
    vectors = np.random.default_rng(3).normal(size=(n, 16)).astype(np.float16).astype(np.float32)
    given = {
        "id": pa.array([f"{k:08d}-0000-7000-8000-000000000000" for k in range(n)]),
        "organization_id": pa.array(["org"] * n),
        "type": pa.array(["EMBEDDINGS"] * n),
        "datapoint": pa.array([f"dp-{k}" for k in range(n)]),
        "model_name": pa.array(["m:avgpool"] * n),
        "value": pa.array(list(vectors), pa.list_(pa.float32())),
        "shape": pa.array([[16]] * n, pa.list_(pa.int32())),
    }
    schema = SCHEMAS["feature_vectors"]
    rows = pa.table([given.get(f.name, pa.nulls(n, f.type)) for f in schema], schema=schema)
    with lake.transaction() as txn:
        txn.append("feature_vectors", rows)
    entry = lake.store.get(
        f"feature_vectors/_delta_log/{lake.state().versions['feature_vectors']:020d}.json"
    )
    assert entry is not None and b'"engineInfo": "shoal"' in entry  # written by Shoal's writer
    (name,) = data_files(lake, "feature_vectors")
    filesystem = lake.location.arrow_filesystem()
    with filesystem.open_input_file(name) as source:
        metadata = pq.ParquetFile(source).metadata
    encodings = {
        metadata.row_group(0).column(i).path_in_schema: metadata.row_group(0).column(i).encodings
        for i in range(metadata.num_columns)
    }
    assert "BYTE_STREAM_SPLIT" in encodings["value.list.element"]
    assert "RLE_DICTIONARY" in encodings["shape.list.element"]
    assert "RLE_DICTIONARY" in encodings["model_name"]
    assert "RLE_DICTIONARY" not in encodings["id"]
    back = lake.read("feature_vectors").sort_by("id")
    assert back.column("value").to_pylist() == rows.column("value").to_pylist()


def test_a_taken_version_goes_through_delta_rs_and_loses_nothing(lake: Lake) -> None:
    append(lake, tags(0))
    stale = lake.state().versions["tags"]
    append(lake, tags(5))
    # a writer that believes the table still stands at the older version
    version = lake.delta.append("tags", tags(10), expect=stale)
    assert version == stale + 2
    info = next(a["commitInfo"] for a in commit_entry(lake, version) if "commitInfo" in a)
    assert info.get("engineInfo") != "shoal"  # delta-rs made this commit
    dt = table(lake)
    assert dt.to_pyarrow_table().num_rows == 15
    # the data file written for the version that was taken was deleted again
    assert len(data_files(lake, "tags")) == len(dt.file_uris()) == 3


def test_checkpoints_are_made_every_interval(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delta_module, "CHECKPOINT_INTERVAL", 4)
    for k in range(9):
        append(lake, tags(5 * k))
    version = lake.state().versions["tags"]
    assert version >= 8
    delta_module.settle_background_work()  # written off the committing thread
    last = lake.store.get("tags/_delta_log/_last_checkpoint")
    assert last is not None
    checkpointed = json.loads(last)["version"]
    assert checkpointed % 4 == 0 and version - 4 < checkpointed <= version
    assert table(lake).to_pyarrow_table().num_rows == 45


def test_a_process_ending_while_a_checkpoint_is_due_exits_cleanly(tmp_path: Path) -> None:
    """Checkpoints are written on a thread of their own: a process that ends right after the
    commit that made one due waits for the one being written and drops those queued (a
    thread left inside delta-rs while the interpreter finalizes would crash the process)."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.path[:0] = {[str(Path(__file__).parent), str(Path(__file__).parents[1])]!r}
        from test_delta_log import append, tags
        from lake import Lake
        from lake import delta
        delta.CHECKPOINT_INTERVAL = 2
        lake = Lake({str(tmp_path / "lake")!r})
        for k in range(6):
            append(lake, tags(5 * k))
        print(lake.state().versions["tags"])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    version = int(done.stdout.split()[-1])
    assert version >= 6
    lake = Lake(str(tmp_path / "lake"))
    assert table(lake).to_pyarrow_table().num_rows == 30
    last = lake.store.get("tags/_delta_log/_last_checkpoint")
    if last is not None:  # the one written before the end is whole
        assert json.loads(last)["version"] % 2 == 0


def test_large_appends_and_foreign_tables_go_through_delta_rs(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delta_module, "BLIND_MAX_BYTES", 100)
    append(lake, tags(0))
    version = lake.state().versions["tags"]
    info = next(a["commitInfo"] for a in commit_entry(lake, version) if "commitInfo" in a)
    assert info.get("engineInfo") != "shoal"
    assert table(lake).to_pyarrow_table().num_rows == 5


def test_file_statistics_follow_own_appends_and_other_writers(lake: Lake) -> None:
    append(lake, tags(0))
    ids = sorted(tags(0).column("id").to_pylist())
    later = sorted(tags(100).column("id").to_pylist())
    with lake.transaction() as txn:
        assert txn.may_hold("tags", "id", [ids[0]])
        assert not txn.may_hold("tags", "id", [later[0], later[-1]])
        assert not txn.may_hold("tags", "id", [])
        txn.append("tags", tags(100))
    with lake.transaction() as txn:  # the writer's own append is known without a look
        assert txn.may_hold("tags", "id", [later[2]])
        # its values are known exactly: an id inside its range that it does not hold is not
        inside = later[2][:-1] + ("0" if later[2][-1] != "0" else "1")
        assert ids[-1] < inside < later[-1] and inside not in later
        assert not txn.may_hold("tags", "id", [inside])
        assert txn.may_hold("tags", "id", [inside, later[3]])
    # another process appends: its commit is seen at the version that holds it
    with another_writer(lake).transaction() as txn:
        txn.append("tags", tags(200))
    newest = sorted(tags(200).column("id").to_pylist())
    with lake.transaction() as txn:
        assert txn.may_hold("tags", "id", [newest[0]])
        assert pc.sum(pc.equal(txn.read("tags", columns=["id"]).column("id"), newest[0])).as_py()


def test_small_files_are_merged_by_a_commit_of_shoal_that_keeps_older_versions(
    lake: Lake,
) -> None:
    for k in range(4):
        append(lake, tags(5 * k))
    before = lake.state()
    expected = sorted(lake.read("tags", columns=["id"]).column("id").to_pylist())
    merged = merge_small_files(lake, tables=["tags"], look_every=0, at_least=2)
    assert merged == {"tags": 4}
    version = lake.state().versions["tags"]
    entry = commit_entry(lake, version)
    info = next(action["commitInfo"] for action in entry if "commitInfo" in action)
    assert info["engineInfo"] == "shoal" and info["operation"] == "OPTIMIZE"
    assert sum("remove" in action for action in entry) == 4
    assert all(a["remove"]["dataChange"] is False for a in entry if "remove" in a)
    dt = table(lake)
    assert len(dt.file_uris()) == 1
    assert dt.to_pyarrow_table().column("id").to_pylist() == expected  # in id order
    assert sorted(lake.read("tags", columns=["id"]).column("id").to_pylist()) == expected
    # readers of the state before the merge still read their files
    old = lake.read("tags", columns=["id"], state=before)
    assert sorted(old.column("id").to_pylist()) == expected
    older = DeltaTable(
        lake.delta.uri("tags"), version=version - 1, storage_options=lake.delta.options
    )
    assert len(older.file_uris()) == 4


def test_kept_file_ranges_follow_merges_and_rewrites_without_a_look(lake: Lake) -> None:
    """The file ranges a writer keeps (may_hold) are brought along by its own appends, merges
    and rewrites, and equal what a fresh look at the log finds."""

    def kept(version: int) -> list[tuple[str, str | None, str | None]]:
        entries = lake.delta._file_ranges("tags", version, "id")
        return sorted((path, low, high) for path, low, high, _ in entries)

    def looked(version: int) -> list[tuple[str, str | None, str | None]]:
        fresh = another_writer(lake).delta._file_ranges("tags", version, "id")
        return sorted((path, low, high) for path, low, high, _ in fresh)

    for k in range(3):
        append(lake, tags(5 * k))
    with lake.transaction() as txn:  # seeds the kept ranges at this version
        assert txn.may_hold("tags", "id", tags(0).column("id").to_pylist())
    merge_small_files(lake, tables=["tags"], look_every=0, at_least=2)
    append(lake, tags(100))
    ids = sorted(lake.read("tags", columns=["id"]).column("id").to_pylist())
    with lake.transaction() as txn:
        txn.replace("tags", "id", [(ids[0], ids[2])], pc.field("id").isin(ids[1:2]), tags(200, 1))
    version = lake.state().versions["tags"]
    assert lake.delta._ranges[("tags", "id")][0] == version  # kept along, no look needed
    assert kept(version) == looked(version)
    assert len(kept(version)) == len(table(lake).file_uris())


def test_replacing_rows_rewrites_only_the_files_that_lose_some(lake: Lake) -> None:
    for k in range(3):
        append(lake, tags(10 * k, 10))  # three files: ids 0-9, 10-19, 20-29
    before = lake.state()
    files_before = set(table(lake).file_uris())
    ids = sorted(lake.read("tags", columns=["id"]).column("id").to_pylist())
    gone = [ids[3], ids[4]]  # in the first file
    new = tags(100, 2)
    with lake.transaction() as txn:
        # the key ranges span the first two files; only the first one loses rows
        txn.replace("tags", "id", [(ids[0], ids[15])], pc.field("id").isin(gone), new)
    version = lake.state().versions["tags"]
    entry = commit_entry(lake, version)
    info = next(action["commitInfo"] for action in entry if "commitInfo" in action)
    assert info["engineInfo"] == "shoal" and info["readVersion"] == version - 1
    removed = [a["remove"] for a in entry if "remove" in a]
    assert len(removed) == 1 and removed[0]["dataChange"] is True
    assert sum("add" in a for a in entry) == 2  # the first file without its rows, and the new
    dt = table(lake)
    after = set(dt.file_uris())
    assert len(files_before - after) == 1 and len(after - files_before) == 2
    expected = sorted(set(ids) - set(gone) | set(new.column("id").to_pylist()))
    assert sorted(dt.to_pyarrow_table().column("id").to_pylist()) == expected
    assert sorted(lake.read("tags", columns=["id"]).column("id").to_pylist()) == expected
    # the file statistics of the new files are exact: pruning still skips files
    pruned = lake.read("tags", columns=["id"], prune=f"id >= '{ids[20]}' AND id <= '{ids[29]}'")
    assert sorted(pruned.column("id").to_pylist()) == ids[20:]
    # readers of the older state read the rows as they were
    old = lake.read("tags", columns=["id"], state=before).column("id").to_pylist()
    assert sorted(old) == ids


def test_replacing_rows_outside_the_ranges_keeps_them(lake: Lake) -> None:
    """Rows matching the drop condition outside the key ranges stay (as delta-rs's overwrite
    of the ranges kept them); a row whose condition is unknown (null) stays too."""
    append(lake, tags(0, 10))
    ids = sorted(lake.read("tags", columns=["id"]).column("id").to_pylist())
    drop = pc.field("value") == "train"  # null for odd rows
    with lake.transaction() as txn:
        txn.replace("tags", "id", [(ids[0], ids[4])], drop, tags(100, 0))
    rows = {r["id"]: r["value"] for r in lake.read("tags").to_pylist()}
    assert set(rows) == {ids[1], ids[3], *ids[5:]}
    assert rows[ids[6]] == "train"


def test_replacing_rows_of_a_foreign_table_goes_through_delta_rs(lake: Lake) -> None:
    append(lake, tags(0, 10))
    lake.delta._blind["tags"] = False  # as for a table another engine created
    ids = sorted(lake.read("tags", columns=["id"]).column("id").to_pylist())
    with lake.transaction() as txn:
        new = tags(100, 1)  # delta-rs checks that the new rows lie in the ranges
        ranges = [(ids[0], new.column("id")[0].as_py())]
        txn.replace("tags", "id", ranges, pc.field("id") == ids[0], new)
    version = lake.state().versions["tags"]
    info = next(a["commitInfo"] for a in commit_entry(lake, version) if "commitInfo" in a)
    assert info.get("engineInfo") != "shoal"
    assert sorted(lake.read("tags", columns=["id"]).column("id").to_pylist()) == sorted(
        ids[1:] + tags(100, 1).column("id").to_pylist()
    )
