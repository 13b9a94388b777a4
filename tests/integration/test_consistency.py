"""Crashes, interrupted batches, concurrent writers and job control (SPEC §4, §8)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import threading

import pyarrow as pa
import pytest
from conftest import another_writer

from lake import JobRunner, Lake, Uploads, UploadStatus
from lake.delta import DeltaStore
from lake.errors import StorageError
from lake.tables import SCHEMAS


def records(n: int, start: int = 0) -> bytes:
    return "\n".join(
        json.dumps({"type": "IMAGE", "metadata": {"i": i}, "tags": {"i": str(i)}})
        for i in range(start, start + n)
    ).encode()


def fail_a_batch(lake: Lake, datapoint_id: str) -> None:
    """A batch that commits one datapoint row, then fails before publishing."""
    row = {name: None for name in SCHEMAS["datapoints"].names} | {
        "id": datapoint_id,
        "organization_id": "default",
    }
    with pytest.raises(RuntimeError, match="boom"), lake.transaction() as txn:
        txn.append("datapoints", pa.Table.from_pylist([row], schema=SCHEMAS["datapoints"]))
        raise RuntimeError("boom")


def test_a_failed_batch_is_rolled_back_and_never_seen(lake: Lake) -> None:
    uploads = Uploads(lake)
    uploads.run(uploads.create(records(3)).id)
    before = lake.state()
    stray = "00000000-0000-7000-8000-000000000001"
    fail_a_batch(lake, stray)
    assert lake.state() == before
    assert lake.count("datapoints") == 3
    # the next batch writes on top of the restored table, not of the failed commit
    uploads.run(uploads.create(records(2, 3)).id)
    ids = lake.read("datapoints", columns=["id"]).column("id").to_pylist()
    assert len(ids) == 5
    assert stray not in ids


def test_a_parallel_append_that_fails_undoes_the_others(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's appends run in parallel: when one fails, the tables the others committed are
    restored, so neither readers nor the next batch see their rows."""
    uploads = Uploads(lake)
    uploads.run(uploads.create(records(3)).id)
    before = lake.state()
    original = DeltaStore.append

    def append(self: DeltaStore, table: str, rows: pa.Table, **kwargs: object) -> int:
        if table == "tags":
            raise StorageError("tags: the disk is full")
        return original(self, table, rows, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(DeltaStore, "append", append)
    impatient = Uploads(lake, storage_patience=0)
    failed = impatient.run(impatient.create(records(2, 100)).id)
    assert failed.status == UploadStatus.FAILED
    assert "the disk is full" in (failed.error_message or "")
    monkeypatch.undo()
    after = lake.state().versions
    assert [after[t] for t in ("datapoints", "tags")] == [
        before.versions[t] for t in ("datapoints", "tags")
    ]
    assert lake.count("datapoints") == 3
    uploads.run(uploads.create(records(2, 3)).id)
    metadata = lake.read("datapoints", columns=["metadata"]).column("metadata").to_pylist()
    assert sorted(json.loads(m)["i"] for m in metadata) == [0, 1, 2, 3, 4]
    assert lake.count("tags") == 5


CRASHING_CHILD = textwrap.dedent("""
    import os, sys
    from lake import Lake, Uploads
    from lake import ingest

    original = ingest.Changes.commit
    calls = []

    def commit_then_die(self, txn, **kwargs):
        original(self, txn, **kwargs)
        calls.append(1)
        if len(calls) == 2:  # tables of batch 2 committed, its lake state not yet published
            os._exit(17)

    ingest.Changes.commit = commit_then_die
    lake = Lake(sys.argv[1])
    uploads = Uploads(lake, batch_size=10)
    uploads.run(sys.argv[2])
""")


def test_a_killed_job_resumes_without_duplicates(local_lake: Lake) -> None:
    uploads = Uploads(local_lake, batch_size=10)
    upload = uploads.create(records(35))
    child = subprocess.run(
        [sys.executable, "-c", CRASHING_CHILD, local_lake.uri, upload.id],
        capture_output=True,
        text=True,
    )
    assert child.returncode == 17, child.stderr
    # readers see batch 1 whole and nothing of batch 2
    assert local_lake.count("datapoints") == 10
    assert local_lake.count("tags") == 10
    interrupted = uploads.get(upload.id)
    assert (interrupted.status, interrupted.lines_done) == (UploadStatus.RUNNING, 10)
    first_ids = set(local_lake.read("datapoints", columns=["id"]).column("id").to_pylist())

    finished = JobRunner(local_lake, uploads=uploads)
    assert finished.start() == [upload.id]
    done = finished.wait(upload.id, timeout=60)
    finished.shutdown()
    assert done.status is UploadStatus.SUCCEEDED
    assert done.summary()["datapoints_created"] == 35
    metadata = local_lake.read("datapoints", columns=["id", "metadata"]).to_pylist()
    assert sorted(json.loads(r["metadata"])["i"] for r in metadata) == list(range(35))
    assert first_ids <= {r["id"] for r in metadata}
    assert local_lake.count("tags") == 35


def test_rerunning_a_finished_upload_changes_nothing(lake: Lake) -> None:
    uploads = Uploads(lake)
    upload = uploads.run(uploads.create(records(4)).id)
    again = uploads.run(upload.id)
    assert again.status is UploadStatus.SUCCEEDED
    assert lake.count("datapoints") == 4


def test_ids_of_new_datapoints_are_derived_from_upload_and_line(lake: Lake) -> None:
    from lake.ids import derived_id, salt_of

    uploads = Uploads(lake)
    upload = uploads.run(uploads.create(records(2)).id)
    ms = int(upload.created_at.timestamp() * 1000)
    expected = {derived_id(ms, salt_of(upload.id), line, 0) for line in (1, 2)}
    assert set(lake.read("datapoints", columns=["id"]).column("id").to_pylist()) == expected


def test_concurrent_writers_lose_nothing(lake: Lake) -> None:
    def writer(start: int) -> None:
        own = another_writer(lake)
        uploads = Uploads(own, batch_size=5)
        result = uploads.run(uploads.create(records(25, start)).id)
        assert result.status is UploadStatus.SUCCEEDED

    threads = [threading.Thread(target=writer, args=(start,)) for start in (0, 100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    metadata = lake.read("datapoints", columns=["metadata"]).column("metadata").to_pylist()
    assert sorted(json.loads(m)["i"] for m in metadata) == [*range(25), *range(100, 125)]
    assert lake.count("tags") == 50
    assert len(Uploads(lake).list_uploads()) == 2


def test_a_writer_follows_the_rollback_of_another_writer(lake: Lake) -> None:
    """A writer reuses its table objects without reloading them while they stand at the
    version the lake state names. Another writer's failed batch leaves the tables past that
    version (its commits, then their undoing): the first writer's next batches still land
    whole, on top of the undone tables, for appends and for updates alike."""
    uploads = Uploads(lake)
    uploads.run(uploads.create(records(3)).id)  # this writer's table objects are cached now
    other = another_writer(lake)
    stray = "00000000-0000-7000-8000-000000000002"
    fail_a_batch(other, stray)
    published = lake.state().versions["datapoints"]
    assert other.delta.latest_version("datapoints") == published + 2  # the commit, the undo
    uploads.run(uploads.create(records(2, 3)).id)
    rows = lake.read("datapoints", columns=["id", "metadata"]).to_pylist()
    first = next(r["id"] for r in rows if json.loads(r["metadata"])["i"] == 0)
    update = json.dumps({"id": first, "metadata": {"i": 100}}).encode()
    assert uploads.run(uploads.create(update).id).status is UploadStatus.SUCCEEDED
    rows = lake.read("datapoints", columns=["id", "metadata"]).to_pylist()
    assert stray not in [r["id"] for r in rows]
    assert sorted(json.loads(r["metadata"])["i"] for r in rows) == [1, 2, 3, 4, 100]
    assert other.read("datapoints").num_rows == 5


def test_the_latest_state_costs_one_request_and_sees_other_writers(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    uploads = Uploads(lake)
    uploads.run(uploads.create(records(2)).id)
    seen = lake.state()
    asked: list[str] = []
    get = type(lake.store).get

    def counting_get(store: object, key: str) -> bytes | None:
        asked.append(key)
        return get(store, key)  # type: ignore[arg-type]

    monkeypatch.setattr(type(lake.store), "get", counting_get)
    assert lake.state() == seen
    assert len(asked) == 1  # the next state's object: absent, so nothing was published since
    other = another_writer(lake)
    other_uploads = Uploads(other)
    other_uploads.run(other_uploads.create(records(3, 10)).id)
    assert lake.state() == other.state()
    assert lake.state().seq > seen.seq
    assert lake.count("datapoints") == 5


def test_abort_stops_an_upload(lake: Lake) -> None:
    uploads = Uploads(lake)
    upload = uploads.create(records(5))
    assert uploads.abort(upload.id).status is UploadStatus.ABORTED
    assert uploads.run(upload.id).status is UploadStatus.ABORTED
    assert lake.count("datapoints") == 0


def test_deadline_times_out_after_the_committed_batches(local_lake: Lake) -> None:
    uploads = Uploads(local_lake, batch_size=5)
    upload = uploads.create(records(20), options={"timeout_seconds": 1e-9})
    result = uploads.run(upload.id)
    assert result.status is UploadStatus.TIMED_OUT
    assert local_lake.count("datapoints") == 5  # what was committed stays


@pytest.mark.parametrize("upload_id", ["nope", "R\x00\U000c3ef9", "../../etc/passwd", ""])
def test_unknown_upload_is_not_found(lake: Lake, upload_id: str) -> None:
    from lake import NotFoundError

    with pytest.raises(NotFoundError, match=f"upload {re.escape(upload_id)} not found"):
        Uploads(lake).get(upload_id)


def test_two_runners_of_one_upload_apply_it_once(lake: Lake) -> None:
    """Two processes resuming the same upload (say, two servers on one bucket) race for it."""
    upload = Uploads(lake).create(records(60))
    results = []

    def run() -> None:
        own = another_writer(lake)
        results.append(Uploads(own, batch_size=10).run(upload.id))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = Uploads(lake).get(upload.id)
    assert final.status is UploadStatus.SUCCEEDED
    assert final.summary()["datapoints_created"] == 60
    assert lake.count("datapoints") == 60
    assert lake.count("tags") == 60
