"""Embedding text: what turning 512-d vectors written as JSON numbers into doubles costs.

An embedding record of the ingest benchmark (``bench/ingest.py --embeddings``) is ~10 KiB of
JSON, nearly all of it the 512 numbers of its vector. This benchmark generates the same records
(same recipe and seed), reads them in the batches an upload reads, and measures on the same
text, CPU time and wall time:

- **ours**: the native planning of a batch (:func:`lake.columnar.plan_batch`: Arrow's parse of
  the text with the vectors cut out, the vectors parsed apart, the rows planned), and within it
  the cut and parse of the vectors alone (:func:`lake.vectortext.cut`);
- **baselines**, number parsing alone on the vector bodies, with nothing else to do: Polars'
  NDJSON reader (``list[f64]``), Arrow's CSV reader (512 ``float64`` columns) and orjson.

The baselines are the floor of any ingest that reads these numbers from text: the report gives
the records/s that number parsing alone allows on the machine's cores.

    python bench/vectors.py --records 20000
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.csv as pcsv

from lake.batch import IdSource
from lake.columnar import plan_batch
from lake.memory import retain_freed_memory
from lake.ndjson import read_batches
from lake.vectortext import cut

DIM = 512


def generate(n: int, seed: int = 1) -> bytes:
    """``n`` embedding records as NDJSON, written by ``bench/ingest.py``'s own generator."""
    path = Path(__file__).with_name("ingest.py")
    spec = importlib.util.spec_from_file_location("shoal_bench_ingest", path)
    assert spec is not None and spec.loader is not None
    ingest = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = ingest
    spec.loader.exec_module(ingest)
    with tempfile.TemporaryDirectory(prefix="shoal-vectors-") as workdir:
        source = Path(workdir) / "records.ndjson"
        ingest.generate(source, n, seed=seed, embeddings=True)
        return source.read_bytes()


def measure(name: str, work: Callable[[], Any], n: int, size: int, runs: int) -> dict[str, Any]:
    """The best of ``runs`` (by wall time) of ``work``, over ``n`` records of ``size`` bytes."""
    best: tuple[float, float] | None = None
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        work()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if best is None or wall < best[0]:
            best = (wall, cpu)
    assert best is not None
    wall, cpu = best
    return {
        "bench": "vectors",
        "what": name,
        "records": n,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "cpu_us_per_record": round(cpu / n * 1e6, 1),
        "mb_per_cpu_s": round(size / cpu / 1e6, 1),
        # what this step alone allows when it has every core to itself
        "records_per_s_on_all_cores": round(n / cpu * (os.cpu_count() or 1)),
    }


def main() -> int:
    retain_freed_memory()  # as shoal serve and shoal ingest do
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=50_000, help="lines per batch")
    parser.add_argument("--runs", type=int, default=3, help="best of this many")
    args = parser.parse_args()

    text = generate(args.records)
    batches = list(read_batches(io.BytesIO(text), batch_lines=args.batch_size))
    n = args.records
    now = datetime.now(UTC)
    source = IdSource(int(now.timestamp() * 1000), 1)

    def plan_all() -> None:
        for batch in batches:
            result = plan_batch(batch, organization_id="bench", id_source=source, now=now)
            assert result is not None and not result[1], "the batch left the native path"

    def cut_all() -> None:
        for batch in batches:
            assert cut(batch.data) is not None

    # the vector bodies of the same text, alone, as the baselines read them
    bodies = re.findall(rb'"avgpool": \[([^\]]*)\]', text)
    assert len(bodies) == n
    body_size = sum(len(b) for b in bodies)
    wrapped = b"".join(p for b in bodies for p in (b'{"v":[', b, b"]}\n"))
    rows = b"\n".join(bodies) + b"\n"
    array = b"[" + b",".join(b"[" + b + b"]" for b in bodies) + b"]"
    csv_options = pcsv.ConvertOptions(column_types={f"f{i}": pa.float64() for i in range(DIM)})
    csv_read = pcsv.ReadOptions(autogenerate_column_names=True, block_size=1 << 24)

    results = [
        measure("ours: plan the batches (native path)", plan_all, n, len(text), args.runs),
        measure("ours: cut and parse the vectors", cut_all, n, len(text), args.runs),
        measure(
            "floor: Polars NDJSON list[f64]",
            lambda: pl.read_ndjson(io.BytesIO(wrapped), schema={"v": pl.List(pl.Float64)}),
            n,
            body_size,
            args.runs,
        ),
        measure(
            "floor: Arrow CSV, 512 float64 columns",
            lambda: pcsv.read_csv(
                io.BytesIO(rows), read_options=csv_read, convert_options=csv_options
            ),
            n,
            body_size,
            args.runs,
        ),
        measure("floor: orjson", lambda: orjson.loads(array), n, body_size, args.runs),
    ]
    for result in results:
        print(json.dumps(result))
    print(
        f"\n{n:,} records, {len(text) / n / 1024:.1f} KiB each, "
        f"{body_size / len(text):.0%} of the text in vector bodies; {os.cpu_count()} cores\n"
    )
    print("| step | CPU µs / record | MB / CPU-s | records/s on all cores, this step alone |")
    print("|---|---|---|---|")
    for r in results:
        print(
            f"| {r['what']} | {r['cpu_us_per_record']} | {r['mb_per_cpu_s']} | "
            f"{r['records_per_s_on_all_cores']:,} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
