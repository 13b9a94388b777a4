"""Group commit in a child process (what ``shoal serve`` runs): the same answers as in the
server's process, back-pressure, hand-over to the job runner, and a child that dies."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from typing import Any

import pytest
from apitools import make_api  # type: ignore[import-not-found]

from lake import JobRunner, Lake, Uploads
from lake.errors import BusyError
from lake.group_process import GroupProcess
from lake.uploads import PENDING_PREFIX


def records(prefix: str, n: int) -> list[dict[str, Any]]:
    return [
        {
            "type": "IMAGE",
            "metadata": {"uri": f"s3://b/{prefix}/{i}.jpg"},
            "tags": {"batch": prefix},
            "groundtruths": [{"task_type": "CLASSIFICATION", "class_name": "cat"}],
        }
        for i in range(n)
    ]


def ndjson(rows: list[dict[str, Any]]) -> bytes:
    return b"\n".join(json.dumps(r).encode() for r in rows)


def finished(group: GroupProcess, uploads: Uploads, ids: list[str], timeout: float = 90) -> list:
    deadline = time.monotonic() + timeout
    while True:
        found = [group.lookup(i) or uploads.get(i) for i in ids]
        if all(u.status.finished for u in found) or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_the_server_answers_the_same_with_the_committer_apart(lake: Lake) -> None:
    for api in make_api(lake, group_process=True):
        health = api.client.get("/health").json()["group_commit"]
        assert health == {"process": True, "alive": True, "restarts": 0, "waiting": 0}
        first = api.post("/api/ingestion/ingest", {"records": records("a", 20)})
        assert first["status"] == "RUNNING"
        execution = api.get(f"/api/ingestion/executions/{first['id']}?wait=60")
        assert execution["status"] == "SUCCEEDED", execution
        assert execution["output"]["datapoints_created"] == 20
        assert execution["output"]["groundtruths"] == 20
        # records that update a datapoint are handed over to the job runner
        datapoint = api.post("/api/datapoints/select", {"selectColumns": ["id"]})[0]["id"]
        update = api.post(
            "/api/ingestion/ingest", {"records": [{"id": datapoint, "tags": {"reviewed": "yes"}}]}
        )
        execution = api.get(f"/api/ingestion/executions/{update['id']}?wait=60")
        assert execution["status"] == "SUCCEEDED", execution
        assert execution["output"]["datapoints_updated"] == 1
        # another organization does not see the upload
        answer = api.client.get(
            f"/api/ingestion/executions/{first['id']}", headers=api.headers(api.other_key)
        )
        assert answer.status_code == 404
    assert lake.count("datapoints") == 20
    tags = lake.read("tags", columns=["name", "value"]).to_pylist()
    assert {"name": "reviewed", "value": "yes"} in tags
    assert lake.store.list(PENDING_PREFIX) == []


def test_a_child_that_dies_is_replaced_and_nothing_is_lost_or_doubled(lake: Lake) -> None:
    uploads = Uploads(lake)
    runner = JobRunner(lake, uploads=uploads)
    group = GroupProcess(lake, fallback=runner.submit)
    group.start()
    try:
        before = [group.submit(ndjson(records(f"b{i}", 5)), organization_id="o") for i in range(5)]
        os.kill(group._process.pid, signal.SIGKILL)  # perhaps mid-commit
        after = [group.submit(ndjson(records(f"c{i}", 5)), organization_id="o") for i in range(5)]
        done = finished(group, uploads, [u.id for u in before + after])
        assert group.health()["alive"] and group.health()["restarts"] == 1
    finally:
        group.stop()
        runner.shutdown()
    assert [u.status for u in done] == ["SUCCEEDED"] * 10
    assert group.restarts == 1
    assert lake.count("datapoints") == 50  # every record once
    uris = {r["metadata"] for r in lake.read("datapoints", columns=["metadata"]).to_pylist()}
    assert len(uris) == 50


def test_uploads_wait_for_room_then_are_refused(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    uploads = Uploads(lake)
    runner = JobRunner(lake, uploads=uploads)
    group = GroupProcess(lake, fallback=runner.submit, max_queued=2, admit_wait=0.5)
    group.start()
    child = group._process.pid
    try:
        os.kill(child, signal.SIGSTOP)  # the committer makes no progress
        held = [group.submit(ndjson(records(f"d{i}", 3)), organization_id="o") for i in range(2)]
        began = time.monotonic()
        with pytest.raises(BusyError, match="waiting to be committed"):
            group.submit(ndjson(records("refused", 3)), organization_id="o")
        assert time.monotonic() - began >= 0.5
        os.kill(child, signal.SIGCONT)
        done = finished(group, uploads, [u.id for u in held])
        assert [u.status for u in done] == ["SUCCEEDED"] * 2
        late = group.submit(ndjson(records("late", 3)), organization_id="o")  # room again
        assert finished(group, uploads, [late.id])[0].status == "SUCCEEDED"
    finally:
        os.kill(child, signal.SIGCONT)
        group.stop()
        runner.shutdown()
    assert lake.count("datapoints") == 9  # the refused upload left nothing


def test_an_upload_a_dying_child_did_not_report_is_asked_of_the_lake(lake: Lake) -> None:
    uploads = Uploads(lake)
    runner = JobRunner(lake, uploads=uploads)
    group = GroupProcess(lake, fallback=runner.submit)
    group.start()
    try:
        upload = group.submit(ndjson(records("e", 4)), organization_id="o")
        assert finished(group, uploads, [upload.id])[0].status == "SUCCEEDED"
        # as if the child had committed it and deleted its marker, then stopped before its
        # report: the server still holds it RUNNING and counts it as waiting
        with group._room:
            group._open.add(upload.id)
            group._known.add(dataclasses.replace(upload))
        assert group.lookup(upload.id).status == "RUNNING"
        os.kill(group._process.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while group.lookup(upload.id) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert group.lookup(upload.id) is None  # the lake answers for it now
        assert group.health()["waiting"] == 0 and group.restarts == 1
        assert uploads.get(upload.id).status == "SUCCEEDED"
    finally:
        group.stop()
        runner.shutdown()
