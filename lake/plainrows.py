"""Which rows of a batch parsed by Arrow the native path plans (see :mod:`lake.columnar`).

A row is *plain* when it creates a datapoint (no ``id``) and holds only: ``type``; ``metadata``
and ``tags`` objects of scalar values whose text this path reproduces exactly; at most one
CLASSIFICATION groundtruth with a ``class_name``; CLASSIFICATION predictions with finite [C]
``logits``, optional ``model_name`` (distinct within the record), ``class_names`` and
``embeddings`` (a list, or layers of lists). Every check works on whole columns.

A row is a *plain update* when it names an existing datapoint by ``id`` and holds only plain
groundtruths and predictions, which replace the datapoint's ones of the same task (and model).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from lake.derive import FLOAT16_MAX
from lake.records import DATAPOINT_TYPES

_TOP_LEVEL = frozenset({"type", "metadata", "tags", "groundtruths", "predictions"})
_UPDATE_TOP_LEVEL = frozenset({"id", "groundtruths", "predictions"})
_CANONICAL_ID = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_PREDICTION_FIELDS = frozenset({"task_type", "model_name", "class_names", "logits", "embeddings"})
_GROUNDTRUTH_FIELDS = frozenset({"task_type", "class_name"})


def valid_mask(array: pa.Array) -> np.ndarray:
    return np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _np(array: pa.Array | pa.ChunkedArray, fill: Any = False) -> np.ndarray:
    return np.asarray(array.fill_null(fill).to_numpy(zero_copy_only=False))


def _array(table: pa.Table, name: str) -> pa.Array:
    """Column ``name`` of a table of one chunk as an array (all null when it has no chunk)."""
    column = table.column(name)
    return column.chunk(0) if column.num_chunks else pa.nulls(table.num_rows)


def _attachments_ok(table: pa.Table) -> np.ndarray:
    ok = np.ones(table.num_rows, dtype=bool)
    for name, check in (("groundtruths", _groundtruths_ok), ("predictions", _predictions_ok)):
        if name in table.column_names:
            ok &= check(_array(table, name))
    return ok


def plain_rows(table: pa.Table) -> np.ndarray:
    n = table.num_rows
    ok = np.ones(n, dtype=bool)
    for name in table.column_names:
        if name not in _TOP_LEVEL:
            ok &= ~valid_mask(_array(table, name))
    if "type" not in table.column_names or not pa.types.is_string(table.schema.field("type").type):
        return np.zeros(n, dtype=bool)
    types = table.column("type")
    ok &= _np(pc.is_in(types, value_set=pa.array(sorted(DATAPOINT_TYPES))))
    for name, check in (("metadata", _metadata_ok), ("tags", _tags_ok)):
        if name in table.column_names:
            ok &= check(_array(table, name))
    return ok & _attachments_ok(table)


def plain_updates(table: pa.Table) -> np.ndarray:
    """Rows that are plain updates (see the module's docstring).

    Only in batches whose objects hold no other keys than ``id``, ``groundtruths`` and
    ``predictions`` (Arrow reads an absent key and a null alike, and a null ``tags`` or
    ``metadata`` changes a datapoint) and whose ids are all canonical UUID text; a datapoint
    named by two records of a batch goes the per-record way (which applies them in line order).
    """
    n = table.num_rows
    none = np.zeros(n, dtype=bool)
    if "id" not in table.column_names or not set(table.column_names) <= _UPDATE_TOP_LEVEL:
        return none
    ids = _array(table, "id")
    if not pa.types.is_string(ids.type):
        return none
    named = valid_mask(ids)
    present = ids.filter(pa.array(named))
    if not _np(pc.match_substring_regex(present, _CANONICAL_ID)).all():
        return none
    return named & ~pl.from_arrow(ids).is_duplicated().to_numpy() & _attachments_ok(table)


def _scalar_text_ok(values: pa.Array, *, python_str: bool) -> np.ndarray:
    """Rows whose value this path can render exactly as text (True where null)."""
    typ = values.type
    if pa.types.is_null(typ) or pa.types.is_integer(typ) or pa.types.is_boolean(typ):
        return np.ones(len(values), dtype=bool)
    if pa.types.is_string(typ):
        if python_str:
            return np.ones(len(values), dtype=bool)
        return ~_np(pc.match_substring_regex(values, "[\\x00-\\x1f]"))
    if pa.types.is_floating(typ):
        return _float_ok(values, python_str=python_str)
    return ~valid_mask(values)


def _float_ok(values: pa.Array, *, python_str: bool) -> np.ndarray:
    """Floats that Arrow formats like Python's str (tags) or orjson (JSON text)."""
    x = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)
    valid = valid_mask(values)
    magnitude = np.abs(np.where(valid, x, 0.5))
    low = 1e-4 if python_str else 1e-5
    with np.errstate(invalid="ignore"):
        fine = (
            np.isfinite(magnitude)
            & (magnitude >= low)
            & (magnitude < 1e15)
            & (np.floor(magnitude) != magnitude)
        )
    return ~valid | fine


