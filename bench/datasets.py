"""Dataset benchmark: commit, checkout and frozen read of a 1M-member version.

On a lake of N datapoints (the query benchmark's lake when ``--workdir`` points at it, else one
ingested here with the generator of ``bench/ingest.py``), it creates a dataset, adds every
datapoint, and times: the commit (a new working version copied from it), a checkout of that
commit, a frozen read of all its members (every datapoint row, as of the commit), the live read,
and a diff against an empty version. Baselines in the same run: a plain ``write_deltalake`` of
the same membership rows (what a commit's copy costs at least) and a plain polars read of the
datapoints table. Peak memory is this process's high-water mark during each step.

    python bench/datasets.py --datapoints 1000000 --workdir /tmp/shoal-bench
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# run as a script, bench/ is on sys.path: the ingest benchmark's generator is a sibling
import ingest as ingest_bench
import polars as pl
import pyarrow.compute as pc
from deltalake import write_deltalake

from lake import Lake, Uploads
from lake.datasets import Datasets
from lake.query import select


def timed(label: str, fn: Callable[[], Any]) -> Any:
    ingest_bench.reset_peak_rss()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    print(f"{label:<44} {seconds:7.2f} s   peak RSS {ingest_bench.peak_rss_mib():6.0f} MiB")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datapoints", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="shoal-bench-datasets-"))
    workdir.mkdir(parents=True, exist_ok=True)
    lake = Lake(str(workdir / f"lake-{args.datapoints}"))
    if lake.count("datapoints") != args.datapoints:
        path = workdir / f"records-{args.datapoints}.ndjson"
        if not path.exists():
            ingest_bench.generate(path, args.datapoints, seed=7, embeddings=False)
        uploads = Uploads(lake)
        assert uploads.run(uploads.create(path).id).status == "SUCCEEDED"
    print(f"lake: {lake.uri}, {lake.count('datapoints'):,} datapoints")

    datasets = Datasets(lake)
    dataset = datasets.create(f"bench-{time.time_ns()}")
    ids = select(lake, "datapoints", columns=["id"]).to_arrow().column("id")
    timed(f"add {len(ids):,} datapoints", lambda: datasets.add(dataset.id, ids))
    committed = timed("commit (copies the membership)", lambda: datasets.commit(dataset.id))
    timed("checkout of that commit", lambda: datasets.checkout(dataset.id, committed.id))
    rows = timed(
        "frozen read of every member (datapoints)",
        lambda: datasets.select(committed.id, frozen=True).to_arrow().num_rows,
    )
    assert rows == len(ids)
    timed(
        "live read of every member (datapoints)", lambda: datasets.select(committed.id).to_arrow()
    )
    empty = datasets.create("empty")
    empty_version = datasets.commit(empty.id)
    diff = timed(
        "diff against an empty version", lambda: datasets.diff(empty_version.id, committed.id)
    )
    assert len(diff.added) == len(ids)

    members = lake.read("dataset_members", filter=pc.field("version") == committed.id)
    timed(
        f"raw: write_deltalake of the {members.num_rows:,} membership rows",
        lambda: write_deltalake(str(workdir / f"raw-members-{time.time_ns()}"), members),
    )
    timed(
        "raw: polars read of the datapoints table",
        lambda: pl.scan_delta(lake.location.join("datapoints")).collect(),
    )


if __name__ == "__main__":
    main()
