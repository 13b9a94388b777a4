"""Large batches parsed in helper processes give what the in-thread parse gives; a helper that
fails sends its batch back to the in-thread parse, and nothing is lost."""

from __future__ import annotations

import io
import json
import random
from typing import Any

import pyarrow as pa
import pytest

from lake import Lake, Uploads
from lake.batch import IdSource
from lake.ndjson import RawBatch, read_batches
from lake.parsepool import ParseProcesses
from lake.prepare import PreparedBatch, prepare_batch

#: how the batches below are parsed, in a helper as in a thread (the defaults of prepare_batch)
OPTIONS: dict[str, Any] = {"fast_path": True, "use_threads": False, "native_min_lines": 64}


def record(rng: random.Random, n: int) -> dict[str, Any]:
    """A record of the native path (tags, a groundtruth, a prediction with an embedding), or
    every tenth one with nested metadata (the per-record path)."""
    prediction: dict[str, Any] = {
        "task_type": "CLASSIFICATION",
        "model_name": rng.choice(["m1", "m2"]),
        "logits": [rng.gauss(0, 2) for _ in range(4)],
        "embeddings": {"pool": [rng.random() for _ in range(32)]},
    }
    result: dict[str, Any] = {
        "type": "IMAGE",
        "metadata": {"uri": f"s3://bucket/{n}.jpg"},
        "tags": {"split": rng.choice(["train", "val"]), "n": n},
        "groundtruths": [{"task_type": "CLASSIFICATION", "class_name": rng.choice("abc")}],
        "predictions": [prediction],
    }
    if n % 10 == 0:
        result["metadata"]["camera"] = {"id": n, "night": n % 20 == 0}
    return result


def batch_text(count: int = 300, *, malformed: bool = True) -> bytes:
    rng = random.Random(7)
    lines = [json.dumps(record(rng, n)) for n in range(count)]
    if malformed:  # (Arrow then cannot read its batch: all of it takes the per-record path)
        lines[5] = '{"type": "IMAGE", "tags": {"a": 1}'
    lines[17] = json.dumps({"type": "SPACESHIP"})  # not a datapoint type
    lines.insert(40, "")  # a blank line
    return ("\n".join(lines) + "\n").encode()


def one_batch(data: bytes) -> RawBatch:
    (raw,) = read_batches(io.BytesIO(data), batch_lines=10_000)
    return raw


def without_clock(table: pa.Table) -> pa.Table:
    """The table without its timestamp columns (a batch's rows are stamped when prepared)."""
    return table.drop_columns([f.name for f in table.schema if pa.types.is_timestamp(f.type)])


def assert_same(remote: PreparedBatch, local: PreparedBatch) -> None:
    assert (remote.last_line, remote.records_read) == (local.last_line, local.records_read)
    assert remote.fast.counts == local.fast.counts
    assert sorted(remote.fast.tables) == sorted(local.fast.tables)
    for name, table in local.fast.tables.items():
        assert without_clock(remote.fast.tables[name]).equals(without_clock(table)), name
    assert [s.line for s in remote.specs] == [s.line for s in local.specs]
    assert [repr(s.predictions) for s in remote.specs] == [repr(s.predictions) for s in local.specs]
    assert [e.to_dict() for e in remote.errors] == [e.to_dict() for e in local.errors]


def test_a_helper_prepares_what_a_thread_prepares() -> None:
    raw = one_batch(batch_text(malformed=False))
    helpers = ParseProcesses(1)
    try:
        remote = helpers.prepare(raw, "org", IdSource(5, 9), **OPTIONS)
        again = helpers.prepare(raw, "org", IdSource(5, 9), **OPTIONS)
        (process,) = [helper.process for helper in helpers._idle]
    finally:
        helpers.close()
    local = prepare_batch(raw, "org", IdSource(5, 9))
    assert remote is not None and again is not None
    assert helpers.parsed == 2 and not helpers.broken
    assert local.fast.tables["feature_vectors"].num_rows > 200  # the native path ran
    assert len(local.specs) >= 25  # and the per-record one
    assert {e.line for e in local.errors} == {18}
    assert_same(remote, local)
    assert_same(again, local)
    assert process.poll() is not None  # closed: the helper ended


