"""Soak: mixed load against one server process for ten minutes (``SHOAL_TEST_SOAK_SECONDS``):
uploads, selects, SQL, dataset additions and commits and miner runs, with maintenance every
minute.

The server's memory stays flat, latency does not drift, and maintenance keeps the table files
bounded: only the files of the latest table versions and of the versions committed dataset
versions pin (their frozen reads) remain.
Deselected by default (the marker ``soak``); run it with::

    python -m pytest -m soak tests/test_soak.py -s
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import pytest
from apitools import server_process  # type: ignore[import-not-found]

import sdk
from lake import Lake
from lake.keys import ApiKeys
from lake.maintenance import maintain, pinned_versions

pytestmark = pytest.mark.soak


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def data_files(root: Path) -> int:
    return sum(1 for _ in root.glob("*/*.parquet"))


def timed(steps: dict[str, list[float]], name: str, began: float) -> float:
    now = time.monotonic()
    steps.setdefault(name, []).append(now - began)
    return now


def test_mixed_load_keeps_memory_latency_and_files_flat(tmp_path: Path) -> None:
    seconds = float(os.environ.get("SHOAL_TEST_SOAK_SECONDS", "600"))
    root = tmp_path / "lake"
    lake = Lake(str(root))
    _, key = ApiKeys(lake).create("acme")
    env = {"SHOAL_MAINTENANCE_HOURS": str(60 / 3600), "SHOAL_RETENTION_HOURS": "0"}
    samples: list[tuple[float, float, int]] = []  # (elapsed, server RSS MiB, data files)
    latencies: list[tuple[float, float]] = []  # (elapsed, seconds of one cycle)
    steps: dict[str, list[float]] = {}  # seconds of each step, in order
    with server_process(lake, **env) as (process, url), sdk.Client(url, key) as client:
        dataset = sdk.Dataset.create("soak", client=client)
        miner = sdk.EntropyMiner("soak", 20, [], "m", client=client)
        start = time.monotonic()
        cycle = 0
        while (elapsed := time.monotonic() - start) < seconds:
            began = time.monotonic()
            records = [
                {
                    "type": "IMAGE",
                    "metadata": {"uri": f"s3://soak/{cycle}/{i}.jpg"},
                    "tags": {"cycle": str(cycle)},
                    "predictions": [
                        {
                            "task_type": "CLASSIFICATION",
                            "model_name": "m",
                            "class_names": ["a", "b"],
                            "logits": [float(i % 5), 1.0],
                        }
                    ],
                }
                for i in range(200)
            ]
            step = time.monotonic()
            sdk.upload_to_lake(records, client=client, progress=False, wait=True)
            step = timed(steps, "upload", step)
            tag = [
                {"left": "tags.name", "op": "=", "right": "cycle"},
                {"left": "tags.value", "op": "=", "right": str(cycle)},
            ]
            ids = sdk.select_datapoints(tag, columns=["id"], client=client)["id"].to_list()
            assert len(ids) == 200
            step = timed(steps, "select", step)
            sdk.sql("SELECT count(*) AS n FROM predictions", client=client)
            step = timed(steps, "sql", step)
            dataset.add(ids[:20])
            step = timed(steps, "add", step)
            if cycle % 20 == 0:  # a version every ~half minute: each pins its files for good
                dataset.commit(f"cycle {cycle}")
                step = timed(steps, "commit", step)
            if cycle % 5 == 0:
                assert len(miner.run().wait(timeout=120, progress=False)) == 20
                timed(steps, "miner", step)
            latencies.append((elapsed, time.monotonic() - began))
            if not samples or elapsed - samples[-1][0] >= 10:
                samples.append((elapsed, rss_mib(process.pid), data_files(root)))
            cycle += 1
        samples.append((time.monotonic() - start, rss_mib(process.pid), data_files(root)))
    print("\nelapsed_s  server_rss_mib  data_files")
    for elapsed, rss, files in samples:
        print(f"{elapsed:9.0f}  {rss:14.0f}  {files:10d}")
    quarter = max(1, len(latencies) // 4)
    first = statistics.median(s for _, s in latencies[:quarter])
    last = statistics.median(s for _, s in latencies[-quarter:])
    print(
        f"cycles {cycle}, median cycle {first:.2f} s in the first quarter, {last:.2f} s in the last"
    )
    for name, times in steps.items():
        part = max(1, len(times) // 4)
        print(
            f"{name:8s} median {statistics.median(times[:part]):.3f} s first quarter, "
            f"{statistics.median(times[-part:]):.3f} s last quarter, max {max(times):.3f} s"
        )
    # with the server stopped, after one more maintenance: every file the latest table
    # versions and the versions committed dataset versions pin (their frozen reads) is there,
    # and nothing else but the files of the version each table had just before it
    maintain(lake, retention_hours=0)

    def files_of(table: str, versions: set[int]) -> set[str]:
        return {
            uri.rsplit("/", 1)[-1]
            for version in versions
            for uri in lake.delta.open(table, version).file_uris()
        }

    latest = lake.state().versions
    pins = pinned_versions(lake)
    on_disk = {table: {p.name for p in (root / table).glob("*.parquet")} for table in latest}
    for table, version in latest.items():
        needed = files_of(table, {version, *pins.get(table, set())})
        assert needed <= on_disk[table], f"{table}: files of a kept version are gone"
        previous = files_of(table, {version - 1} if version else set())
        extra = on_disk[table] - needed - previous
        assert not extra, f"{table}: {len(extra)} files no version needs"
    print(
        f"data files after maintenance: {sum(map(len, on_disk.values()))} "
        f"({sum(len(p) for p in pins.values())} pinned table versions)"
    )
    warm = [rss for elapsed, rss, _ in samples if elapsed >= seconds / 5]
    assert max(warm) <= 1.3 * min(warm) + 100  # flat once warm
    assert last <= 2 * first + 0.5  # no drift
    assert samples[-1][2] <= 2 * max(files for _, _, files in samples[: len(samples) // 2 + 1])
