"""Query benchmark: the filter language and SQL on a 1M-datapoint lake, next to plain polars.

For each target lake (a local folder, and S3 on a SeaweedFS server started for the run) it
ingests seeded synthetic records (3 tags, one groundtruth, one prediction each; the generator of
``bench/ingest.py``) and times six queries, warm (the lake object already open: Delta logs and
datasets cached) and cold (a freshly opened lake object; the OS page cache stays warm). Next to
each it times the same query written by hand in plain polars over the Delta tables, in the same
run:

(a) datapoints with tag split=val            (b) datapoints whose groundtruth class is class_3
(c) top 100 predictions by confidence, with their datapoint's uri
(d) one datapoint by id                      (e) every datapoint streamed to an NDJSON file
(f) SQL: groundtruth count grouped by class

(e) runs in a child process per side so that its peak RSS is its own.

    python bench/query.py                                   # 1M datapoints, local and S3
    python bench/query.py --datapoints 200000 --targets local --repeat 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# run as a script, bench/ is on sys.path: the ingest benchmark's generator is a sibling
import ingest as ingest_bench
import polars as pl

from lake import Lake, S3Options, Uploads
from lake.query import select, sql

SPLIT_VAL = [
    {"left": "tags.name", "op": "=", "right": "split"},
    {"left": "tags.value", "op": "=", "right": "val"},
]
CLASS_3 = [{"left": "groundtruths.class_name", "op": "=", "right": "class_3"}]
SQL_COUNT = "SELECT class_name, count(*) AS n FROM groundtruths GROUP BY class_name ORDER BY 1"


# -- Shoal's side ------------------------------------------------------------------------------
def shoal_queries(lake: Lake, some_id: str) -> dict[str, Callable[[], int]]:
    def top_predictions() -> int:
        top = select(lake, "predictions", order_by="confidence", desc=True, limit=100).to_arrow()
        ids = top.column("datapoint").to_pylist()
        uris = select(
            lake,
            "datapoints",
            filters=[{"left": "id", "op": "in", "right": ids}],
            columns=["id", "metadata.uri"],
        ).to_arrow()
        return min(top.num_rows, uris.num_rows)

    return {
        "a": lambda: select(lake, "datapoints", filters=SPLIT_VAL).to_arrow().num_rows,
        "b": lambda: select(lake, "datapoints", filters=CLASS_3).to_arrow().num_rows,
        "c": top_predictions,
        "d": lambda: (
            select(lake, "datapoints", filters=[{"left": "id", "op": "=", "right": some_id}])
            .to_arrow()
            .num_rows
        ),
        "f": lambda: sql(lake, SQL_COUNT).to_arrow().num_rows,
    }


# -- the same by hand in plain polars ----------------------------------------------------------
def raw_queries(lake: Lake, some_id: str) -> dict[str, Callable[[], int]]:
    options = lake.location.delta_storage_options()

    def scan(table: str) -> pl.LazyFrame:
        return pl.scan_delta(lake.location.join(table), storage_options=options)

    def with_child(child: pl.LazyFrame) -> int:
        ids = child.select(pl.col("datapoint").alias("id"))
        return scan("datapoints").join(ids, on="id", how="semi").sort("id").collect().height

    def top_predictions() -> int:
        top = scan("predictions").sort("confidence", descending=True).head(100).collect()
        uris = (
            scan("datapoints")
            .filter(pl.col("id").is_in(top.get_column("datapoint").implode()))
            .select("id", pl.col("metadata").str.json_path_match("$.uri").alias("uri"))
            .collect()
        )
        return min(top.height, uris.height)

    return {
        "a": lambda: with_child(
            scan("tags").filter((pl.col("name") == "split") & (pl.col("value") == "val"))
        ),
        "b": lambda: with_child(scan("groundtruths").filter(pl.col("class_name") == "class_3")),
        "c": top_predictions,
        "d": lambda: scan("datapoints").filter(pl.col("id") == some_id).collect().height,
        "f": lambda: (
            scan("groundtruths")
            .group_by("class_name")
            .agg(pl.len().alias("n"))
            .sort("class_name")
            .collect()
            .height
        ),
    }


def p50(fn: Callable[[], int], repeat: int) -> tuple[float, int]:
    times, rows = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        rows = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, rows


def cold(open_lake: Callable[[], Lake], name: str, some_id: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        lake = open_lake()
        start = time.perf_counter()
        shoal_queries(lake, some_id)[name]()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


# -- (e): a full streamed select in a child process ----------------------------------------------
STREAM_CHILD = """
import json, sys, time
from lake import Lake, S3Options
from lake.query import select, write
import polars as pl
root, s3, side, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
lake = Lake(root, s3=S3Options(**s3) if s3 else None)
start = time.perf_counter()
if side == "shoal":
    with open(out, "wb") as f:
        rows = write(select(lake, "datapoints"), f, "ndjson")
