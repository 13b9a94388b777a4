"""Storage faults: the S3 server (its own SeaweedFS process) stopped for a few seconds while an
upload runs, while requests come in and while a miner runs. Requests fail with 503 and a clear
message, the upload waits and resumes, the miner runs again, nothing half-written shows, and
everything works again once it is back."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from apitools import Api, make_api  # type: ignore[import-not-found]
from conftest import s3_lake_uri, s3_options
from s3server import S3Server
from s3server import start as start_s3_server

from lake import Lake, Uploads
from lake.miners import MinerConfig, MinerRunner, Miners, TaskStatus
from lake.miners.mine import mine, seed_of

pytestmark = pytest.mark.s3
RECORDS = 24_000
BATCH = 3_000
VECTORS = 40_000


@pytest.fixture
def weed() -> Iterator[S3Server]:
    """An S3 server of this test alone: stopping it disturbs nothing else."""
    server = start_s3_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def api(weed: S3Server) -> Iterator[Api]:
    lake = Lake(s3_lake_uri(weed), s3=s3_options(weed))
    yield from make_api(lake, batch_records=BATCH)


def records(n: int, prefix: str) -> bytes:
    return "\n".join(
        json.dumps(
            {
                "type": "IMAGE",
                "metadata": {"uri": f"s3://faults/{prefix}/{i:06d}.jpg", "note": "x" * 200},
                "tags": {"n": str(i)},
            }
        )
        for i in range(n)
    ).encode()


def error(response: Any) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["message"]


def test_an_outage_during_an_upload_and_requests(api: Api, weed: S3Server) -> None:
    assert (
        api.ingest([{"type": "IMAGE", "metadata": {"uri": "s3://faults/first.jpg"}}])["status"]
        == "SUCCEEDED"
    )
    landed = api.client.post(
        "/api/ingestion/upload",
        files={"file": ("records.ndjson", records(RECORDS, "big"))},
        headers=api.headers(),
    ).json()["url"]
    upload_id = api.post("/api/ingestion/ingest", {"url": landed})["id"]
    deadline = time.monotonic() + 60
    while (api.lake.state().progress.get(upload_id) or {}).get("lines_done", 0) < BATCH:
        assert time.monotonic() < deadline, "the first batch never committed"
        time.sleep(0.05)

    weed.stop(keep_data=True)
    try:
        status, message = error(
            api.client.post("/api/datapoints/select", json={"filters": []}, headers=api.headers())
        )
        assert status == 503 and "failed" in message, message
        status, message = error(api.client.get("/health"))
        assert status == 503 and "S3" in message
        status, message = error(
            api.client.post("/api/dataset", json={"displayName": "x"}, headers=api.headers())
        )
        assert status == 503, message
        time.sleep(3)
    finally:
        weed.restart()

    execution = api.wait(upload_id, timeout=180)
    assert execution["status"] == "SUCCEEDED", execution
    assert execution["output"]["datapoints_created"] == RECORDS
    rows = api.post("/api/datapoints/select", {"selectColumns": ["id", "metadata.uri"]})
    uris = [r["uri"] for r in rows]
    assert len(uris) == RECORDS + 1 and len(set(uris)) == RECORDS + 1  # each record once
    assert api.get("/api/dataset") == []  # the create that failed left nothing
    assert api.client.get("/health").status_code == 200
    assert api.ingest([{"type": "TEXT", "text": "after"}])["status"] == "SUCCEEDED"


def test_a_miner_run_hit_by_an_outage_runs_again_when_storage_is_back(weed: S3Server) -> None:
    lake = Lake(s3_lake_uri(weed), s3=s3_options(weed))
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(VECTORS, 32)).round(3)
    lines = (
        json.dumps(
            {
                "type": "IMAGE",
                "metadata": {"uri": f"s3://faults/v/{i}.jpg"},
                "predictions": [
                    {
                        "task_type": "CLASSIFICATION",
                        "model_name": "m",
                        "class_names": ["a", "b"],
                        "logits": [0.0, 1.0],
                        "embeddings": vectors[i].tolist(),
                    }
                ],
            }
        )
        for i in range(VECTORS)
    )
    uploads = Uploads(lake)
    assert uploads.run(uploads.create("\n".join(lines).encode()).id).status == "SUCCEEDED"
    config = MinerConfig.parse(
        {"display_name": "c", "strategy": "CORESET", "size": 1_000, "model_name": "m"}
    )
    miner = Miners(lake).create(config)
    runner = MinerRunner(lake)
    try:
        runner.run(miner.id, organization_id=None)
        deadline = time.monotonic() + 60
        while Miners(lake).get(miner.id).task.status is not TaskStatus.STARTED:
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.02)
        weed.stop(keep_data=True)
        try:
            assert runner.running(miner.id)  # the outage hit the run while it worked
            time.sleep(3)
        finally:
            weed.restart()
        done = runner.wait(miner.id, organization_id=None, timeout=180)
    finally:
        runner.shutdown()
    assert done.task.status is TaskStatus.SUCCESS, done.task.message
    expected = mine(lake, config, organization_id=None, seed=seed_of(miner.id))
    assert done.task.result == expected and len(expected) == 1_000
