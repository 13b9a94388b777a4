"""The columnar fast path for the common record: a new datapoint with plain values.

Bulk imports are mostly records that create a datapoint with metadata, a few tags, a
classification groundtruth and classification predictions (logits or confidences, optional
embeddings). Such a record needs nothing from the lake, so a whole batch of them is turned
straight into Arrow tables, with the arithmetic (softmax, entropy, argmax) done once per batch
in numpy. The rows, ids and derived values are exactly those the general path
(:mod:`lake.records` + :mod:`lake.ingest`) produces for the same record; any record outside the
shape below goes to the general path instead.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from lake import ids
from lake.derive import rows_entropy, rows_probabilities
from lake.ingest import BatchCounts, IdSource
from lake.records import DATAPOINT_TYPES
from lake.tables import SCHEMAS

_RECORD_KEYS = frozenset({"type", "metadata", "tags", "groundtruths", "predictions"})
_GROUNDTRUTH_KEYS = frozenset({"task_type", "class_name"})
_PREDICTION_KEYS = frozenset({"task_type", "model_name", "class_names", "logits", "embeddings"})


class _Columns:
    """The columns a fast-path table sets, plus the (line, slot) of each row for its id.

    Columns not named here are null in every fast-path row.
    """

    def __init__(self, *names: str) -> None:
        self.lines: list[int] = []
        self.slots: list[int] = []
        self.data: dict[str, list[Any]] = {name: [] for name in names}

    def __len__(self) -> int:
        return len(self.lines)


@dataclass
class FastBatch:
    """Rows ready to append, and the counts they add."""

    tables: dict[str, pa.Table]
    counts: BatchCounts
    records: int

    def merged(self, other: FastBatch) -> FastBatch:
        tables = dict(self.tables)
        for name, table in other.tables.items():
            tables[name] = pa.concat_tables([tables[name], table]) if name in tables else table
        counts = BatchCounts()
        counts.add(self.counts)
        counts.add(other.counts)
        return FastBatch(tables, counts, self.records + other.records)


def _is_number_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(type(v) is float or type(v) is int for v in value)
    )


def _simple_tags(tags: Any) -> bool:
    if tags is None:
        return True
    return isinstance(tags, dict) and all(
        v is None or type(v) in (str, int, float, bool) for v in tags.values()
    )


def _simple_prediction(item: Any) -> bool:
    if not isinstance(item, dict) or not item.keys() <= _PREDICTION_KEYS:
        return False
    if item.get("task_type") != "CLASSIFICATION" or not isinstance(item.get("model_name", ""), str):
        return False
    names = item.get("class_names")
    if names is not None and not (isinstance(names, list) and all(type(n) is str for n in names)):
        return False
    logits = item.get("logits")
    if logits is None or not _is_number_list(logits):
        return False
    if any(not math.isfinite(v) for v in logits):
        return False
    embeddings = item.get("embeddings")
    if embeddings is None:
        return "embeddings" not in item
    if isinstance(embeddings, dict):
        return bool(embeddings) and all(
            isinstance(k, str) and k and _is_number_list(v) for k, v in embeddings.items()
        )
    return _is_number_list(embeddings)


def is_simple(record: Any) -> bool:
    """Whether ``record`` creates a datapoint in the shape the fast path handles."""
    if not isinstance(record, dict) or not record.keys() <= _RECORD_KEYS:
        return False
    if record.get("type") not in DATAPOINT_TYPES:
        return False
    metadata = record.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        return False
    if not _simple_tags(record.get("tags")):
        return False
    groundtruths = record.get("groundtruths", [])
    predictions = record.get("predictions", [])
    if not isinstance(groundtruths, list) or not isinstance(predictions, list):
        return False
    if len(groundtruths) > 1 or any(
        not isinstance(g, dict)
        or not g.keys() <= _GROUNDTRUTH_KEYS
        or g.get("task_type") != "CLASSIFICATION"
        or type(g.get("class_name")) is not str
        for g in groundtruths
    ):
        return False
    models = [p.get("model_name", "") if isinstance(p, dict) else None for p in predictions]
    return len(set(models)) == len(models) and all(_simple_prediction(p) for p in predictions)


def _tag_text(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


class FastPlanner:
    """Accumulates simple records of one batch and turns them into Arrow tables."""

    def __init__(self, *, organization_id: str, id_source: IdSource, now: datetime) -> None:
        self.org = organization_id
        self.id_source = id_source
        self.now = now
        self.columns = {
            "datapoints": _Columns("type", "metadata"),
            "tags": _Columns("datapoint", "name", "value"),
            "groundtruths": _Columns("datapoint", "class_name"),
            "predictions": _Columns("datapoint", "model_name", "class_names"),
            "feature_vectors": _Columns("datapoint", "prediction", "type", "model_name", "shape"),
        }
        self.records = 0
        # logits grouped by length: (row in predictions, logits, class_names)
        self._logits: dict[int, list[tuple[int, list[float], list[str] | None]]] = defaultdict(list)
        self._vectors: list[list[float]] = []
        self.counts = BatchCounts()

    def add(self, record: dict[str, Any], line: int) -> None:
        """Add a record for which :func:`is_simple` holds."""
        self.records += 1
        datapoints = self.columns["datapoints"]
        dp_row = len(datapoints)
        metadata = record.get("metadata")
        if metadata is not None:
            metadata = orjson.dumps({k: v for k, v in metadata.items() if v is not None}).decode()
        datapoints.lines.append(line)
        datapoints.slots.append(0)
        datapoints.data["type"].append(record["type"])
        datapoints.data["metadata"].append(metadata)
        slot = 0
        tags = record.get("tags")
        if tags:
            cols = self.columns["tags"]
            names, values, owners = cols.data["name"], cols.data["value"], cols.data["datapoint"]
            for name, value in tags.items():
                if value is not None:
                    slot += 1
                    cols.lines.append(line)
                    cols.slots.append(slot)
                    owners.append(dp_row)
                    names.append(name)
                    values.append(value if type(value) is str else _tag_text(value))
        groundtruths = record.get("groundtruths")
        if groundtruths:
            slot += 1
            cols = self.columns["groundtruths"]
            cols.lines.append(line)
            cols.slots.append(slot)
            cols.data["datapoint"].append(dp_row)
            cols.data["class_name"].append(groundtruths[0]["class_name"])
            self.counts.groundtruths += 1
        predictions = record.get("predictions")
        if predictions:
            for prediction in predictions:
                slot = self._add_prediction(prediction, line, slot + 1, dp_row)
            self.counts.predictions += len(predictions)
        self.counts.datapoints_created += 1

    def _add_prediction(self, item: dict[str, Any], line: int, slot: int, dp_row: int) -> int:
        model = item.get("model_name", "")
        names = item.get("class_names")
        cols = self.columns["predictions"]
        row = len(cols)
        cols.lines.append(line)
        cols.slots.append(slot)
        cols.data["datapoint"].append(dp_row)
        cols.data["model_name"].append(model)
        cols.data["class_names"].append(names)
        logits = item["logits"]
        self._logits[len(logits)].append((row, logits, names))
        slot += 1
        self._add_vector(line, slot, dp_row, row, "LOGITS", model, logits)
        embeddings = item.get("embeddings")
        if embeddings is not None:
            layers = embeddings if isinstance(embeddings, dict) else {"": embeddings}
            for layer, values in layers.items():
                slot += 1
                name = f"{model}:{layer}" if layer else model
                self._add_vector(line, slot, dp_row, row, "EMBEDDINGS", name, values)
        return slot

    def _add_vector(
        self,
        line: int,
        slot: int,
        dp_row: int,
        prediction_row: int,
        kind: str,
        model: str,
        values: list[float],
    ) -> None:
        cols = self.columns["feature_vectors"]
        cols.lines.append(line)
        cols.slots.append(slot)
        data = cols.data
        data["datapoint"].append(dp_row)
        data["prediction"].append(prediction_row)
        data["type"].append(kind)
        data["model_name"].append(model)
        data["shape"].append([len(values)])
        self._vectors.append(values)

    # -- finishing -----------------------------------------------------------------------------
    def build(self) -> FastBatch:
        derived = self._derive_predictions()
        id_arrays = {name: self._ids(cols) for name, cols in self.columns.items()}
        tables: dict[str, pa.Table] = {}
        for name, cols in self.columns.items():
            n = len(cols)
            if not n:
                continue
            arrays: dict[str, Any] = {name_: values for name_, values in cols.data.items()}
            arrays["id"] = id_arrays[name]
            arrays["organization_id"] = pa.array([self.org], pa.string()).take(
                pa.array(np.zeros(n, dtype=np.int64))
            )
            if name != "feature_vectors":
                arrays["created_at"] = pa.array(
                    [self.now], SCHEMAS[name].field("created_at").type
                ).take(pa.array(np.zeros(n, dtype=np.int64)))
            for column in ("datapoint", "prediction"):
                if column in arrays:
                    parent = "datapoints" if column == "datapoint" else "predictions"
                    arrays[column] = id_arrays[parent].take(pa.array(arrays[column], pa.int64()))
            if name == "groundtruths":
                arrays["task_type"] = _repeat("CLASSIFICATION", n)
            if name == "predictions":
                arrays["task_type"] = _repeat("CLASSIFICATION", n)
                arrays.update(derived)
            if name == "feature_vectors":
                arrays["value"] = _float16_lists(self._vectors)
            tables[name] = pa.table(
                [_column(arrays.get(f.name), f.type, n) for f in SCHEMAS[name]],
                schema=SCHEMAS[name],
            )
        return FastBatch(tables, self.counts, self.records)

    def _ids(self, cols: _Columns) -> pa.Array:
        if self.id_source.salt is None:
            return pa.array([ids.new_id() for _ in cols.lines], pa.string())
        return ids.derived_ids(
            self.id_source.created_ms,
            self.id_source.salt,
            np.asarray(cols.lines),
            np.asarray(cols.slots),
        )

    def _derive_predictions(self) -> dict[str, list[Any]]:
        n = len(self.columns["predictions"])
        confidences: list[Any] = [None] * n
        confidence: list[Any] = [None] * n
        class_name: list[Any] = [None] * n
        metrics: list[Any] = [None] * n
        for group in self._logits.values():
            p = rows_probabilities(np.asarray([g[1] for g in group], dtype=np.float64))
            best = np.argmax(p, axis=1)
            top = p[np.arange(len(group)), best].tolist()
            rows_p = p.tolist()
            entropy = rows_entropy(p).tolist()
            for i, (row, _, names) in enumerate(group):
                index = int(best[i])
                confidences[row] = rows_p[i]
                confidence[row] = top[i]
                class_name[row] = str(names[index]) if names and index < len(names) else str(index)
                metrics[row] = orjson.dumps({"entropy": entropy[i]}).decode()
        return {
            "confidences": confidences,
            "confidence": confidence,
            "class_name": class_name,
            "metrics": metrics,
        }


def _repeat(value: str, n: int) -> pa.Array:
    return pa.array([value], pa.string()).take(pa.array(np.zeros(n, dtype=np.int64)))


def _float16_lists(vectors: list[list[float]]) -> pa.Array:
    """A list<float32> array of the vectors, each value rounded to float16 precision."""
    lengths = np.fromiter((len(v) for v in vectors), dtype=np.int32, count=len(vectors))
    offsets = np.zeros(len(vectors) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter(
        itertools.chain.from_iterable(vectors), dtype=np.float64, count=int(offsets[-1])
    )
    values = flat.astype(np.float16).astype(np.float32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.float32()))


def _column(values: Any, typ: pa.DataType, n: int) -> pa.Array:
    if values is None:
        return pa.nulls(n, typ)
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values.cast(typ) if values.type != typ else values
    return pa.array(values, typ)