def _scalar_object_ok(array: pa.Array, *, python_str: bool) -> np.ndarray:
    """Rows whose object (a struct column) holds only values rendered exactly as text."""
    if pa.types.is_null(array.type):
        return np.ones(len(array), dtype=bool)
    if not pa.types.is_struct(array.type):
        return ~valid_mask(array)
    ok = np.ones(len(array), dtype=bool)
    for i in range(array.type.num_fields):
        ok &= _scalar_text_ok(array.field(i), python_str=python_str)
    return ok


def _metadata_ok(array: pa.Array) -> np.ndarray:
    return _scalar_object_ok(array, python_str=False)  # JSON text, as orjson writes it


def _tags_ok(array: pa.Array) -> np.ndarray:
    return _scalar_object_ok(array, python_str=True)  # tag values are str() of the value


def _list_of_structs(array: pa.Array, allowed: frozenset[str]) -> bool:
    typ = array.type
    return (
        pa.types.is_list(typ)
        and pa.types.is_struct(typ.value_type)
        and {f.name for f in typ.value_type} <= allowed
    )


def list_lengths(array: pa.Array) -> np.ndarray:
    return np.asarray(_np(pc.list_value_length(array), 0), dtype=np.int64)


def _element_problems_to_rows(array: pa.Array, bad_elements: np.ndarray) -> np.ndarray:
    parents = np.asarray(pc.list_parent_indices(array).to_numpy(), dtype=np.int64)
    bad = np.zeros(len(array), dtype=bool)
    bad[parents[bad_elements]] = True
    return bad


def _attachment_lists(
    array: pa.Array,
    allowed: frozenset[str],
) -> tuple[np.ndarray | None, np.ndarray, pa.Array]:
    """(a verdict for every row when the column's type settles it, lengths, elements)."""
    n = len(array)
    if pa.types.is_null(array.type):
        return np.ones(n, dtype=bool), np.zeros(n, dtype=np.int64), pa.nulls(0)
    if not pa.types.is_list(array.type):
        return ~valid_mask(array), np.zeros(n, dtype=np.int64), pa.nulls(0)
    lengths = list_lengths(array)
    if not _list_of_structs(array, allowed):
        return lengths == 0, lengths, pa.nulls(0)
    return None, lengths, pc.list_flatten(array)


def _groundtruths_ok(array: pa.Array) -> np.ndarray:
    verdict, lengths, elements = _attachment_lists(array, _GROUNDTRUTH_FIELDS)
    if verdict is not None:
        return verdict
    bad = ~valid_mask(elements)
    names = {f.name for f in array.type.value_type}
    if "task_type" not in names or "class_name" not in names:
        bad |= True
    else:
        task = elements.field("task_type")
        label = elements.field("class_name")
        if not pa.types.is_string(task.type) or not pa.types.is_string(label.type):
            bad |= True
        else:
            bad |= ~_np(pc.equal(task, "CLASSIFICATION")) | ~valid_mask(label)
    return (lengths <= 1) & ~_element_problems_to_rows(array, bad)


