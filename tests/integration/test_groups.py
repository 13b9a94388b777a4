"""Group commit of small uploads: shared transactions, per-upload results, restarts."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import zstandard
from conftest import another_writer

from lake import JobRunner, Lake, Uploads, groups
from lake.groups import GroupCommitter
from lake.uploads import PENDING_PREFIX


def data(records: list[dict[str, Any]]) -> bytes:
    return b"\n".join(json.dumps(r).encode() for r in records)


def plain(prefix: str, n: int) -> bytes:
    return data(
        [
            {
                "type": "IMAGE",
                "metadata": {"uri": f"s3://b/{prefix}/{i}.jpg"},
                "tags": {"batch": prefix},
                "groundtruths": [{"task_type": "CLASSIFICATION", "class_name": "cat"}],
            }
            for i in range(n)
        ]
    )


def wait_all(uploads: Uploads, upload_ids: list[str], timeout: float = 60) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = [uploads.get(i) for i in upload_ids]
        if all(u.status.finished for u in found) or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def run_until_done(group: GroupCommitter, uploads: Uploads, upload_ids: list[str]) -> list[Any]:
    """Start the committer, wait for these uploads to end, stop it."""
    group.start()
    try:
        return wait_all(uploads, upload_ids)
    finally:
        group.stop()


def test_small_uploads_share_transactions(lake: Lake) -> None:
    uploads = Uploads(lake)
    runner = JobRunner(lake, uploads=uploads)
    group = GroupCommitter(uploads, fallback=runner.submit, linger=0.05)
    submitted = [
        group.submit(plain(f"u{i}", 5), organization_id="acme" if i % 2 else "other")
        for i in range(30)
    ]
    assert all(u.status == "RUNNING" for u in submitted)
    assert uploads.get(submitted[0].id).status == "RUNNING"  # pending reads as RUNNING
    try:
        done = run_until_done(group, uploads, [u.id for u in submitted])
    finally:
        runner.shutdown()
    assert [u.status for u in done] == ["SUCCEEDED"] * 30
    assert all(u.counts.datapoints_created == 5 and u.records_read == 5 for u in done)
    assert lake.count("datapoints") == 150 and lake.count("groundtruths") == 150
    orgs = {r["organization_id"] for r in lake.read("datapoints").to_pylist()}
    assert orgs == {"acme", "other"}
    # 30 uploads, far fewer commits: they were grouped
    assert lake.state().versions["datapoints"] < 15
    assert lake.store.list(PENDING_PREFIX) == []


def test_bad_records_and_updates_in_a_group(lake: Lake) -> None:
    uploads = Uploads(lake)
    first = uploads.run(uploads.create(plain("base", 2)).id)
    existing = lake.read("datapoints").column("id").to_pylist()[0]
    runner = JobRunner(lake, uploads=uploads)
    group = GroupCommitter(uploads, fallback=runner.submit)
    group.start()
    try:
        bad = group.submit(data([{"type": "IMAGE"}, {"type": "NOPE"}]), organization_id="default")
        update = group.submit(
            data([{"id": existing, "tags": {"new": "1"}}]), organization_id="default"
        )
        done = wait_all(uploads, [bad.id, update.id])
    finally:
        group.stop()
        runner.shutdown()
    assert first.status == "SUCCEEDED"
    assert done[0].status == "SUCCEEDED" and done[0].failures == 1
    assert done[0].errors[0]["line"] == 2 and "NOPE" in done[0].errors[0]["reason"]
    assert done[1].status == "SUCCEEDED" and done[1].counts.datapoints_updated == 1
    assert {t["name"] for t in lake.read("tags").to_pylist() if t["datapoint"] == existing} >= {
        "new"
    }


def test_pending_uploads_survive_a_restart_and_apply_once(lake: Lake) -> None:
    uploads = Uploads(lake)
    runner = JobRunner(lake, uploads=uploads)
    stopped = GroupCommitter(uploads, fallback=runner.submit)  # never started: a dead process
    left = [stopped.submit(plain(f"r{i}", 3), organization_id="default") for i in range(4)]
    # one object per upload: the marker holds the data, nothing is landed besides
    assert len(lake.store.list(PENDING_PREFIX)) == 4 and lake.store.list("_landing/") == []
    restarted = GroupCommitter(uploads, fallback=runner.submit)
    assert sorted(restarted.start()) == sorted(u.id for u in left)
    try:
        done = wait_all(uploads, [u.id for u in left])
    finally:
        restarted.stop()
    assert [u.status for u in done] == ["SUCCEEDED"] * 4
    assert lake.count("datapoints") == 12
    # a marker left behind after its upload committed (a crash before the clean-up)
    lake.store.put(
        PENDING_PREFIX + left[0].id,
        json.dumps(
            {
                "organization_id": "default",
                "landing_key": "_landing/gone",
                "options": {},
                "created_at": left[0].created_at.isoformat(),
            }
        ).encode(),
    )
    again = GroupCommitter(uploads, fallback=runner.submit)
    assert again.start() == [left[0].id]
    deadline = time.monotonic() + 30
    while lake.store.list(PENDING_PREFIX) and time.monotonic() < deadline:
        time.sleep(0.05)
    again.stop()
    runner.shutdown()
    assert lake.store.list(PENDING_PREFIX) == []
    assert lake.count("datapoints") == 12  # nothing applied twice
    assert uploads.get(left[0].id).status == "SUCCEEDED"


def test_an_upload_that_breaks_the_group_fails_alone(local_lake: Lake, monkeypatch: Any) -> None:
    lake = local_lake
    uploads = Uploads(lake)
    runner = JobRunner(lake, uploads=uploads)
    group = GroupCommitter(uploads, fallback=runner.submit)
    good = group.submit(plain("good", 3), organization_id="default")
    poison = group.submit(plain("poison", 3), organization_id="default")
    real = group._raw

    def raw(upload: Any) -> Any:
        if upload.id == poison.id:
            raise RuntimeError("a bug in the planner")
        return real(upload)

    monkeypatch.setattr(group, "_raw", raw)
    group.start()
    try:
        done = wait_all(uploads, [good.id, poison.id])
    finally:
        group.stop()
        runner.shutdown()
    assert done[0].status == "SUCCEEDED"
    # the ordinary path ran it: it does not share the group's bug here, so it lands
    assert done[1].status == "SUCCEEDED" and lake.count("datapoints") == 6


def test_a_full_queue_pushes_back(local_lake: Lake) -> None:
    from lake import BusyError

    uploads = Uploads(local_lake)
    group = GroupCommitter(
        uploads, fallback=lambda _: None, max_queued=3, admit_wait=0.2
    )  # not started: nothing leaves the queue
    for i in range(3):
        group.submit(plain(f"q{i}", 1), organization_id="default")
    started = time.monotonic()
    with pytest.raises(BusyError, match="3 uploads are waiting"):
        group.submit(plain("q3", 1), organization_id="default")
    assert time.monotonic() - started >= 0.2  # it waited for room first
    assert len(local_lake.store.list("_shoal/pending/")) == 3  # nothing written for it


def test_a_waiting_upload_gets_in_once_the_queue_has_room(local_lake: Lake) -> None:
    """Back-pressure by waiting: a request finding the queue full is admitted as soon as the
    worker takes the queue, and its upload is committed like the others."""
    uploads = Uploads(local_lake)
    group = GroupCommitter(uploads, fallback=lambda _: None, max_queued=2, admit_wait=30)
    first = [group.submit(plain(f"w{i}", 2), organization_id="default") for i in range(2)]
    admitted: list[str] = []
    waiting = threading.Thread(
        target=lambda: admitted.append(group.submit(plain("late", 2), organization_id="default").id)
    )
    waiting.start()
    time.sleep(0.3)
    assert not admitted  # the queue is full and nothing takes from it yet
    group.start()
    try:
        waiting.join(timeout=30)
        assert admitted
        deadline = time.monotonic() + 30
        ids = [u.id for u in first] + admitted
        while time.monotonic() < deadline:
            states = [group.lookup(i) for i in ids]
            if all(u is not None and u.status == "SUCCEEDED" for u in states):
                break
            time.sleep(0.05)
    finally:
        group.stop()
    assert [uploads.get(i).status for i in ids] == ["SUCCEEDED"] * 3
    assert local_lake.count("datapoints") == 6
    # the committed uploads' landed files and markers are cleaned up (off the worker's path)
    assert local_lake.store.list("_shoal/pending/") == []


def test_small_files_of_many_groups_are_merged_in_a_lull(
    local_lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every group adds a file to each table it writes: the committer has them merged once
    # no upload came for a while (not between the requests of a burst)
    monkeypatch.setattr(groups, "LULL_SECONDS", 0.3)
    uploads = Uploads(local_lake)
    runner = JobRunner(local_lake, uploads=uploads)
    group = GroupCommitter(uploads, fallback=runner.submit, linger=0)
    group.start()
    tables = ("datapoints", "tags", "groundtruths", "uploads")

    def most_files() -> int:
        state = local_lake.state()
        return max(local_lake.delta.file_count(t, state.versions[t]) for t in tables)

    try:
        for i in range(48):  # one upload at a time: 48 groups
            upload = group.submit(plain(f"g{i}", 5), organization_id="default")
            assert wait_all(uploads, [upload.id])[0].status == "SUCCEEDED"
        deadline = time.monotonic() + 20
        while most_files() > 20 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        group.stop()
        runner.shutdown()
    state = local_lake.state()
    assert state.versions["datapoints"] >= 48  # a commit per group, and the merges
    assert most_files() <= 20
    assert local_lake.count("datapoints") == 240 and local_lake.count("uploads") == 48
    uris = {r["metadata"] for r in local_lake.read("datapoints", columns=["metadata"]).to_pylist()}
    assert len(uris) == 240


@pytest.mark.parametrize("landed", [False, True], ids=["sent", "landed"])
def test_an_upload_handed_over_before_a_crash_keeps_its_file(lake: Lake, landed: bool) -> None:
    uploads = Uploads(lake)
    first = uploads.run(uploads.create(plain("base", 2)).id)
    assert first.status == "SUCCEEDED"
    existing = lake.read("datapoints").column("id").to_pylist()[0]
    stopped = GroupCommitter(uploads, fallback=lambda _: None)  # a process that dies ...
    update = data([{"id": existing, "tags": {"after": "crash"}}])  # (the ordinary path's)
    if landed:  # stored first (POST /api/ingestion/upload), then queued
        lake.store.put("_landing/t/file", update)
        pending = stopped.submit_landed("_landing/t/file", organization_id="default")
    else:
        pending = stopped.submit(update, organization_id="default")
    key = "_landing/t/file" if landed else f"_landing/{pending.id}"
    # ... after handing the upload over (its file landed, its row RUNNING), before its
    # marker was deleted
    lake.store.put(key, update)
    uploads.start(
        key,
        organization_id="default",
        upload_id=pending.id,
        created_at=pending.created_at,
    )
    restarted = GroupCommitter(uploads, fallback=lambda _: None)
    assert restarted.start() == [pending.id]
    deadline = time.monotonic() + 30
    while lake.store.list(PENDING_PREFIX) and time.monotonic() < deadline:
        time.sleep(0.05)
    restarted.stop()
    assert lake.store.list(PENDING_PREFIX) == []
    assert lake.store.get(key) == update  # still there for its job
    runner = JobRunner(lake, uploads=uploads)
    assert pending.id in runner.start()  # the job resumes RUNNING uploads
    try:
        done = wait_all(uploads, [pending.id])[0]
    finally:
        runner.shutdown()
    assert done.status == "SUCCEEDED" and done.counts.datapoints_updated == 1
    tags = lake.read("tags").to_pylist()
    assert {(t["datapoint"], t["name"], t["value"]) for t in tags if t["name"] == "after"} == {
        (existing, "after", "crash")
    }


def test_compressed_landed_uploads_are_group_committed(lake: Lake) -> None:
    """A small file landed compressed (as the SDK sends it), its last line without a newline,
    is read whole by the group path, not handed to the ordinary one."""
    handed: list[str] = []
    group = GroupCommitter(Uploads(lake), fallback=handed.append)
    text = plain("z", 4).rstrip(b"\n")
    lake.store.put("_landing/test/z.ndjson.zst", zstandard.ZstdCompressor().compress(text))
    upload = group.submit_landed("_landing/test/z.ndjson.zst", organization_id="default")
    group.commit([upload])
    assert handed == []
    assert group.lookup(upload.id) is not None
    assert group.lookup(upload.id).status == "SUCCEEDED"  # type: ignore[union-attr]
    assert lake.count("datapoints") == 4


def test_the_committed_check_reads_only_files_whose_ids_may_match(lake: Lake) -> None:
    """Before reading ``uploads`` for uploads committed elsewhere, a group looks at the files'
    id statistics: ids newer than every row need no read, and an id inside a file's range
    is still found."""
    uploads = Uploads(lake)
    group = GroupCommitter(uploads, fallback=lambda _: None)
    first = [group.submit(plain(f"a{k}", 3), organization_id="default") for k in range(3)]
    group.commit(first)
    ids = sorted(u.id for u in first)
    later = group.submit(plain("b", 2), organization_id="default")
    with lake.transaction() as txn:
        assert txn.may_hold("uploads", "id", [ids[0], ids[-1]])
        assert txn.may_hold("uploads", "id", [ids[1]])
        assert not txn.may_hold("uploads", "id", [later.id])
        assert not txn.may_hold("bboxes", "id", ids)  # a table not written yet
        assert group._committed([later.id], txn) == {}
        assert group._committed([ids[1], later.id], txn) == {ids[1]: "SUCCEEDED"}


def prediction_update(datapoint: str, model: str, logits: list[float]) -> dict[str, Any]:
    return {
        "id": datapoint,
        "predictions": [{"task_type": "CLASSIFICATION", "model_name": model, "logits": logits}],
        "groundtruths": [{"task_type": "CLASSIFICATION", "class_name": model}],
    }


def test_new_predictions_for_existing_datapoints_share_transactions(lake: Lake) -> None:
    """Inference workers sending model outputs for datapoints already in the lake: their
    uploads are grouped; each gets its own counts and errors; each prediction replaces the
    one of its model."""
    uploads = Uploads(lake)
    for org in ("acme", "other"):
        assert uploads.run(uploads.create(plain(org, 40), organization_id=org).id).failures == 0
    ids = {
        org: sorted(
            r["id"] for r in lake.read("datapoints").to_pylist() if r["organization_id"] == org
        )
        for org in ("acme", "other")
    }
    runner = JobRunner(lake, uploads=uploads)
    group = GroupCommitter(uploads, fallback=runner.submit, linger=0.05)
    submitted = []
    for model in ("m1", "m2"):  # two passes: the second's m1 rows replace the first's
        for k in range(8):
            org = "acme" if k % 2 else "other"
            chosen = ids[org][k * 5 : k * 5 + 5]
            records = [prediction_update(d, model, [1.0, float(k)]) for d in chosen]
            if k == 3 and model == "m2":
                records[2]["id"] = ids["other"][0]  # another organization's datapoint
            submitted.append(group.submit(data(records), organization_id=org))
        if model == "m1":
            run_until_done(group, uploads, [u.id for u in submitted])
            group = GroupCommitter(uploads, fallback=runner.submit, linger=0.05)
    versions = lake.state().versions["predictions"]
    try:
        done = run_until_done(group, uploads, [u.id for u in submitted])
    finally:
        runner.shutdown()
    assert [u.status for u in done] == ["SUCCEEDED"] * 16
    # the second pass shared commits (8 uploads, not 8 rewrites of the predictions table)
    assert lake.state().versions["predictions"] - versions < 8
    assert lake.store.list(PENDING_PREFIX) == []
    failed = done[8 + 3]
    assert failed.failures == 1 and failed.errors[0]["line"] == 3
    assert failed.errors[0]["field"] == "id"
    assert failed.counts.datapoints_updated == 4 and failed.counts.predictions == 4
    others = [u for u in done if u.id != failed.id]
    assert all(u.counts.datapoints_updated == 5 and u.failures == 0 for u in others)
    assert all(u.counts.predictions == 5 and u.counts.groundtruths == 5 for u in others)
    predictions = lake.read("predictions").to_pylist()
    slots = [(p["datapoint"], p["model_name"]) for p in predictions]
    assert len(slots) == len(set(slots)) == 80 - 1  # m1 and m2 for each of 40, but one
    labels = {g["datapoint"]: g["class_name"] for g in lake.read("groundtruths").to_pylist()}
    assert len(lake.read("groundtruths").to_pylist()) == 80  # one per datapoint
    skipped = ids["acme"][17]  # line 3 of the failed upload
    assert labels[skipped] == "m1" and labels[ids["acme"][16]] == "m2"
    by_org = {r["id"]: r["organization_id"] for r in lake.read("datapoints").to_pylist()}
    assert all(by_org[p["datapoint"]] == p["organization_id"] for p in predictions)
    logits = lake.read("feature_vectors").to_pylist()
    assert sorted(v["prediction"] for v in logits) == sorted(p["id"] for p in predictions)


def boxed(prefix: str, n: int) -> bytes:
    """New datapoints with a detection groundtruth: records the group path hands over."""
    box = {"top": 1, "left": 2, "height": 3, "width": 4, "class_name": "car"}
    return data(
        [
            {
                "type": "IMAGE",
                "metadata": {"uri": f"s3://b/{prefix}/{i}.jpg"},
                "groundtruths": [{"task_type": "OBJECT_DETECTION", "bboxes": [box]}],
            }
            for i in range(n)
        ]
    )


def test_an_upload_started_again_after_it_ended_is_left_as_it_ended(lake: Lake) -> None:
    """Recording a handed-over upload RUNNING checks for its row in the same transaction: a
    second hand-over (another server's committer found the same pending marker) that comes
    after the first run ended neither restarts the upload nor applies it twice."""
    uploads = Uploads(lake)
    lake.store.put("_landing/t/boxes", boxed("once", 3))
    first = uploads.start("_landing/t/boxes", upload_id="01-handed-over")
    assert uploads.run(first.id).status == "SUCCEEDED"
    again = uploads.start("_landing/t/boxes", upload_id="01-handed-over")
    assert again.status == "SUCCEEDED" and again.counts.datapoints_created == 3
    assert uploads.get(first.id).status == "SUCCEEDED"
    assert uploads.run(first.id).counts.datapoints_created == 3
    assert lake.count("datapoints") == 3 and lake.count("bboxes") == 3
    assert lake.count("uploads") == 1


def test_two_committers_listing_the_same_pending_uploads_apply_each_once(lake: Lake) -> None:
    """Two servers on one lake: a committer starting lists every pending marker, the other
    server's live ones too. Uploads both hand over to the ordinary path are applied once."""
    uploads = Uploads(lake)
    stopped = GroupCommitter(uploads, fallback=lambda _: None)
    left = [stopped.submit(boxed(f"p{i}", 4), organization_id="default") for i in range(6)]
    committers = []
    for opened in (lake, another_writer(lake)):
        theirs = Uploads(opened)
        committers.append(GroupCommitter(theirs, fallback=lambda i, u=theirs: u.run(i)))
    started = [threading.Thread(target=c.start) for c in committers]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join()
    try:
        done = wait_all(uploads, [u.id for u in left])
        deadline = time.monotonic() + 30
        while lake.store.list(PENDING_PREFIX) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        for committer in committers:
            committer.stop()
    assert [u.status for u in done] == ["SUCCEEDED"] * 6
    assert [u.counts.datapoints_created for u in done] == [4] * 6
    uris = lake.read("datapoints", columns=["metadata"]).column("metadata").to_pylist()
    assert len(uris) == len(set(uris)) == 24
    assert lake.count("bboxes") == 24 and lake.count("uploads") == 6
