"""Write query results to a byte stream as JSON, NDJSON, CSV or Parquet, batch by batch.

JSON and NDJSON write JSON values (``metadata``, ``metrics``...) as objects and times in ISO 8601;
CSV writes nested values (lists, child rows, JSON objects) as JSON text in their cell; Parquet
keeps the Arrow types. Nothing is buffered beyond one batch.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import BinaryIO, Literal

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from lake.query.select import Rows, decode_json

Format = Literal["json", "ndjson", "csv", "parquet"]
FORMATS: tuple[Format, ...] = ("json", "ndjson", "csv", "parquet")

_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_SERIALIZE_NUMPY


def write(rows: Rows, out: BinaryIO, fmt: Format = "ndjson") -> int:
    """Write ``rows`` to ``out`` in ``fmt``; return the number of rows written."""
    writers: dict[str, Callable[[Rows, BinaryIO], int]] = {
        "json": _json,
        "ndjson": _ndjson,
        "csv": _csv,
        "parquet": _parquet,
    }
    if fmt not in writers:
        raise ValueError(f"unknown format {fmt!r} (formats: {', '.join(FORMATS)})")
    return writers[fmt](rows, out)


def json_lines(rows: Rows, batch: pa.RecordBatch) -> list[bytes]:
    """Each row of ``batch`` as one JSON object, JSON-text columns embedded as values."""
    if any("." in key for key in rows.json_keys):  # JSON inside child rows: decode it all
        return [
            orjson.dumps(row, option=_OPTIONS)
            for row in decode_json(batch.to_pylist(), rows.json_keys)
        ]
    frame = pl.from_arrow(batch)
    assert isinstance(frame, pl.DataFrame)
    if frame.height == 0:
        return []
    parts = []
    for name in frame.columns:
        key = orjson.dumps(name).decode() + ":"
        if name in rows.json_keys:  # stored JSON text: embed it as it is
            parts.append(pl.lit(key) + pl.col(name).fill_null("null"))
        else:  # polars encodes the value (strings escaped, times in ISO 8601, lists, structs)
            encoded = pl.struct(pl.col(name)).struct.json_encode()
            parts.append(encoded.str.strip_prefix("{").str.strip_suffix("}"))
    line = pl.concat_str([pl.lit("{"), pl.concat_str(parts, separator=","), pl.lit("}")])
    return [text.encode() for text in frame.select(line).to_series().to_list()]


def _ndjson(rows: Rows, out: BinaryIO) -> int:
    count = 0
    for batch in rows:
        lines = json_lines(rows, batch)
        if lines:
            out.write(b"\n".join(lines) + b"\n")
        count += len(lines)
    return count


def _json(rows: Rows, out: BinaryIO) -> int:
    count = 0
    out.write(b"[")
    for batch in rows:
        lines = json_lines(rows, batch)
        if lines:
            out.write((b",\n" if count else b"\n") + b",\n".join(lines))
        count += len(lines)
    out.write(b"\n]\n" if count else b"]\n")
    return count


def _csv(rows: Rows, out: BinaryIO) -> int:
    nested = [
        i
        for i, f in enumerate(rows.schema)
        if pa.types.is_nested(f.type) or f.name in rows.json_keys
    ]
    flat = pa.schema(
        [pa.field(f.name, pa.string()) if i in nested else f for i, f in enumerate(rows.schema)]
    )
    count = 0
    with pacsv.CSVWriter(out, flat) as writer:
        for batch in rows:
            columns = [
                _as_json_text(batch.column(i)) if i in nested else batch.column(i)
                for i in range(batch.num_columns)
            ]
            writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=flat))
            count += batch.num_rows
    return count


def _as_json_text(column: pa.Array) -> pa.Array:
    if pa.types.is_string(column.type):
        return column  # already JSON text
    values = column.to_pylist()
    return pa.array(
        [None if v is None else orjson.dumps(v, option=_OPTIONS).decode() for v in values],
        pa.string(),
    )


def _parquet(rows: Rows, out: BinaryIO) -> int:
    count = 0
    sink = out if isinstance(out, io.BufferedIOBase | io.RawIOBase) else pa.PythonFile(out, "w")
    with pq.ParquetWriter(sink, rows.schema) as writer:
        for batch in rows:
            writer.write_batch(batch)
            count += batch.num_rows
    return count
