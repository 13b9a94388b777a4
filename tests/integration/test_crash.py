"""Crash safety: the server, as its own process on the S3 lake, killed with SIGKILL at chosen
points (``SHOAL_CRASH_AT``, see lake/faults.py), then restarted. Uploads end SUCCEEDED with
every record exactly once, a dataset commit is all or nothing, a miner run resumes to the same
result, and every table stays readable."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
from apitools import server_process  # type: ignore[import-not-found]
from conftest import s3_lake_uri, s3_options
from s3server import S3Server

import sdk
from lake import Lake
from lake.keys import ApiKeys
from lake.miners import Miners, mine, seed_of
from lake.tables import TABLE_NAMES

pytestmark = pytest.mark.s3
RECORDS = 12_000
# four batches per upload; a killed writer's lock frees itself quickly
ENV = {"SHOAL_BATCH_RECORDS": "3000", "SHOAL_LOCK_LEASE_SECONDS": "3"}


def killed(process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Wait for the process to kill itself at its crash point."""
    assert process.wait(timeout=timeout) == -signal.SIGKILL


@pytest.fixture
def s3_lake(s3_server: S3Server) -> tuple[Lake, str]:
    lake = Lake(s3_lake_uri(s3_server), s3=s3_options(s3_server))
    _, key = ApiKeys(lake).create("acme")
    return lake, key


def write_records(path: Path, n: int, *, start: int = 0) -> Path:
    with open(path, "w") as out:
        for i in range(start, start + n):
            record = {
                "type": "IMAGE",
                "metadata": {"uri": f"s3://crash/{i:06d}.jpg", "note": "x" * 300},
                "tags": {"n": str(i), "split": "pool"},
                "predictions": [
                    {
                        "task_type": "CLASSIFICATION",
                        "model_name": "m",
                        "class_names": ["a", "b"],
                        "logits": [float(i % 7), 1.0],
                        "embeddings": {"layer": [float(i % 97), float(i % 89), 1.0]},
                    }
                ],
            }
            out.write(json.dumps(record) + "\n")
    return path


def assert_exactly_once(lake: Lake, n: int) -> None:
    for table in TABLE_NAMES:  # every table reads
        lake.read(table)
    datapoints = lake.read("datapoints").to_pylist()
    uris = [json.loads(d["metadata"])["uri"] for d in datapoints]
    assert len(datapoints) == n and len(set(uris)) == n  # no record lost, none twice
    assert len({d["id"] for d in datapoints}) == n
    assert lake.count("tags") == 2 * n and lake.count("predictions") == n
    assert lake.count("feature_vectors") == 2 * n  # the logits and the layer's embedding


@pytest.mark.parametrize(
    "crash_at",
    [
        "upload.parsed:2",  # while parsing: the first batch committed, the second parsed
        "table.committed:6",  # between the table commits of the second batch
        "state.publish:3",  # while recording the batch's state (its progress and tables)
    ],
)
def test_an_upload_killed_mid_way_ends_exactly_once(
    s3_server: S3Server, s3_lake: tuple[Lake, str], tmp_path: Path, crash_at: str
) -> None:
    lake, key = s3_lake
    source = write_records(tmp_path / "records.ndjson", RECORDS)
    with server_process(lake, s3_server, crash_at=crash_at, **ENV) as (process, url):
        with sdk.Client(url, key, retries=0) as client:
            upload = sdk.upload_to_lake(source, client=client, progress=False)
        killed(process)
    with server_process(lake, s3_server, **ENV) as (_, url), sdk.Client(url, key) as client:
        execution = sdk.Upload(upload.id, client).wait(timeout=180)
    assert execution["status"] == "SUCCEEDED"
    assert execution["output"]["datapoints_created"] == RECORDS
    assert_exactly_once(lake, RECORDS)


def test_a_dataset_commit_killed_mid_way_is_all_or_nothing(
    s3_server: S3Server, s3_lake: tuple[Lake, str], tmp_path: Path
) -> None:
    lake, key = s3_lake
    n = 2_000
    source = write_records(tmp_path / "records.ndjson", n)
    with server_process(lake, s3_server, **ENV) as (_, url), sdk.Client(url, key) as client:
        sdk.upload_to_lake(source, client=client, progress=False, wait=True)
        dataset = sdk.Dataset.create("crash", client=client)
        ids = sdk.select_datapoints([], columns=["id"], client=client)["id"].to_list()
        assert dataset.add(ids) == n
    # the first table commit of the new process is the commit's: die right after it
    with server_process(lake, s3_server, **ENV, crash_at="table.committed:1") as (process, url):
        with sdk.Client(url, key, retries=0) as client, pytest.raises(sdk.ShoalError):
            sdk.Dataset.get(dataset.id, client=client).commit("interrupted")
        killed(process)
    for table in TABLE_NAMES:
        lake.read(table)
    with server_process(lake, s3_server, **ENV) as (_, url), sdk.Client(url, key) as client:
        again = sdk.Dataset.get(dataset.id, client=client)
        history = again.history()
        assert [v["committed"] for v in history] == [False]  # nothing of the commit is visible
        assert len(again.download_datapoints()) == n  # the working version is intact
        commit = again.commit("second try")
        assert [v["committed"] for v in again.history()] == [False, True]
        assert len(again.read_version(commit, frozen=True)) == n


def test_a_miner_run_killed_mid_way_resumes_to_the_same_result(
    s3_server: S3Server, s3_lake: tuple[Lake, str], tmp_path: Path
) -> None:
    lake, key = s3_lake
    n = 2_000
    source = write_records(tmp_path / "records.ndjson", n)
    with server_process(lake, s3_server, **ENV) as (_, url), sdk.Client(url, key) as client:
        sdk.upload_to_lake(source, client=client, progress=False, wait=True)
        miner = sdk.CoresetMiner("crash", 300, [], "m:layer", client=client)
    with server_process(lake, s3_server, **ENV, crash_at="miner.pick:100") as (process, url):
        with sdk.Client(url, key, retries=0) as client:
            sdk.Miner.get(miner.id, client=client).run()
        killed(process)
    assert Miners(lake).get(miner.id).task.status == "STARTED"  # left as it was
    with server_process(lake, s3_server, **ENV) as (_, url), sdk.Client(url, key) as client:
        picked = sdk.Miner.get(miner.id, client=client).wait(timeout=120, progress=False)
    stored = Miners(lake).get(miner.id)
    expected = mine(lake, stored.config, organization_id="acme", seed=seed_of(miner.id))
    assert picked == expected and len(set(picked)) == 300
