"""Ingestion benchmark: NDJSON file in, rows committed to the lake's Delta tables.

For each target lake (a local folder, and S3 on a SeaweedFS server started for the run) it
generates seeded synthetic records (3 tags, one classification groundtruth, one prediction with
5 logits; optionally a 512-d embedding), ingests them into a fresh lake end to end, and prints
records/s next to a raw baseline measured in the same run: a plain ``write_deltalake`` of the
very same rows, already flattened (read back from the lake), one write per table.

It then measures a 10k-record update batch (new predictions for existing datapoints, replacing
the old ones) on lakes of the requested sizes. Those lakes are filled by writing synthetic
flattened rows straight through the lake's transaction API (their shape is what matters).

    python bench/ingest.py                                  # 1M records, local and S3
    python bench/ingest.py --records 200000 --targets local --embeddings
    python bench/ingest.py --skip-ingest --update-sizes 1000000,10000000
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import random
import resource
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from deltalake import write_deltalake

from lake import Lake, S3Options, Uploads
from lake.ids import derived_ids, salt_of
from lake.memory import retain_freed_memory, status_mib
from lake.tables import SCHEMAS


def _load_s3server() -> Any:
    """The tests' SeaweedFS launcher (tests/ is not a package: load it by path)."""
    path = Path(__file__).resolve().parents[1] / "tests" / "s3server.py"
    spec = importlib.util.spec_from_file_location("shoal_bench_s3server", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


s3server = _load_s3server()

CLASSES = [f"class_{i}" for i in range(5)]
TABLES = ("datapoints", "tags", "groundtruths", "predictions", "feature_vectors")


def generate(path: Path, n: int, *, seed: int, embeddings: bool) -> None:
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    chunk = 10_000
    with open(path, "w") as out:
        for start in range(0, n, chunk):
            size = min(chunk, n - start)
            logits = nrng.normal(size=(size, 5)).round(4).tolist()
            vectors = (
                nrng.random((size, 512), dtype=np.float32).round(3).tolist() if embeddings else None
            )
            lines = []
            for i in range(size):
                index = start + i
                prediction: dict[str, Any] = {
                    "task_type": "CLASSIFICATION",
                    "model_name": "resnet50",
                    "class_names": CLASSES,
                    "logits": logits[i],
                }
                if vectors is not None:
                    prediction["embeddings"] = {"avgpool": vectors[i]}
                lines.append(
                    json.dumps(
                        {
                            "type": "IMAGE",
                            "metadata": {
                                "uri": f"s3://bucket/images/{index:08d}.jpg",
                                "width": 640,
                                "height": 480,
                            },
                            "tags": {
                                "split": rng.choice(("train", "val", "test")),
                                "source": rng.choice(("web", "camera", "partner")),
                                "camera": f"cam{index % 17}",
                            },
                            "groundtruths": [
                                {"task_type": "CLASSIFICATION", "class_name": rng.choice(CLASSES)}
                            ],
                            "predictions": [prediction],
                        }
                    )
                )
            out.write("\n".join(lines) + "\n")


def reset_peak_rss() -> None:
    """Start a new high-water mark of this process's memory (Linux: clear_refs 5)."""
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def peak_rss_mib() -> float:
    peak = status_mib("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float | None:
    """This process's memory now (Linux), which the high-water mark starts from: what earlier
    work of the same run left with the allocators counts in the peak too."""
    return status_mib("VmRSS")


def fresh_root(target: str, name: str, workdir: Path, server: Any) -> str:
    """A lake root nothing was written to: a cleared folder, or a new S3 prefix."""
    if target == "local":
        root = workdir / f"lake-{name}"
        shutil.rmtree(root, ignore_errors=True)
        return str(root)
    return f"s3://{server.bucket}/{name}-{time.time_ns()}"


def open_lake(target: str, root: str, server: Any) -> Lake:
    if target == "local":
        return Lake(root)
    assert server is not None
    options = S3Options(
        endpoint_url=server.endpoint,
        access_key_id=server.access_key,
        secret_access_key=server.secret_key,
    )
    return Lake(root, s3=options)


def bench_ingest(lake: Lake, source: Path, n: int, batch_size: int) -> dict[str, Any]:
    """End to end: the file landed in the lake (copied into its landing area, as every upload
    is), then read, parsed, planned and committed."""
    uploads = Uploads(lake, batch_size=batch_size)
    reset_peak_rss()
    before = rss_mib()
    started = time.perf_counter()
    upload = uploads.create(source)
    landed = time.perf_counter()
    upload = uploads.run(upload.id)
    elapsed = time.perf_counter() - started
    peak = peak_rss_mib()
    # helper processes parse large batches (lake.parsepool): their memory counts too (they
    # live as long as this process, so this is their peak over every run so far)
    helpers_peak = uploads.helpers.peak_rss_mib() if uploads.helpers is not None else None
    assert upload.status == "SUCCEEDED", upload.summary()
    assert upload.counts.datapoints_created == n, upload.summary()
    return {
        "seconds": elapsed,
        "records_per_s": n / elapsed,
        "landing_seconds": landed - started,
        "applying_records_per_s": n / (elapsed - (landed - started)),
        "peak_rss_mib": peak,
        "helpers_peak_rss_mib": helpers_peak,
        "rss_before_mib": before,
    }


def bench_raw(lake: Lake, raw_root: str) -> dict[str, Any]:
    """write_deltalake of the same rows, already flattened: one write per table."""
    tables = {name: lake.read(name) for name in TABLES}
    rows = sum(t.num_rows for t in tables.values())
    options = lake.location.delta_storage_options()
    started = time.perf_counter()
    for name, table in tables.items():
        write_deltalake(f"{raw_root}/{name}", table, mode="append", storage_options=options)
    elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "rows": rows}


def fill_lake(lake: Lake, n: int, *, chunk: int = 50_000) -> tuple[list[str], list[str]]:
    """Write n datapoints with 3 tags, a groundtruth and a prediction each, one commit per table
    per chunk of 50k (as ingestion writes them). Return 10k consecutive datapoint ids (one
    ingestion batch and a bit) and 10k random ones."""
    rng = np.random.default_rng(7)
    now = datetime.now(UTC)
    ms = int(now.timestamp() * 1000)
    salt = salt_of("bench-fill")
    middle = (n // 2) // chunk * chunk
    consecutive: list[str] = []
    scattered: list[str] = []
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        lines = np.arange(start + 1, start + size + 1)

        def ids(slot: int, lines: np.ndarray = lines) -> pa.Array:
            return derived_ids(ms, salt, lines, np.full(lines.size, slot))

        dp_ids = ids(0)
        tags = pa.table(
            {
                "id": pa.concat_arrays([ids(1), ids(2), ids(3)]),
                "datapoint": pa.concat_arrays([dp_ids] * 3),
                "name": pa.array(np.repeat(["split", "source", "camera"], size)),
                "value": pa.array(rng.choice(["train", "val", "web", "cam1"], 3 * size)),
            }
        )
        logits = rng.normal(size=(size, 5))
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        tables = {
            "datapoints": pa.table(
                {
                    "id": dp_ids,
                    "type": pa.array(["IMAGE"] * size),
                    "metadata": pa.array(
                        [f'{{"uri":"s3://b/{i}.jpg"}}' for i in range(start, start + size)]
                    ),
                }
            ),
            "tags": tags,
            "groundtruths": pa.table(
                {
                    "id": ids(4),
                    "datapoint": dp_ids,
                    "task_type": pa.array(["CLASSIFICATION"] * size),
                    "class_name": pa.array(rng.choice(CLASSES, size)),
                }
            ),
            "predictions": pa.table(
                {
                    "id": ids(5),
                    "datapoint": dp_ids,
                    "task_type": pa.array(["CLASSIFICATION"] * size),
                    "model_name": pa.array(["resnet50"] * size),
                    "class_name": pa.array(np.array(CLASSES)[p.argmax(axis=1)]),
                    "confidence": pa.array(p.max(axis=1)),
                    "confidences": pa.array(list(p)),
                    "class_names": pa.array([CLASSES] * size),
                }
            ),
        }
        with lake.transaction() as txn:
            for name, table in tables.items():
                txn.append(name, _complete(name, table, now))
            txn.ensure_tables()
        if start == middle:  # 10k consecutive datapoints, as one earlier upload created them
            consecutive = dp_ids.slice(size // 4, 10_000).to_pylist()
        picks = rng.integers(0, size, max(1, 10_000 * size // n))
        scattered.extend(dp_ids.take(pa.array(picks)).to_pylist())
    return consecutive, scattered


def _complete(name: str, table: pa.Table, now: datetime) -> pa.Table:
    n = table.num_rows
    columns = []
    for field in SCHEMAS[name]:
        if field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        elif field.name == "organization_id":
            columns.append(pa.array(["default"] * n))
        elif field.name == "created_at":
            columns.append(pa.array([now] * n, field.type))
        else:
            columns.append(pa.nulls(n, field.type))
    return pa.Table.from_arrays(columns, schema=SCHEMAS[name])


def bench_update(lake: Lake, datapoint_ids: list[str]) -> dict[str, Any]:
    """One upload giving each datapoint a new prediction (replacing the old one)."""
    rng = random.Random(11)
    chosen = sorted(set(datapoint_ids))
    records = "\n".join(
        json.dumps(
            {
                "id": dp,
                "predictions": [
                    {
                        "task_type": "CLASSIFICATION",
                        "model_name": "resnet50",
                        "class_names": CLASSES,
                        "logits": [rng.gauss(0, 1) for _ in range(5)],
                    }
                ],
            }
        )
        for dp in chosen
    ).encode()
    uploads = Uploads(lake, batch_size=len(chosen))
    upload = uploads.create(records)
    started = time.perf_counter()
    upload = uploads.run(upload.id)
    elapsed = time.perf_counter() - started
    assert upload.failures == 0, upload.summary()
    assert upload.counts.datapoints_updated == len(chosen)
    return {"seconds": elapsed, "records": len(chosen)}


def main() -> int:
    retain_freed_memory()  # as shoal serve and shoal ingest do
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--embeddings", action="store_true", help="add a 512-d embedding")
    parser.add_argument("--targets", default="local,s3")
    parser.add_argument("--batch-size", type=int, default=50_000)
    parser.add_argument(
        "--update-sizes", default="1000000", help="lake sizes for the update benchmark ('' to skip)"
    )
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--workdir", default=None, help="where files and local lakes go")
    args = parser.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="shoal-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    targets = [t for t in args.targets.split(",") if t]
    server = s3server.start("shoal-bench") if "s3" in targets else None
    results: list[dict[str, Any]] = []
    try:
        if not args.skip_ingest:
            source = workdir / f"records-{args.records}{'-emb' if args.embeddings else ''}.ndjson"
            if not source.exists():
                started = time.perf_counter()
                generate(source, args.records, seed=1, embeddings=args.embeddings)
                print(
                    f"generated {args.records} records ({source.stat().st_size / 2**20:.0f} "
                    f"MiB) in {time.perf_counter() - started:.1f}s",
                    file=sys.stderr,
                )
            for target in targets:
                lake = open_lake(target, fresh_root(target, "ingest", workdir, server), server)
                ours = bench_ingest(lake, source, args.records, args.batch_size)
                raw = bench_raw(lake, fresh_root(target, "raw", workdir, server))
                raw_rate = args.records / raw["seconds"]
                results.append(
                    {
                        "bench": "ingest",
                        "target": target,
                        "records": args.records,
                        "embeddings": args.embeddings,
                        "seconds": round(ours["seconds"], 2),
                        "records_per_s": round(ours["records_per_s"]),
                        "landing_seconds": round(ours["landing_seconds"], 2),
                        "applying_records_per_s": round(ours["applying_records_per_s"]),
                        "raw_write_seconds": round(raw["seconds"], 2),
                        "raw_records_per_s": round(raw_rate),
                        "fraction_of_raw": round(ours["records_per_s"] / raw_rate, 2),
                        "ingest_peak_rss_mib": round(ours["peak_rss_mib"]),
                        "parse_helper_peak_rss_mib": round(ours["helpers_peak_rss_mib"] or 0),
                        "rss_before_ingest_mib": round(ours["rss_before_mib"] or 0),
                    }
                )
                print(json.dumps(results[-1]))
        for size in [int(s) for s in args.update_sizes.split(",") if s]:
            for target in targets:
                root = fresh_root(target, f"update-{size}", workdir, server)
                lake = open_lake(target, root, server)
                started = time.perf_counter()
                consecutive, scattered = fill_lake(lake, size)
                fill = time.perf_counter() - started
                for layout, sample in (("consecutive", consecutive), ("random", scattered)):
                    update = bench_update(lake, sample)
                    results.append(
                        {
                            "bench": "update",
                            "target": target,
                            "lake_datapoints": size,
                            "update_records": update["records"],
                            "datapoints": layout,
                            "seconds": round(update["seconds"], 2),
                            "fill_seconds": round(fill, 1),
                        }
                    )
                    print(json.dumps(results[-1]))
    finally:
        if server is not None:
            server.stop()
    print(
        "\n| bench | target | size | seconds | records/s | landing (s) | records/s after landing"
        " | raw records/s | fraction |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if r["bench"] == "ingest":
            print(
                f"| ingest{' +emb' if r['embeddings'] else ''} | {r['target']} | "
                f"{r['records']:,} | {r['seconds']} | {r['records_per_s']:,} | "
                f"{r['landing_seconds']} | {r['applying_records_per_s']:,} | "
                f"{r['raw_records_per_s']:,} | {r['fraction_of_raw']} |"
            )
        else:
            print(
                f"| update {r['update_records']:,} {r['datapoints']} | {r['target']} | "
                f"{r['lake_datapoints']:,} dp | {r['seconds']} | | | | | |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
