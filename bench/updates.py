"""Small update uploads: model outputs for datapoints already in the lake, grouped or not.

Inference workers send a model's new predictions for existing datapoints in small uploads. This
benchmark fills a fresh local lake with ``--datapoints`` datapoints (one classification
prediction each), then submits ``--uploads`` uploads of 100 records (each a new prediction of
the same model for one of those datapoints, replacing the old one) all at once, and reports
records/s until every upload is SUCCEEDED:

- grouped: through :class:`lake.groups.GroupCommitter` (what the server does with small
  uploads), in-process, no HTTP;
- ordinary (the baseline of the same run): each upload run as its own job by
  :class:`lake.JobRunner`.

    python bench/updates.py --datapoints 200000 --uploads 160
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from lake import JobRunner, Lake, Uploads
from lake.groups import GroupCommitter
from lake.memory import retain_freed_memory


def prediction(rng: random.Random) -> dict[str, Any]:
    return {
        "task_type": "CLASSIFICATION",
        "model_name": "resnet50",
        "logits": [rng.gauss(0, 1) for _ in range(5)],
    }


def fill(lake: Lake, n: int) -> list[str]:
    rng = random.Random(3)
    records = (json.dumps({"type": "IMAGE", "predictions": [prediction(rng)]}) for _ in range(n))
    uploads = Uploads(lake)
    upload = uploads.run(uploads.create("\n".join(records).encode()).id)
    assert upload.failures == 0, upload.summary()
    return sorted(lake.read("datapoints", columns=["id"]).column("id").to_pylist())


def payloads(datapoints: list[str], count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for k in range(count):
        chosen = datapoints[k * 100 : (k + 1) * 100]
        lines = [json.dumps({"id": d, "predictions": [prediction(rng)]}) for d in chosen]
        out.append("\n".join(lines).encode())
    return out


def run(lake: Lake, data: list[bytes], *, grouped: bool) -> dict[str, Any]:
    uploads = Uploads(lake)
    runner = JobRunner(lake, uploads=uploads)
    group = GroupCommitter(uploads, fallback=runner.submit)
    if grouped:
        group.start()
    try:
        started = time.perf_counter()
        ids = []
        for payload in data:
            if grouped:
                ids.append(group.submit(payload, organization_id="default").id)
            else:
                upload = uploads.create(payload)
                runner.submit(upload.id)
                ids.append(upload.id)
        while True:
            found = [uploads.get(upload_id) for upload_id in ids]
            if all(u.status.finished for u in found):
                break
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
    finally:
        group.stop()
        runner.shutdown()
    assert all(u.status == "SUCCEEDED" and u.counts.datapoints_updated == 100 for u in found)
    return {"seconds": elapsed, "records_per_s": 100 * len(data) / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datapoints", type=int, default=200_000)
    parser.add_argument("--uploads", type=int, default=160, help="100-record update uploads")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    assert args.uploads * 100 <= args.datapoints, "each upload updates its own datapoints"
    retain_freed_memory()
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        lake = Lake(str(Path(workdir) / "lake"))
        datapoints = fill(lake, args.datapoints)
        results = {}
        for seed, grouped in enumerate((True, False)):
            name = "grouped" if grouped else "ordinary"
            results[name] = run(lake, payloads(datapoints, args.uploads, seed), grouped=grouped)
            print(json.dumps({"bench": "small update uploads", "path": name, **results[name]}))
        ratio = results["grouped"]["records_per_s"] / results["ordinary"]["records_per_s"]
        print(
            f"\n| lake datapoints | uploads x 100 records | grouped (records/s) | "
            f"ordinary jobs (records/s) | grouped / ordinary |\n|---|---|---|---|---|\n"
            f"| {args.datapoints:,} | {args.uploads} | "
            f"{results['grouped']['records_per_s']:,.0f} | "
            f"{results['ordinary']['records_per_s']:,.0f} | {ratio:.1f} |"
        )


if __name__ == "__main__":
    main()
