"""Group-commit benchmark: does a long run of small commits slow down?

A server group-commits small requests: every group adds a file to each table it writes, and a
Delta commit costs time in proportion to a table's files. This benchmark commits ``--groups``
groups of ``--uploads`` 100-record uploads each through :class:`lake.groups.GroupCommitter`
on a fresh local lake (no HTTP, one thread), and prints the median commit time of the first and
the last 50 groups, with small files merged as the lake does it (``lake.maintenance``) and,
with ``--no-merge``, without. The raw baseline of the same run: a plain ``write_deltalake``
append of each group's rows (read back from the lake) to a fresh table per lake table, one
commit per table per group, nothing merged.

    python bench/groups.py --groups 600 --uploads 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from deltalake import DeltaTable, write_deltalake

from lake import Lake, Uploads
from lake import maintenance as maintenance_module
from lake.groups import GroupCommitter
from lake.memory import retain_freed_memory

TABLES = ("datapoints", "tags", "groundtruths", "uploads")


def upload_data(group: int, upload: int, size: int = 100) -> bytes:
    return b"\n".join(
        json.dumps(
            {
                "type": "IMAGE",
                "metadata": {"uri": f"s3://bench/{group}/{upload}/{i}.jpg", "width": 640},
                "tags": {"client": str(upload), "split": ("train", "val")[i % 2]},
                "groundtruths": [{"task_type": "CLASSIFICATION", "class_name": f"c{i % 5}"}],
            }
        ).encode()
        for i in range(size)
    )


def ours(workdir: Path, groups: int, uploads: int, *, merge: bool) -> list[float]:
    """Commit time of each group (and, with ``merge``, of the small-file merge after it)."""
    lake = Lake(str(workdir / ("merged" if merge else "unmerged")))
    committer = GroupCommitter(
        Uploads(lake), fallback=lambda _: None, max_queued=10**6, max_queued_bytes=2**40
    )
    times = []
    for g in range(groups):
        # (the worker is not started: each group is committed here, in the loop)
        group = [
            committer.submit(upload_data(g, u), organization_id="bench") for u in range(uploads)
        ]
        start = time.perf_counter()
        committer.commit(group)
        if merge:
            maintenance_module.tidy(lake)
        times.append(time.perf_counter() - start)
    files = {t: lake.delta.file_count(t, lake.state().versions[t]) for t in TABLES}
    print(json.dumps({"merge": merge, "files_at_end": files}))
    return times


def raw(workdir: Path, source: Lake, groups: int) -> list[float]:
    """``write_deltalake`` of each group's rows, read back from ``source`` (group by group)."""
    rows = {t: source.read(t) for t in TABLES}
    per_group = {t: rows[t].num_rows // groups for t in TABLES}
    targets: dict[str, Any] = {}
    times = []
    for g in range(groups):
        parts = {t: rows[t].slice(g * per_group[t], per_group[t]) for t in TABLES}
        start = time.perf_counter()
        for table, part in parts.items():
            uri = str(workdir / "raw" / table)
            if table not in targets:
                write_deltalake(uri, part)
                targets[table] = DeltaTable(uri)
            else:
                write_deltalake(targets[table], part, mode="append")
        times.append(time.perf_counter() - start)
    return times


def summary(name: str, times: list[float], uploads: int) -> dict[str, Any]:
    first, last = statistics.median(times[:50]), statistics.median(times[-50:])
    return {
        "what": name,
        "groups": len(times),
        "first_50_median_ms": round(first * 1000, 1),
        "last_50_median_ms": round(last * 1000, 1),
        "last_50_max_ms": round(max(times[-50:]) * 1000, 1),
        "records_per_s_last_50": round(uploads * 100 / last),
    }


def main() -> None:
    retain_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--groups", type=int, default=600)
    parser.add_argument("--uploads", type=int, default=10, help="100-record uploads per group")
    parser.add_argument("--no-merge", action="store_true", help="also run without merging")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    if args.groups < 100:
        parser.error("--groups: at least 100 (the first and the last 50 are compared)")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="shoal-bench-groups-"))
    times = ours(workdir, args.groups, args.uploads, merge=True)
    print(json.dumps(summary("group commit, small files merged", times, args.uploads)))
    if args.no_merge:
        times = ours(workdir, args.groups, args.uploads, merge=False)
        print(json.dumps(summary("group commit, nothing merged", times, args.uploads)))
    source = Lake(str(workdir / "merged"))
    times = raw(workdir, source, args.groups)
    print(json.dumps(summary("raw write_deltalake per table", times, args.uploads)))


if __name__ == "__main__":
    main()
