"""Native batch planning: a whole batch parsed by Arrow's JSON reader and planned in columns.

This is the bulk-import path. The batch's lines are parsed at once by ``pyarrow.json`` (native,
multi-threaded); a vectorised check picks the rows that create a datapoint in the plain shape
(type, metadata and tags of scalar values, at most one classification groundtruth, classification
predictions from [C] logits with optional embeddings) and whose values this path can
reproduce exactly; those rows become Arrow tables without a Python loop per record. Every other
line is handed back to the per-record path. Records that name an existing datapoint by ``id`` and
only bring plain groundtruths and predictions (new model outputs for data already in the lake)
are planned the same way; which old rows they replace is settled in columns at commit time
(:meth:`lake.ingest.BatchPlanner.apply_updates`). When Arrow cannot parse the batch at all (a
malformed line, a type that changes between lines) the whole batch goes to the per-record path.

The rows written are those the per-record path writes for the same record, with two documented
differences that change no value: metadata JSON text lists keys in the order they first appear
in the batch, and rows created for tags and embedding layers take their id slots in that order.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from lake import ids, vectortext
from lake.batch import BatchCounts, FastUpdate, IdSource
from lake.derive import rows_entropy, rows_probabilities
from lake.ndjson import RawBatch
from lake.plainrows import list_lengths, model_names_of, plain_rows, plain_updates, valid_mask
from lake.tables import SCHEMAS

log = logging.getLogger(__name__)

_MAX_BLOCK = 1 << 26  # the largest block Arrow's JSON reader is handed at once


@dataclass
class FastBatch:
    """Rows planned in columns: new datapoints' (to append) with the counts they add, and the
    plain updates of existing datapoints (checked against the lake when committed)."""

    tables: dict[str, pa.Table]
    counts: BatchCounts
    update: FastUpdate | None = None


def plan_batch(
    batch: RawBatch,
    *,
    organization_id: str,
    id_source: IdSource,
    now: datetime,
    use_threads: bool = True,
    cut_vectors: bool = True,
) -> tuple[FastBatch, list[int]] | None:
    """Plan the plain rows of ``batch``; return them and the positions left for the record path.

    None when Arrow cannot read the batch as one table of JSON objects. ``use_threads=False``
    parses on the calling thread alone, in one block: cheaper in all when several batches are
    parsed at once by their own threads (Arrow's JSON reader spends ~30% more CPU in threads).
    """
    if not len(batch.numbers):
        return None
    # embedding vectors, most of such a batch's text, are parsed apart (lake.vectortext)
    cut = vectortext.cut(batch.data) if cut_vectors else None
    text = batch.data if cut is None else cut.data
    options = pj.ReadOptions(use_threads=use_threads)
    if not use_threads:
        options.block_size = max(options.block_size, min(len(text) + 1, _MAX_BLOCK))
    try:
        table = pj.read_json(io.BytesIO(text), read_options=options).combine_chunks()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        table = None
    if table is not None and table.num_rows != len(batch.numbers):  # objects sharing a line
        table = None
    restored = None
    if cut is not None and table is not None:
        try:
            restored = vectortext.restore(table, cut)
        except (pa.ArrowException, ValueError, TypeError, IndexError):
            log.warning("putting back the vectors cut from a batch failed", exc_info=True)
    if cut is not None and restored is None:  # not the shape the cut implies: read it all
        return plan_batch(
            batch,
            organization_id=organization_id,
            id_source=id_source,
            now=now,
            use_threads=use_threads,
            cut_vectors=False,
        )
    if table is None:
        return None
    try:
        refused = None
        if restored is not None:
            table, refused = restored
        simple = plain_rows(table)
        updates = plain_updates(table)
        if refused is not None:
            simple &= ~refused
            updates &= ~refused
        keep = np.flatnonzero(simple)
        planned = _Planner(
            table if simple.all() else table.take(pa.array(keep, pa.int64())),
            batch.numbers[keep],
            organization_id,
            id_source,
            now,
        ).build()
        if updates.any():
            rows = np.flatnonzero(updates)
            named = table if updates.all() else table.take(pa.array(rows, pa.int64()))
            datapoints = named.column("id").combine_chunks()
            tables = _Planner(
                named, batch.numbers[rows], organization_id, id_source, now, datapoints=datapoints
            ).build()
            planned.update = FastUpdate(
                datapoints, batch.numbers[rows], tables.tables, rows.tolist()
            )
        return planned, np.flatnonzero(~simple & ~updates).tolist()
    except (pa.ArrowException, ValueError, TypeError, IndexError):
        # a shape this path did not foresee: the per-record path handles every record
        log.warning("native planning of a batch failed; using the per-record path", exc_info=True)
        return None


# -- building the tables -------------------------------------------------------------------------
def _repeat(value: Any, n: int, typ: pa.DataType) -> pa.Array:
    return pa.array([value], typ).take(pa.array(np.zeros(n, dtype=np.int64)))


def _float_text(values: np.ndarray) -> pa.Array:
    """Floats as orjson writes them (Arrow's formatting, orjson's where they differ)."""
    text = pc.cast(pa.array(values, pa.float64()), pa.string())
    magnitude = np.abs(values)
    risky = ~((magnitude >= 1e-5) & (magnitude < 1e15) & (np.floor(magnitude) != magnitude))
    if risky.any():
        fixed = np.asarray(text.to_numpy(zero_copy_only=False), dtype=object)
        for i in np.flatnonzero(risky):
            fixed[i] = orjson.dumps(float(values[i])).decode()
        text = pa.array(fixed, pa.string())
    return text


def _json_string(values: pa.Array) -> pa.Array:
    values = pc.replace_substring(pc.replace_substring(values, "\\", "\\\\"), '"', '\\"')
    return pc.binary_join_element_wise('"', values, '"', "")


def _is_scalar(typ: pa.DataType) -> bool:
    return (
        pa.types.is_string(typ)
        or pa.types.is_integer(typ)
        or pa.types.is_floating(typ)
        or pa.types.is_boolean(typ)
    )


def _scalar_json(values: pa.Array) -> pa.Array | None:
    """Values as JSON text; None when there is nothing to write (the column is all null in
    the rows planned here: null types, and nested values, which send a row elsewhere)."""
    typ = values.type
    if not _is_scalar(typ):
        return None
    if pa.types.is_string(typ):
        return _json_string(values)
    if pa.types.is_floating(typ):
        x = np.asarray(values.fill_null(0.5).to_numpy(zero_copy_only=False), dtype=np.float64)
        return pc.if_else(values.is_valid(), _float_text(x), pa.scalar(None, pa.string()))
    return pc.cast(values, pa.string())  # integers, booleans (true / false)


def _metadata_text(array: pa.Array) -> pa.Array:
    n = len(array)
    if pa.types.is_null(array.type):
        return pa.nulls(n, pa.string())
    valid = array.is_valid()
    keys, values = [], []
    for i, field in enumerate(array.type):
        text = _scalar_json(array.field(i))
        if text is not None:
            keys.append(orjson.dumps(field.name).decode() + ":")
            values.append(text)
    if not keys:
        body = _repeat("", n, pa.string())
    elif all(not _nulls_where(valid, text) for text in values):
        # every object holds every key (the common case): '{"a":1,"b":2}' in one join
        pieces = [piece for pair in zip(keys, values, strict=True) for piece in pair]
        pieces[0] = "{" + pieces[0]
        for position in range(2, len(pieces), 2):
            pieces[position] = "," + pieces[position]
        text = pc.binary_join_element_wise(*pieces, "}", "")
        return text if array.null_count == 0 else pc.if_else(valid, text, pa.nulls(n, pa.string()))
    else:
        # '"key":value,' or '' (null values are left out); no JSON value ends with ","
        fragments = [
            pc.binary_join_element_wise(key, text, ",", "").fill_null("")
            for key, text in zip(keys, values, strict=True)
        ]
        # (joining with null_handling="skip" loses trailing all-null rows in this pyarrow)
        body = pc.utf8_rtrim(pc.binary_join_element_wise(*fragments, ""), characters=",")
    text = pc.binary_join_element_wise("{", body, "}", "")
    return pc.if_else(valid, text, pa.scalar(None, pa.string()))


def _nulls_where(valid: pa.Array, values: pa.Array) -> bool:
    """Whether ``values`` is null in a row where ``valid`` is true."""
    if values.null_count == 0:
        return False
    return bool(pc.any(pc.and_(valid, values.is_null())).as_py())


def _tag_text(values: pa.Array) -> pa.Array | None:
    typ = values.type
    if not _is_scalar(typ):  # all null in the rows planned here
        return None
    if pa.types.is_string(typ):
        return values
    return pc.cast(values, pa.string())  # str() of ints, floats in the safe range, true/false


def _starts(lengths: np.ndarray) -> np.ndarray:
    starts = np.zeros(len(lengths), dtype=np.int64)
    if len(lengths) > 1:
        np.cumsum(lengths[:-1], out=starts[1:])
    return starts


def _float16_lists(values: np.ndarray, lengths: np.ndarray) -> pa.Array:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    rounded = values.astype(np.float16).astype(np.float32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(rounded, pa.float32()))


class _Planner:
    """Builds the tables of the plain rows of a batch (all of ``table``'s rows): new datapoints,
    or with ``datapoints`` the attachments that plain updates bring to those datapoints."""

    def __init__(
        self,
        table: pa.Table,
        lines: np.ndarray,
        org: str,
        id_source: IdSource,
        now: datetime,
        *,
        datapoints: pa.Array | None = None,
    ) -> None:
        self.table = table
        self.n = table.num_rows
        self.lines = lines
        self.org = org
        self.id_source = id_source
        self.now = now
        self.datapoints = datapoints
        self.tables: dict[str, pa.Table] = {}
        self.counts = BatchCounts(datapoints_created=self.n if datapoints is None else 0)

    def _column(self, name: str) -> pa.Array:
        if name not in self.table.column_names:
            return pa.nulls(self.n)
        column = self.table.column(name)
        return column.chunk(0) if column.num_chunks else pa.nulls(self.n)

    def _ids(self, lines: np.ndarray, slots: np.ndarray) -> pa.Array:
        if self.id_source.salt is None:
            return pa.array([ids.new_id() for _ in range(len(lines))], pa.string())
        return ids.derived_ids(self.id_source.created_ms, self.id_source.salt, lines, slots)

    def _emit(self, table: str, n: int, /, **columns: Any) -> None:
        if n == 0:
            return
        columns.setdefault("organization_id", _repeat(self.org, n, pa.string()))
        if "created_at" in SCHEMAS[table].names:
            columns.setdefault(
                "created_at", _repeat(self.now, n, SCHEMAS[table].field("created_at").type)
            )
        arrays = []
        for field in SCHEMAS[table]:
            value = columns.get(field.name)
            if value is None:
                arrays.append(pa.nulls(n, field.type))
            elif isinstance(value, pa.Array):
                arrays.append(value if value.type == field.type else value.cast(field.type))
            else:
                arrays.append(pa.array(value, field.type))
        self.tables[table] = pa.Table.from_arrays(arrays, schema=SCHEMAS[table])

    def build(self) -> FastBatch:
        if self.n == 0:
            return FastBatch({}, BatchCounts())
        if self.datapoints is not None:  # an update's first new row takes slot 1, as here
            self.dp_ids = self.datapoints
        else:
            self.dp_ids = self._ids(self.lines, np.zeros(self.n, dtype=np.int64))
            self._emit(
                "datapoints",
                self.n,
                id=self.dp_ids,
                type=self._column("type"),
                metadata=_metadata_text(self._column("metadata")),
            )
        used = self._tags()
        used += self._groundtruths(used)
        self._predictions(used)
        return FastBatch(self.tables, self.counts)

    def _tags(self) -> np.ndarray:
        """Emit tag rows; return how many slots each record's tags took."""
        array = self._column("tags")
        used = np.zeros(self.n, dtype=np.int64)
        if not pa.types.is_struct(array.type):
            return used
        valid_struct = valid_mask(array)
        present = []
        texts = []
        names = []
        for i, field in enumerate(array.type):
            text = _tag_text(array.field(i))
            if text is None:
                continue
            present.append(valid_mask(text) & valid_struct)
            texts.append(text)
            names.append(field.name)
        if not names:
            return used
        matrix = np.stack(present, axis=1)
        slots = np.cumsum(matrix, axis=1)
        rows, cols = np.nonzero(matrix)
        combined = pa.concat_arrays(texts)  # column-major: field c, row r at c*n + r
        take = pa.array(cols * self.n + rows, pa.int64())
        self._emit(
            "tags",
            len(rows),
            id=self._ids(self.lines[rows], slots[rows, cols]),
            datapoint=self.dp_ids.take(pa.array(rows, pa.int64())),
            name=pa.array(names, pa.string()).take(pa.array(cols, pa.int64())),
            value=combined.take(take),
        )
        return matrix.sum(axis=1).astype(np.int64)

    def _groundtruths(self, used: np.ndarray) -> np.ndarray:
        array = self._column("groundtruths")
        if not pa.types.is_list(array.type):
            return np.zeros(self.n, dtype=np.int64)
        has = list_lengths(array) == 1
        rows = np.flatnonzero(has)
        if len(rows):
            elements = pc.list_flatten(array)
            self._emit(
                "groundtruths",
                len(rows),
                id=self._ids(self.lines[rows], used[rows] + 1),
                datapoint=self.dp_ids.take(pa.array(rows, pa.int64())),
                task_type=_repeat("CLASSIFICATION", len(rows), pa.string()),
                class_name=elements.field("class_name"),
            )
        self.counts.groundtruths = int(has.sum())
        return has.astype(np.int64)

    def _predictions(self, used: np.ndarray) -> None:
        array = self._column("predictions")
        if not pa.types.is_list(array.type) or not pa.types.is_struct(array.type.value_type):
            return
        elements = pc.list_flatten(array)
        m = len(elements)
        self.counts.predictions = m
        if m == 0:
            return
        parents = np.asarray(pc.list_parent_indices(array).to_numpy(), dtype=np.int64)
        layers = self._layers(elements)
        # which elements have a vector for each layer; a prediction's rows take the slots
        # of itself, its LOGITS vector and its layers' vectors, in that order
        present = np.zeros((m, len(layers)), dtype=np.int64)
        for position, (_, has, _) in enumerate(layers):
            present[:, position] = has
        rank = np.cumsum(present, axis=1)
        width = 2 + present.sum(axis=1)
        exclusive = np.cumsum(width) - width
        first = _starts(list_lengths(array))  # first element index of each row
        slots = used[parents] + 1 + exclusive - exclusive[first[parents]]
        pred_ids = self._ids(self.lines[parents], slots)
        datapoints = self.dp_ids.take(pa.array(parents, pa.int64()))
        models = model_names_of(elements)
        model_array = pa.array(models, pa.string())
        logits = elements.field("logits")
        lengths = list_lengths(logits)
        flat = np.asarray(pc.list_flatten(logits).to_numpy(zero_copy_only=False), dtype=np.float64)
        derived = _derive(flat, lengths, self._class_names(elements), m)
        self._emit(
            "predictions",
            m,
            id=pred_ids,
            datapoint=datapoints,
            task_type=_repeat("CLASSIFICATION", m, pa.string()),
            model_name=model_array,
            class_names=self._class_names_column(elements),
            **derived,
        )
        vectors: list[dict[str, Any]] = [
            {
                "rows": np.arange(m),
                "slots": slots + 1,
                "type": "LOGITS",
                "names": model_array,
                "values": _float16_lists(flat, lengths),
                "shape": lengths,
            }
        ]
        for position, (layer, has, values) in enumerate(layers):
            rows = np.flatnonzero(has)
            names = pa.array(
                [f"{models[r]}:{layer}" if layer else models[r] for r in rows], pa.string()
            )
            taken = values if len(rows) == m else values.take(pa.array(rows, pa.int64()))
            vector_lengths = list_lengths(taken)
            vector_flat = np.asarray(
                pc.list_flatten(taken).to_numpy(zero_copy_only=False), dtype=np.float64
            )
            vectors.append(
                {
                    "rows": rows,
                    "slots": slots[rows] + 1 + rank[rows, position],
                    "type": "EMBEDDINGS",
                    "names": names,
                    "values": _float16_lists(vector_flat, vector_lengths),
                    "shape": vector_lengths,
                }
            )
        self._emit_vectors(vectors, pred_ids, datapoints, parents)

    def _emit_vectors(
        self,
        groups: list[dict[str, Any]],
        pred_ids: pa.Array,
        datapoints: pa.Array,
        parents: np.ndarray,
    ) -> None:
        rows = np.concatenate([g["rows"] for g in groups])
        n = len(rows)
        take = pa.array(rows, pa.int64())
        shapes = np.concatenate([g["shape"] for g in groups])
        shape_offsets = np.arange(n + 1, dtype=np.int32)
        self._emit(
            "feature_vectors",
            n,
            id=self._ids(self.lines[parents[rows]], np.concatenate([g["slots"] for g in groups])),
            type=pa.array([g["type"] for g in groups], pa.string()).take(
                pa.array(np.repeat(np.arange(len(groups)), [len(g["rows"]) for g in groups]))
            ),
            prediction=pred_ids.take(take),
            datapoint=datapoints.take(take),
            model_name=pa.concat_arrays([g["names"] for g in groups]),
            value=pa.concat_arrays([g["values"] for g in groups]),
            shape=pa.ListArray.from_arrays(
                pa.array(shape_offsets), pa.array(shapes.astype(np.int32))
            ),
        )

    @staticmethod
    def _layers(elements: pa.Array) -> list[tuple[str, np.ndarray, pa.Array]]:
        """(layer name, which elements have a non-empty vector, the list array) per layer."""
        if "embeddings" not in {f.name for f in elements.type}:
            return []
        embeddings = elements.field("embeddings")
        if pa.types.is_list(embeddings.type):
            return [("", list_lengths(embeddings) > 0, embeddings)]
        if pa.types.is_struct(embeddings.type):
            out = []
            valid = valid_mask(embeddings)
            for i, field in enumerate(embeddings.type):
                child = embeddings.field(i)
                if pa.types.is_list(child.type):
                    out.append((field.name, (list_lengths(child) > 0) & valid, child))
            return out
        return []

    @staticmethod
    def _class_names_column(elements: pa.Array) -> pa.Array | None:
        if "class_names" not in {f.name for f in elements.type}:
            return None
        column = elements.field("class_names")
        return None if pa.types.is_null(column.type) else column

    def _class_names(self, elements: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray]:
        """(flat names, start of each element's names, how many) for class_name lookups."""
        column = self._class_names_column(elements)
        if column is None:
            empty = np.zeros(len(elements), dtype=np.int64)
            return pa.array([], pa.string()), empty, empty
        counts = list_lengths(column)
        return pc.list_flatten(column), _starts(counts), counts


def _derive(
    flat: np.ndarray,
    lengths: np.ndarray,
    class_names: tuple[pa.Array, np.ndarray, np.ndarray],
    m: int,
) -> dict[str, Any]:
    """confidences, confidence, class_name and metrics of every prediction, per logits length."""
    names_flat, names_start, names_count = class_names
    sizes = np.unique(lengths)
    confidence_lengths = np.where(lengths == 1, 2, lengths)
    if len(sizes) == 1:  # the common case: one logits length, the values already in rows
        p = rows_probabilities(flat.reshape(m, int(sizes[0])))
        best = np.argmax(p, axis=1)
        confidence = p[np.arange(m), best]
        entropy = rows_entropy(p)
        confidence_flat = p.ravel()
    else:
        starts = _starts(lengths)
        confidence = np.empty(m)
        entropy = np.empty(m)
        best = np.empty(m, dtype=np.int64)
        confidence_flat = np.empty(int(confidence_lengths.sum()))
        confidence_starts = _starts(confidence_lengths)
        for size in sizes:
            rows = np.flatnonzero(lengths == size)
            p = rows_probabilities(flat[starts[rows][:, None] + np.arange(size)])
            winner = np.argmax(p, axis=1)
            best[rows] = winner
            confidence[rows] = p[np.arange(len(rows)), winner]
            entropy[rows] = rows_entropy(p)
            confidence_flat[confidence_starts[rows][:, None] + np.arange(p.shape[1])] = p
    # the winner's class name where the prediction names that many classes, else its index
    named = best < names_count
    labels = pc.cast(pa.array(best), pa.string())
    if named.any():
        picks = np.where(named, names_start + best, 0)
        labels = pc.if_else(named, names_flat.take(pa.array(picks, pa.int64())), labels)
    offsets = np.zeros(m + 1, dtype=np.int32)
    np.cumsum(confidence_lengths, out=offsets[1:])
    metrics = pc.binary_join_element_wise('{"entropy":', _float_text(entropy), "}", "")
    return {
        "confidences": pa.ListArray.from_arrays(pa.array(offsets), pa.array(confidence_flat)),
        "confidence": pa.array(confidence),
        "class_name": labels,
        "metrics": metrics,
    }
