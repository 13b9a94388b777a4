"""Export a dataset version, live or frozen, as Parquet tables or as ingestion NDJSON.

- **Parquet**: a folder with one file per table (``datapoints.parquet``, ``tags.parquet``,
  ``groundtruths.parquet``, ``predictions.parquet``, ``bboxes.parquet``, ``lanes.parquet``,
  ``completions.parquet``, ``feature_vectors.parquet``), holding the rows of the version's
  datapoints with the lake's schemas. Streamed table by table.
- **NDJSON**: one ingestion record per datapoint (the format ``shoal ingest`` reads), without
  ids, so that ingesting the file into another lake recreates the same datapoints, tags,
  groundtruths, predictions, boxes, lanes, completions and vectors. Predictions that were sent
  as logits are exported as their logits (the derived values are computed again); masks are
  exported decoded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import orjson
import polars as pl

from lake.datasets import Datasets
from lake.encoding import decode_npy
from lake.errors import InputError
from lake.query.select import Scope
from lake.tables import DATA_TABLES

ExportFormat = Literal["parquet", "ndjson"]
EXPORT_TABLES = DATA_TABLES
_CHUNK = 20_000  # datapoints turned into records at a time
_BOX = ("top", "left", "height", "width")

Progress = Callable[[int], None]


def export(
    datasets: Datasets,
    version_id: str,
    path: str | os.PathLike[str],
    *,
    format: ExportFormat = "parquet",
    frozen: bool = False,
    progress: Progress | None = None,
) -> int:
    """Write version ``version_id`` to ``path``; return the number of datapoints written.

    ``frozen`` exports the rows as they were at the version's commit (committed versions only).
    ``progress`` is called with the number of datapoints written so far.
    """
    scope = _scope(datasets, version_id, frozen)
    if format == "parquet":
        return _parquet(scope, Path(path), progress)
    if format == "ndjson":
        with open(path, "wb") as out:
            return write_records(scope, out, progress)
    raise InputError(f"unknown export format {format!r} (formats: parquet, ndjson)")


def _scope(datasets: Datasets, version_id: str, frozen: bool) -> Scope:
    version = datasets.version(version_id)
    state = None
    if frozen:
        if version.lake_state is None:
            raise InputError(f"version {version.id} is not committed: it cannot be read frozen")
        state = version.lake_state
    return Scope(
        datasets.lake,
        state=state,
        organization_id=datasets.organization_id,
        dataset_version=version.id,
    )


def _members(scope: Scope) -> pl.LazyFrame:
    return (
        scope.scan("dataset_members", where=pl.col("version") == scope.dataset_version)
        .select(pl.col("datapoint").alias("_member"))
        .unique()
    )


def _rows_of(scope: Scope, table: str) -> pl.LazyFrame:
    key = "id" if table == "datapoints" else "datapoint"
    return scope.scan(table).join(_members(scope), left_on=key, right_on="_member", how="semi")


def _parquet(scope: Scope, folder: Path, progress: Progress | None) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for table in EXPORT_TABLES:
        frame = _rows_of(scope, table)
        if table == "datapoints":
            frame = frame.sort("id")
        frame.sink_parquet(folder / f"{table}.parquet")
        if table == "datapoints":
            count = pl.scan_parquet(folder / "datapoints.parquet").select(pl.len()).collect().item()
            if progress is not None:
                progress(count)
    return count


# -- NDJSON records ------------------------------------------------------------------------------
def write_records(scope: Scope, out: BinaryIO, progress: Progress | None = None) -> int:
    count = 0
    for records in _record_chunks(scope):
        out.write(b"".join(orjson.dumps(r) + b"\n" for r in records))
        count += len(records)
        if progress is not None:
            progress(count)
    return count


def _record_chunks(scope: Scope) -> Iterator[list[dict[str, Any]]]:
    ids = _rows_of(scope, "datapoints").select("id").sort("id").collect().get_column("id")
    for start in range(0, len(ids), _CHUNK):
        chunk = ids.slice(start, _CHUNK)
        yield _records(scope, chunk)


def _grouped(scope: Scope, table: str, ids: pl.Series, key: str) -> dict[str, list[dict[str, Any]]]:
    column = "id" if table == "datapoints" else "datapoint"
    rows = (
        scope.scan(table)
        .filter(pl.col(column).is_between(pl.lit(ids.min()), pl.lit(ids.max())))
        .join(ids.to_frame(column).lazy(), on=column, how="semi")
        .sort("id")
        .collect()
    )
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows.iter_rows(named=True):
        if row.get(key) is not None:
            grouped.setdefault(row[key], []).append(row)
    return grouped


def _records(scope: Scope, ids: pl.Series) -> list[dict[str, Any]]:
    datapoints = _grouped(scope, "datapoints", ids, "id")
    tags = _grouped(scope, "tags", ids, "datapoint")
    groundtruths = _grouped(scope, "groundtruths", ids, "datapoint")
    predictions = _grouped(scope, "predictions", ids, "datapoint")
    children = {
        (kind, owner): _grouped(scope, kind, ids, owner)
        for kind in ("bboxes", "lanes", "completions")
        for owner in ("prediction", "groundtruth")
    }
    vectors = _grouped(scope, "feature_vectors", ids, "prediction")
    records = []
    for datapoint_id in ids.to_list():
        (row,) = datapoints[datapoint_id]
        record: dict[str, Any] = {"type": row["type"]}
        if row["metadata"] is not None:
            record["metadata"] = json.loads(row["metadata"])
        if row["text"] is not None:
            record["text"] = row["text"]
        if datapoint_id in tags:
            record["tags"] = {t["name"]: t["value"] for t in tags[datapoint_id]}
        gts = [
            _attachment(gt, children, "groundtruth", [])
            for gt in groundtruths.get(datapoint_id, [])
        ]
        preds = [
            _attachment(p, children, "prediction", vectors.get(p["id"], []))
            for p in predictions.get(datapoint_id, [])
        ]
        if gts:
            record["groundtruths"] = gts
        if preds:
            record["predictions"] = preds
        records.append(record)
    return records


def _attachment(
    row: dict[str, Any],
    children: dict[tuple[str, str], dict[str, list[dict[str, Any]]]],
    owner: str,
    vectors: list[dict[str, Any]],
) -> dict[str, Any]:
    out: dict[str, Any] = {"task_type": row["task_type"]}
    if owner == "prediction":
        out["model_name"] = row["model_name"]
    logits = next((v for v in vectors if v["type"] == "LOGITS"), None)
    if logits is not None:  # the derived values are computed again from them
        out["logits"] = _shaped(logits)
        if row.get("class_names") is not None:
            out["class_names"] = row["class_names"]
    else:
        for key in ("class_name", "class_names", "confidence", "confidences"):
            if row.get(key) is not None:
                out[key] = row[key]
        mask = row.get("encoded_segmentation_class_mask")
        if mask is not None:
            out["segmentation_class_mask"] = decode_npy(mask).tolist()
    for key in _BOX:
        if row.get(key) is not None:
            out[key] = row[key]
    if owner == "prediction" and row.get("metrics") is not None:
        out["metrics"] = json.loads(row["metrics"])
    for kind in ("EMBEDDINGS", "GRAD_EMBEDDINGS"):
        layers = _layers(row, [v for v in vectors if v["type"] == kind])
        if layers is not None:
            out["embeddings" if kind == "EMBEDDINGS" else "grad_embeddings"] = layers
    for kind in ("bboxes", "lanes", "completions"):
        items = children[(kind, owner)].get(row["id"], [])
        if items:
            out[kind] = [_child(kind, item) for item in items]
    return out


def _shaped(vector: dict[str, Any]) -> Any:
    values = np.asarray(vector["value"], dtype=np.float32)
    shape = vector.get("shape")
    return (values.reshape(shape) if shape else values).tolist()


def _layers(row: dict[str, Any], vectors: list[dict[str, Any]]) -> Any:
    if not vectors:
        return None
    model = row["model_name"] or ""
    layers: dict[str, Any] = {}
    for vector in vectors:
        name = vector["model_name"] or ""
        layer = name[len(model) + 1 :] if name.startswith(model + ":") else ""
        layers[layer] = _shaped(vector)
    return layers[""] if list(layers) == [""] else layers


def _child(kind: str, row: dict[str, Any]) -> dict[str, Any]:
    if kind == "completions":
        keys: tuple[str, ...] = ("text", "confidence")
    elif kind == "lanes":
        keys = ("coco_polyline", "confidence")
    else:
        keys = (
            "class_name",
            "class_names",
            "confidence",
            "confidences",
            "objectness",
            "coco_polygon",
            *_BOX,
        )
    out = {key: row[key] for key in keys if row.get(key) is not None}
    if row.get("metrics") is not None:
        out["metrics"] = json.loads(row["metrics"])
    if kind == "lanes" and row.get("classifications") is not None:
        out["classifications"] = json.loads(row["classifications"])
    if kind == "bboxes" and row.get("encoded_segmentation_mask") is not None:
        out["segmentation_mask"] = decode_npy(row["encoded_segmentation_mask"]).tolist()
    return out