def _numbers_ok(array: pa.Array, *, non_empty: bool) -> np.ndarray:
    """Per list: numbers only, all finite and within float16 (and at least one when
    ``non_empty``)."""
    typ = array.type
    if pa.types.is_null(typ):
        return np.full(len(array), not non_empty)
    if not pa.types.is_list(typ) or not (
        pa.types.is_floating(typ.value_type)
        or pa.types.is_integer(typ.value_type)
        or pa.types.is_null(typ.value_type)
    ):
        return ~valid_mask(array) & (not non_empty)
    lengths = list_lengths(array)
    ok = lengths > 0 if non_empty else np.ones(len(array), dtype=bool)
    values = pc.list_flatten(array)
    if len(values):
        x = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)
        # not finite, or beyond float16 (the per-record path reports those); NaN fails every
        # comparison, so one pass over the largest magnitude settles the common case
        if values.null_count or not np.abs(x).max() <= FLOAT16_MAX:
            finite = np.abs(np.nan_to_num(x, nan=np.inf)) <= FLOAT16_MAX
            bad_values = ~valid_mask(values) | ~finite
            ok &= ~_element_problems_to_rows(array, bad_values)
    return ok


def _predictions_ok(array: pa.Array) -> np.ndarray:
    verdict, lengths, elements = _attachment_lists(array, _PREDICTION_FIELDS)
    if verdict is not None:
        return verdict
    names = {f.name for f in array.type.value_type}
    bad = ~valid_mask(elements)
    if "task_type" not in names or "logits" not in names:
        return lengths == 0
    task = elements.field("task_type")
    if not pa.types.is_string(task.type):
        return lengths == 0
    bad |= ~_np(pc.equal(task, "CLASSIFICATION"))
    bad |= ~_numbers_ok(elements.field("logits"), non_empty=True)
    if "model_name" in names and not (
        pa.types.is_string(elements.field("model_name").type)
        or pa.types.is_null(elements.field("model_name").type)
    ):
        bad |= True
    if "class_names" in names:
        class_names = elements.field("class_names")
        if pa.types.is_null(class_names.type):
            pass
        elif not (
            pa.types.is_list(class_names.type) and pa.types.is_string(class_names.type.value_type)
        ):
            bad |= valid_mask(class_names)
        else:
            flat = pc.list_flatten(class_names)
            if len(flat):
                bad |= _element_problems_to_rows(class_names, ~valid_mask(flat))
    if "embeddings" in names:
        bad |= ~_embeddings_ok(elements.field("embeddings"))
    if (lengths > 1).any():  # model names must differ within a record
        parents = np.asarray(pc.list_parent_indices(array).to_numpy(), dtype=np.int64)
        models = model_names_of(elements)
        bad |= pl.DataFrame({"p": parents, "m": models}).is_duplicated().to_numpy()
    return ~_element_problems_to_rows(array, bad)


def _embeddings_ok(array: pa.Array) -> np.ndarray:
    typ = array.type
    if pa.types.is_null(typ):
        return np.ones(len(array), dtype=bool)
    if pa.types.is_list(typ):
        return _numbers_ok(array, non_empty=False)
    if pa.types.is_struct(typ):
        ok = np.ones(len(array), dtype=bool)
        for i in range(typ.num_fields):
            ok &= _numbers_ok(array.field(i), non_empty=False)
        return ok
    return ~valid_mask(array)


def model_names_of(elements: pa.Array) -> np.ndarray:
    names = {f.name for f in elements.type}
    if "model_name" not in names or pa.types.is_null(elements.field("model_name").type):
        return np.array([""] * len(elements), dtype=object)
    return np.asarray(
        elements.field("model_name").fill_null("").to_numpy(zero_copy_only=False), dtype=object
    )
