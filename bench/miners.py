"""Miner benchmark: CORESET, NEAREST_NEIGHBORS and ACTIVATION over a pool of 512-d embeddings,
ENTROPY and RANDOM over a million predictions. Seconds and peak memory of each run.

Lakes (kept in ``--workdir`` between runs):

* ``vectors-N``: N datapoints, each with one 512-d EMBEDDINGS vector of ``resnet50:avgpool``
  (a mixture of 64 gaussians, stored as ingestion stores them: float16-rounded float32 lists),
  written straight through the lake's transaction API in chunks of 50k (the shape is what
  matters, not how it got there);
* ``lake-M``: M records ingested with the generator of ``bench/ingest.py`` (one prediction with
  5 logits each, so one entropy per datapoint): the query benchmark's lake when ``--workdir``
  points at it.

Each miner run is ``lake.miners.mine`` (what the server's job runs), from the candidate select
to the ids. Baselines in the same run: reading the same vectors with plain polars into one
float32 matrix, a textbook k-center greedy over that matrix (one full distance pass per pick,
float32 matrix-vector products), and a plain polars top-k of the entropy metric.

    python bench/miners.py --workdir /tmp/shoal-bench
    python bench/miners.py --pool 50000 --predictions 100000 --picks 200   # quick
    python bench/miners.py --pool 1000000 --strategies CORESET --skip-baselines
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# run as a script, bench/ is on sys.path: the ingest benchmark's helpers are a sibling
import ingest as ingest_bench
import numpy as np
import polars as pl
import pyarrow as pa

from lake import Lake, Uploads
from lake.ids import derived_ids, salt_of
from lake.miners import MinerConfig, mine

DIM = 512
MODEL = "resnet50:avgpool"
CHOSEN: set[str] = set()  # the strategies to run (--strategies)


def timed(label: str, fn: Callable[[], Any]) -> tuple[Any, float, float]:
    ingest_bench.reset_peak_rss()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    peak = ingest_bench.peak_rss_mib()
    print(f"{label:<58} {seconds:8.2f} s   peak RSS {peak:6.0f} MiB", flush=True)
    return result, seconds, peak


def fill_vectors(lake: Lake, n: int, *, chunk: int = 50_000) -> None:
    rng = np.random.default_rng(11)
    centres = rng.normal(size=(64, DIM)).astype(np.float32)
    now = datetime.now(UTC)
    ms = int(now.timestamp() * 1000)
    salt = salt_of("bench-miners")
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        lines = np.arange(start + 1, start + size + 1)
        dp_ids = derived_ids(ms, salt, lines, np.zeros(size, dtype=np.int64))
        noise = rng.normal(scale=0.6, size=(size, DIM)).astype(np.float32)
        values = (centres[rng.integers(64, size=size)] + noise).astype(np.float16)
        flat = pa.array(values.astype(np.float32).reshape(-1))
        offsets = pa.array(np.arange(size + 1, dtype=np.int32) * DIM)
        tables = {
            "datapoints": pa.table({"id": dp_ids, "type": pa.array(["IMAGE"] * size)}),
            "feature_vectors": pa.table(
                {
                    "id": derived_ids(ms, salt, lines, np.full(size, 2, dtype=np.int64)),
                    "type": pa.array(["EMBEDDINGS"] * size),
                    "prediction": derived_ids(ms, salt, lines, np.ones(size, dtype=np.int64)),
                    "datapoint": dp_ids,
                    "model_name": pa.array([MODEL] * size),
                    "value": pa.ListArray.from_arrays(offsets, flat),
                    "shape": pa.array([[DIM]] * size, pa.list_(pa.int32())),
                }
            ),
        }
        with lake.transaction() as txn:
            for name, table in tables.items():
                txn.append(name, ingest_bench._complete(name, table, now))


def vector_lake(workdir: Path, n: int) -> Lake:
    lake = Lake(str(workdir / f"vectors-{n}"))
    if lake.count("feature_vectors") != n:
        timed(f"fill {n:,} datapoints with 512-d embeddings", lambda: fill_vectors(lake, n))
    return lake


def prediction_lake(workdir: Path, m: int) -> Lake:
    lake = Lake(str(workdir / f"lake-{m}"))
    if lake.count("predictions") != m:
        path = workdir / f"records-{m}.ndjson"
        if not path.exists():
            ingest_bench.generate(path, m, seed=7, embeddings=False)
        uploads = Uploads(lake)
        assert uploads.run(uploads.create(path).id).status == "SUCCEEDED"
    return lake


def run_miner(lake: Lake, label: str, **payload: Any) -> tuple[list[str], float, float] | None:
    if payload["strategy"] not in CHOSEN:
        return None
    config = MinerConfig.parse({"display_name": label, "select": {"filters": []}, **payload})
    result, seconds, peak = timed(
        label, lambda: mine(lake, config, organization_id="default", seed=1)
    )
    assert len(result) == payload["size"], (label, len(result))
    return result, seconds, peak


def raw_vectors(lake: Lake) -> np.ndarray:
    """Plain polars: the feature_vectors table's values as one float32 matrix."""
    uri = lake.uri
    values = pl.scan_delta(uri + "/feature_vectors").select("value").collect()
    return np.asarray(values.get_column("value").list.to_array(DIM).to_numpy(), dtype=np.float32)