def test_a_parse_that_fails_in_a_helper_is_left_to_the_thread() -> None:
    raw = one_batch(batch_text(50))
    # line numbers that do not match the lines: the parse raises there (and does here)
    bad = RawBatch(raw.data, raw.numbers[:-1], [])
    with pytest.raises(ValueError, match="zip"):
        prepare_batch(bad, "org", IdSource(5, 9))
    helpers = ParseProcesses(1)
    try:
        failed = helpers.prepare(bad, "org", IdSource(5, 9), **OPTIONS)
        assert failed is None and not helpers.broken
        good = helpers.prepare(raw, "org", IdSource(5, 9), **OPTIONS)
    finally:
        helpers.close()
    assert good is not None and helpers.parsed == 1  # the same helper went on
    assert helpers._pids and len(helpers._pids) == 1
    assert_same(good, prepare_batch(raw, "org", IdSource(5, 9)))


def run(lake: Lake, data: bytes, helpers: ParseProcesses | None) -> Any:
    """The upload of ``data``, its batches parsed by ``helpers`` (None: in threads)."""
    uploads = Uploads(lake, batch_size=100, parse_processes=False)
    uploads.helpers = helpers
    uploads.process_min_bytes = 0  # every batch, however small
    return uploads.run(uploads.create(data).id)


def test_uploads_parsed_in_helpers_land_as_in_threads(lake: Lake, tmp_path: Any) -> None:
    data = batch_text()
    helpers = ParseProcesses(2)
    try:
        upload = run(lake, data, helpers)
    finally:
        helpers.close()
    assert helpers.parsed == 3 and not helpers.broken  # 300 records, batches of 100
    alone = run(Lake(str(tmp_path / "threads")), data, None)
    assert upload.status == alone.status == "SUCCEEDED"
    assert upload.counts == alone.counts and upload.counts.datapoints_created == 298
    assert [e["line"] for e in upload.errors] == [e["line"] for e in alone.errors] == [6, 18]
    assert lake.read("feature_vectors").num_rows == 2 * 298  # each prediction: logits, embedding
    vectors = sorted(tuple(v) for v in lake.read("feature_vectors").column("value").to_pylist())
    other = Lake(str(tmp_path / "threads")).read("feature_vectors").column("value").to_pylist()
    assert vectors == sorted(tuple(v) for v in other)


def test_a_helper_that_dies_leaves_its_batch_to_the_threads(local_lake: Lake) -> None:
    helpers = ParseProcesses(1)
    try:
        raw = one_batch(batch_text(20))
        assert helpers.prepare(raw, "org", IdSource(1, 2), **OPTIONS)
        (helper,) = helpers._idle
        helper.process.kill()
        helper.process.wait()
        upload = run(local_lake, batch_text(), helpers)
    finally:
        helpers.close()
    assert helpers.broken and helpers.parsed == 1
    assert upload.status == "SUCCEEDED" and upload.counts.datapoints_created == 298
    assert local_lake.read("datapoints").num_rows == 298
    # the pool no longer starts helpers: the next batches go to the threads at once
    assert helpers.prepare(raw, "org", IdSource(1, 2), **OPTIONS) is None


def test_helpers_left_idle_end_when_the_pool_turns_off() -> None:
    helpers = ParseProcesses(2)
    raw = one_batch(batch_text(20))
    try:
        first, second = helpers._take(), helpers._take()
        assert first is not None and second is not None
        helpers._give(second)  # idle
        first.process.kill()
        first.process.wait()
        helpers._give(first)
        assert helpers.prepare(raw, "org", IdSource(1, 2), **OPTIONS) is None  # first: dead
        assert helpers.broken
        assert second.process.wait(timeout=10) == 0  # the idle one was told to end
        assert helpers._idle == [] and helpers._started == 0
    finally:
        helpers.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_helpers_are_started_only_for_large_batches(local_lake: Lake, workers: int) -> None:
    helpers = ParseProcesses(workers)
    try:
        uploads = Uploads(local_lake, batch_size=100, parse_workers=workers, parse_processes=False)
        uploads.helpers = helpers  # the default threshold: these batches are far below it
        upload = uploads.run(uploads.create(batch_text()).id)
    finally:
        helpers.close()
    assert upload.status == "SUCCEEDED"
    assert helpers.parsed == 0 and helpers._started == 0
