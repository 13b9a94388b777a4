"""Embedding vectors taken out of a batch's text before Arrow parses it, parsed apart.

A 512-d embedding written at full precision is ~10 KB of number text, nearly all of a record.
Arrow's JSON reader turns number text into doubles slowly (~60–100 MB/s a core). simdjson
(pysimdjson) reads lists of numbers straight into a buffer of doubles 2.3–2.5x faster than
Polars' NDJSON reader and several times faster than Arrow, as strictly as JSON demands
(``NaN``, ``.5``, ``01``, ``+5``, ``1e999``, strings and nested values are errors). So the
native path (:mod:`lake.columnar`) hands Arrow the batch with the *bodies* of the embedding
vectors cut out (``"embeddings": {"layer": []}``), parses the bodies with simdjson, and puts
them back in the parsed table where the empty lists are. A group of vectors simdjson refuses
is read by Polars, given the one column type ``list[f64]``, which also takes what JSON allows
and a buffer of doubles does not hold: nulls, and integers beyond 64 bits.

The cut is found by plain text search for the key ``"embeddings"`` followed by a list or an
object of lists; a match is trusted only where Arrow's parse of the cut text agrees: a row is
planned natively only when its matches are exactly its predictions' embeddings, in order (see
:func:`restore`). A key of that name holding a string or a number is passed over (Arrow's
reading of it decides); anything unforeseen in the text (an escaped quote before the key, a
layer name with escapes, a layer that is not a list, a vector that is not all numbers) leaves
the batch to the usual parse, so this is a shortcut, never a different reading of a record.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import simdjson

from lake.plainrows import list_lengths, valid_mask

_KEY = b'"embeddings"'
_COLON = re.compile(rb"[ \t\r]*:[ \t\r]*")
_LAYER = re.compile(rb'[ \t\r]*"([^"\\\n]*)"[ \t\r]*:[ \t\r]*(\[|null\b)')
_AFTER_LAYER = re.compile(rb"[ \t\r]*([,}])")
_EMPTY_OBJECT = re.compile(rb"[ \t\r]*}")

# below this share of the text in vectors, cutting them out saves less than it costs
_MIN_SHARE = 0.25
_PROBE = 64  # values looked at before judging the share
_GROUP = 64  # vectors parsed as one document (fewer calls; small enough to stay in cache)


@dataclass
class Cut:
    """A batch's text without its vectors' bodies, and the vectors."""

    data: bytes
    rows: np.ndarray  # row of each ``"embeddings"`` value cut, in text order
    owners: np.ndarray  # which of those values (index into ``rows``) each vector belongs to
    layers: list[str]  # layer of each vector ("" for the list form)
    vectors: pa.Array  # each vector's numbers (large_list<double>), in text order


def cut(data: bytes) -> Cut | None:
    """``data`` with the vectors of its ``"embeddings"`` values cut out; None when there are
    none worth cutting or the text holds something this reading does not foresee."""
    find = data.find
    position = find(_KEY)
    if position < 0:
        return None
    kept: list[memoryview] = []
    bodies: list[memoryview] = []
    marks: list[int] = []  # where each value starts in the cut text
    owners: list[int] = []
    layers: list[str] = []
    view = memoryview(data)
    start = 0  # start of the text not yet kept
    size = 0  # length of the cut text so far
    while position >= 0:
        if position == 0 or data[position - 1] == 0x5C:  # \" : inside a string
            return None
        colon = _COLON.match(data, position + len(_KEY))
        if colon is None:  # "embeddings" as a value, not a key
            position = find(_KEY, position + len(_KEY))
            continue
        at = colon.end()
        opening = data[at : at + 1]
        spans: list[tuple[int, int, str]] = []  # ([ position, ] position, layer) of each list
        if opening == b"[":
            close = find(b"]", at + 1)
            if close < 0:
                return None
            spans.append((at, close, ""))
        elif opening == b"{":
            after = at + 1
            while _EMPTY_OBJECT.match(data, after) is None:
                layer = _LAYER.match(data, after)
                if layer is None:
                    return None
                if layer.group(2) == b"[":
                    close = find(b"]", layer.end())
                    if close < 0:
                        return None
                    name = layer.group(1).decode("utf-8", "replace")
                    spans.append((layer.end() - 1, close, name))
                    following = _AFTER_LAYER.match(data, close + 1)
                else:  # a null layer: nothing to cut
                    following = _AFTER_LAYER.match(data, layer.end())
                if following is None:
                    return None
                after = following.end()
                if following.group(1) == b"}":
                    break
        else:  # null, or a key of that name holding a string or number (a tag, say)
            position = find(_KEY, at)
            continue
        owner = len(marks)
        if owner == _PROBE and sum(len(b) for b in bodies) < _MIN_SHARE * start:
            return None  # small vectors: not worth it
        marks.append(size + (at - start))
        for bracket, close, name in spans:
            kept.append(view[start : bracket + 1])
            size += bracket + 1 - start
            bodies.append(view[bracket + 1 : close])
            start = close
            owners.append(owner)
            layers.append(name)
        position = find(_KEY, max(start, at))
    kept.append(view[start:])
    cut_size = size + len(data) - start
    if len(data) - cut_size < _MIN_SHARE * len(data):
        return None
    text = b"".join(kept)
    vectors = _parse(bodies)
    if vectors is None:
        return None
    newlines = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == 0x0A)
    rows = np.searchsorted(newlines, np.asarray(marks, dtype=np.int64))
    return Cut(text, rows, np.asarray(owners, dtype=np.int64), layers, vectors)


def _parse(bodies: list[memoryview]) -> pa.Array | None:
    """The bodies as lists of doubles (large_list<double>), parsed as strictly as JSON; None
    when a body is not a list of JSON numbers and nulls."""
    parser = simdjson.Parser()
    groups = []
    for start in range(0, len(bodies), _GROUP):
        group = bodies[start : start + _GROUP]
        parsed = _numbers(parser, group)
        if parsed is None:
            parsed = _numbers_and_nulls(group)
            if parsed is None:
                return None
        groups.append(parsed)
    if not groups:
        return pa.array([], pa.large_list(pa.float64()))
    return groups[0] if len(groups) == 1 else pa.concat_arrays(groups)


def _numbers(parser: simdjson.Parser, group: list[memoryview]) -> pa.Array | None:
    """The bodies as lists of doubles, read by simdjson; None if one holds anything but
    numbers that fit a double (or an integer that does not fit 64 bits)."""
    try:
        document = parser.parse(b"[[" + b"],[".join(group) + b"]]")
        # a body holds no "]" (the cut ends it at the first one), so a "[" in a body cannot
        # be balanced: the document fails to parse or has another number of lists
        if not isinstance(document, simdjson.Array) or len(document) != len(group):
            return None
        lengths = np.fromiter(
            (len(vector) if isinstance(vector, simdjson.Array) else -1 for vector in document),
            np.int64,
            len(group),
        )
        # every number of the group in one buffer (nested lists would be flattened into it,
        # but there are none, see above; anything but a number is a TypeError)
        numbers = document.as_buffer(of_type="d")
    except (ValueError, TypeError, RuntimeError):  # syntax, a non-number, a number too large
        return None
    finally:
        document = None  # the parser refuses a new document while one is alive
    values = pa.py_buffer(numbers)
    if (lengths < 0).any() or values.size != 8 * lengths.sum():
        return None
    offsets = np.zeros(len(group) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return pa.LargeListArray.from_arrays(
        pa.array(offsets), pa.Array.from_buffers(pa.float64(), values.size // 8, [None, values])
    )


def _numbers_and_nulls(group: list[memoryview]) -> pa.Array | None:
    """The bodies read by Polars, which also takes nulls (a missing number, NaN once stored)
    and integers of any size; None where it finds anything else."""
    wrapped = b"".join(piece for body in group for piece in (b'{"v":[', body, b"]}\n"))
    try:
        column = pl.read_ndjson(io.BytesIO(wrapped), schema={"v": pl.List(pl.Float64)})["v"]
    except pl.exceptions.PolarsError:
        return None
    if len(column) != len(group):
        return None
    return column.to_arrow().cast(pa.large_list(pa.float64()))


def restore(table: pa.Table, cut_: Cut) -> tuple[pa.Table, np.ndarray] | None:
    """``table`` (Arrow's parse of ``cut_.data``) with the vectors back in its predictions'
    embeddings, and the rows to leave to the record path: those whose cut values are not
    exactly their predictions' embeddings. None when the table does not have the shape the
    cut implies (the usual parse then reads the batch)."""
    n = table.num_rows
    if "predictions" not in table.column_names:
        return None
    column = table.column("predictions")
    predictions = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    if not pa.types.is_list(predictions.type) or not pa.types.is_struct(
        predictions.type.value_type
    ):
        return None
    elements = predictions.flatten()
    if elements.type.get_field_index("embeddings") < 0:
        return None
    embeddings = elements.field("embeddings")
    if len(elements) and pa.types.is_list(embeddings.type):
        layers = {"": embeddings}
    elif len(elements) and pa.types.is_struct(embeddings.type):
        layers = {f.name: embeddings.field(i) for i, f in enumerate(embeddings.type)}
    else:
        return None
    if any(not pa.types.is_list(child.type) for child in layers.values()):
        return None

    # the k-th value cut in a row belongs to the k-th of its predictions with embeddings
    element_rows = np.asarray(pc.list_parent_indices(predictions).to_numpy(), dtype=np.int64)
    has = valid_mask(embeddings)
    holders = np.flatnonzero(has)
    holder_rows = element_rows[holders]
    values_per_row = np.bincount(cut_.rows, minlength=n)
    holders_per_row = np.bincount(holder_rows, minlength=n)
    refused = values_per_row != holders_per_row
    # every list Arrow saw in those places must be one that was cut (emptied)
    for child in layers.values():
        refused[element_rows[list_lengths(child) > 0]] = True
    # a vector of a layer (or form) the predictions' embeddings do not have is not theirs
    # (a layer named twice needs no check: Arrow refuses such a batch)
    stray = np.asarray([name not in layers for name in cut_.layers], dtype=bool)
    if stray.any():
        refused[cut_.rows[cut_.owners[stray]]] = True
    refused_values = refused[cut_.rows]

    # the holder of each cut value, where the row is taken
    rank_in_row = np.arange(len(cut_.rows)) - _first_index(cut_.rows)
    holder_start = np.full(n + 1, 0, dtype=np.int64)
    np.cumsum(holders_per_row, out=holder_start[1:])
    owner_of = np.full(len(cut_.rows), -1, dtype=np.int64)
    taken = ~refused_values
    owner_of[taken] = holders[holder_start[cut_.rows[taken]] + rank_in_row[taken]]

    vector_owner = owner_of[cut_.owners]
    layer_names = np.asarray(cut_.layers, dtype=object)
    vector_lengths = list_lengths(cut_.vectors)
    values = cut_.vectors.flatten() if len(cut_.vectors) else pa.array([], pa.float64())
    new_layers = {}
    for name, child in layers.items():
        pick = np.flatnonzero((layer_names == name) & (vector_owner >= 0))
        lengths = np.zeros(len(elements), dtype=np.int64)
        lengths[vector_owner[pick]] = vector_lengths[pick]
        offsets = np.zeros(len(elements) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        mask = pa.array(~valid_mask(child))
        new_layers[name] = pa.ListArray.from_arrays(
            pa.array(offsets),
            _gather(values, vector_lengths, pick, cut_.vectors),
            mask=mask,
        )
    if list(layers) == [""]:
        new_embeddings = new_layers[""]
    else:
        new_embeddings = pa.StructArray.from_arrays(
            list(new_layers.values()),
            names=list(new_layers),
            mask=pa.array(~has),
        )
    fields = [
        new_embeddings if field.name == "embeddings" else elements.field(i)
        for i, field in enumerate(elements.type)
    ]
    new_elements = pa.StructArray.from_arrays(
        fields,
        names=[f.name for f in elements.type],
        mask=pa.array(~valid_mask(elements)),
    )
    offsets = predictions.offsets
    rebuilt = pa.ListArray.from_arrays(
        pc.subtract(offsets, offsets[0]),
        new_elements,
        mask=pa.array(~valid_mask(predictions)),
    )
    index = table.column_names.index("predictions")
    return table.set_column(index, "predictions", rebuilt), refused


def _first_index(sorted_rows: np.ndarray) -> np.ndarray:
    """For each position of a sorted array, the position where its value first appears."""
    if not len(sorted_rows):
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, sorted_rows[1:] != sorted_rows[:-1]])
    return np.repeat(starts, np.diff(np.r_[starts, len(sorted_rows)]))


def _gather(values: pa.Array, lengths: np.ndarray, pick: np.ndarray, vectors: pa.Array) -> pa.Array:
    """The numbers of the vectors ``pick`` (in that order), one flat double array."""
    if len(pick) == len(vectors) and (np.diff(pick) == 1).all():
        return values.cast(pa.float64())
    return pc.list_flatten(vectors.take(pa.array(pick, pa.int64()))).cast(pa.float64())