def textbook_k_center(points: np.ndarray, size: int) -> list[int]:
    """k-center greedy with one full distance pass per pick (float32 matrix-vector products)."""
    sq = np.einsum("ij,ij->i", points, points)
    first = 0
    picked = [first]
    best = sq + sq[first] - 2 * (points @ points[first])
    for _ in range(size - 1):
        choice = int(np.argmax(best))
        picked.append(choice)
        np.minimum(best, sq + sq[choice] - 2 * (points @ points[choice]), out=best)
    return picked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool", type=int, default=200_000, help="datapoints with embeddings")
    parser.add_argument("--predictions", type=int, default=1_000_000)
    parser.add_argument("--picks", type=int, default=1_000, help="the miners' size")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--skip-baselines", action="store_true")
    parser.add_argument(
        "--strategies",
        default="CORESET,NEAREST_NEIGHBORS,ACTIVATION,ENTROPY,RANDOM",
        help="which miners to run (comma-separated)",
    )
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="shoal-bench-miners-"))
    workdir.mkdir(parents=True, exist_ok=True)
    k = args.picks
    CHOSEN.update(args.strategies.upper().split(","))

    vectors = vector_lake(workdir, args.pool)
    print(f"lake {vectors.uri}: {vectors.count('feature_vectors'):,} 512-d embeddings")
    run_miner(
        vectors, f"CORESET {k:,} of {args.pool:,}", strategy="CORESET", size=k, model_name=MODEL
    )
    run_miner(
        vectors,
        f"CORESET {k:,} of {args.pool:,}, cosine",
        strategy="CORESET",
        size=k,
        model_name=MODEL,
        metric="cosine",
    )
    reference = {"filters": [], "limit": 1_000, "order_by": "id", "desc": True}
    run_miner(
        vectors,
        f"NEAREST_NEIGHBORS {k:,} of {args.pool:,} (1,000 references)",
        strategy="NEAREST_NEIGHBORS",
        size=k,
        model_name=MODEL,
        select_reference=reference,
    )
    run_miner(
        vectors,
        f"ACTIVATION {k:,} of {args.pool:,}",
        strategy="ACTIVATION",
        size=k,
        model_name=MODEL,
    )
    if not args.skip_baselines and "CORESET" in CHOSEN:
        points, _, _ = timed(
            "baseline: plain polars read of the vectors (float32)", lambda: raw_vectors(vectors)
        )
        timed(
            f"baseline: textbook k-center greedy, {k:,} picks (float32)",
            lambda: textbook_k_center(points, k),
        )
        del points

    if not CHOSEN & {"ENTROPY", "RANDOM"}:
        return
    predictions = prediction_lake(workdir, args.predictions)
    print(f"lake {predictions.uri}: {predictions.count('predictions'):,} predictions")
    run_miner(
        predictions,
        f"ENTROPY {k:,} of {args.predictions:,} predictions",
        strategy="ENTROPY",
        size=k,
        model_name="resnet50",
    )
    run_miner(
        predictions, f"RANDOM {k:,} of {args.predictions:,} datapoints", strategy="RANDOM", size=k
    )
    if not args.skip_baselines:

        def raw_entropy() -> list[str]:
            return (
                pl.scan_delta(predictions.uri + "/predictions")
                .select(
                    "datapoint",
                    pl.col("metrics")
                    .str.json_path_match("$.entropy")
                    .cast(pl.Float64)
                    .alias("score"),
                )
                .top_k(k, by="score")
                .collect()
                .get_column("datapoint")
                .to_list()
            )

        timed("baseline: plain polars top-k of metrics.entropy", raw_entropy)


if __name__ == "__main__":
    main()