else:
    pl.scan_delta(lake.location.join("datapoints"),
                  storage_options=lake.location.delta_storage_options()).sink_ndjson(out)
    rows = -1
# VmHWM is this process's own high-water mark (ru_maxrss carries the parent's over exec)
peak = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(json.dumps({"seconds": time.perf_counter() - start, "rows": rows,
                  "peak_rss_mib": peak / 1024}))
"""


def stream_all(root: str, s3: dict[str, str] | None, side: str, workdir: Path) -> dict[str, Any]:
    out = workdir / f"all-{side}.ndjson"
    done = subprocess.run(
        [sys.executable, "-c", STREAM_CHILD, root, json.dumps(s3 or {}), side, str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["bytes"] = out.stat().st_size
    out.unlink()
    return result


def build(lake: Lake, workdir: Path, datapoints: int) -> float:
    path = workdir / f"records-{datapoints}.ndjson"
    if not path.exists():
        ingest_bench.generate(path, datapoints, seed=7, embeddings=False)
    uploads = Uploads(lake)
    start = time.perf_counter()
    upload = uploads.run(uploads.create(path).id)
    assert upload.status == "SUCCEEDED", upload.summary()
    return time.perf_counter() - start


def bench_target(target: str, args: argparse.Namespace, workdir: Path, server: Any) -> None:
    s3 = None
    if target == "local":
        root = str(workdir / f"lake-{args.datapoints}")
    else:
        root = f"s3://{server.bucket}/query-{time.time_ns()}"
        s3 = {
            "endpoint_url": server.endpoint,
            "access_key_id": server.access_key,
            "secret_access_key": server.secret_key,
        }

    def open_lake() -> Lake:
        return Lake(root, s3=S3Options(**s3) if s3 else None)

    lake = open_lake()
    if lake.count("datapoints") != args.datapoints:
        seconds = build(lake, workdir, args.datapoints)
        print(f"[{target}] ingested {args.datapoints:,} datapoints in {seconds:.1f} s")
    some_id = select(
        lake, "datapoints", columns=["id"], offset=args.datapoints // 2, limit=1
    ).to_pylist()[0]["id"]
    ours, raw = shoal_queries(lake, some_id), raw_queries(lake, some_id)
    header = ("query", "shoal warm", "raw warm", "ratio", "shoal cold", "rows")
    print(f"[{target}] {header[0]:<5} " + " ".join(f"{h:>10}" for h in header[1:]))
    for name in ours:
        ours[name](), raw[name]()  # warm up
        mine, rows = p50(ours[name], args.repeat)
        base, raw_rows = p50(raw[name], args.repeat)
        assert rows == raw_rows, f"({name}) shoal found {rows} rows, raw polars {raw_rows}"
        first = cold(open_lake, name, some_id, max(1, args.repeat // 2))
        figures = (f"{mine:.1f}ms", f"{base:.1f}ms", f"{mine / base:.2f}x", f"{first:.1f}ms")
        print(f"[{target}] ({name})   " + " ".join(f"{f:>10}" for f in figures) + f" {rows:>10,}")
    for side in ("shoal", "raw"):
        e = stream_all(root, s3, side, workdir)
        print(
            f"[{target}] (e) {side:>5}: all datapoints to NDJSON in {e['seconds']:.2f} s, "
            f"{e['bytes'] / 2**20:.0f} MiB, peak RSS {e['peak_rss_mib']:.0f} MiB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datapoints", type=int, default=1_000_000)
    parser.add_argument("--targets", default="local,s3")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keeps the local lake between runs"
    )
    args = parser.parse_args()
    targets = args.targets.split(",")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="shoal-bench-query-"))
    workdir.mkdir(parents=True, exist_ok=True)
    server = ingest_bench.s3server.start("shoal-bench") if "s3" in targets else None
    try:
        for target in targets:
            bench_target(target, args, workdir, server)
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
