"""Streaming NDJSON: lines split on ``\\n``, ``\\r\\n`` or bare ``\\r``, gzip/bz2 by magic bytes.

The reader never holds more than one read chunk plus one line in memory. A line longer than the
configured cap is reported as an error for that line and skipped. JSON is parsed leniently:
``NaN`` and ``Infinity`` are accepted and become ``null``.
"""

from __future__ import annotations

import bz2
import json
import math
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import orjson

from lake.errors import InputError, RecordError

CHUNK = 1 << 20
DEFAULT_MAX_LINE = 64 << 20
_SEPARATOR = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True)
class Line:
    number: int  # 1-based
    data: bytes
    error: RecordError | None = None


class _Decompressed:
    """Chunks of a stream, gunzipped or bunzipped when its first bytes say so."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.bytes_read = 0

    def chunks(self) -> Iterator[bytes]:
        first = self._read()
        if first.startswith(b"\x1f\x8b"):
            yield from self._inflate(first, lambda: zlib.decompressobj(wbits=31))
        elif first.startswith(b"BZh"):
            yield from self._inflate(first, bz2.BZ2Decompressor)
        else:
            chunk = first
            while chunk:
                yield chunk
                chunk = self._read()

    def _read(self) -> bytes:
        try:
            chunk = self.stream.read(CHUNK)
        except OSError as exc:
            raise InputError(f"cannot read the upload: {exc}") from exc
        self.bytes_read += len(chunk)
        return chunk

    def _inflate(self, first: bytes, factory: Any) -> Iterator[bytes]:
        # Several concatenated members (as written by parallel gzip tools) are all read.
        decoder = factory()
        data = first
        try:
            while data:
                out = decoder.decompress(data)
                if out:
                    yield out
                while decoder.eof and decoder.unused_data:
                    rest = decoder.unused_data
                    decoder = factory()
                    out = decoder.decompress(rest)
                    if out:
                        yield out
                data = self._read()
        except (OSError, zlib.error, EOFError, ValueError) as exc:
            raise InputError(f"the upload is not valid compressed data: {exc}") from exc
        if not decoder.eof:
            raise InputError("the upload's compressed data ends before its end marker")


class LineReader:
    """Iterate the lines of a (possibly compressed) byte stream; blank lines are skipped."""

    def __init__(self, stream: IO[bytes], *, max_line: int = DEFAULT_MAX_LINE) -> None:
        self._source = _Decompressed(stream)
        self.max_line = max_line

    @property
    def bytes_read(self) -> int:
        """Raw (compressed) bytes consumed so far, for progress reporting."""
        return self._source.bytes_read

    def __iter__(self) -> Iterator[Line]:
        number = 0
        pending = b""
        oversized = False  # the line being read has already passed max_line
        for chunk in self._source.chunks():
            data = pending + chunk if pending else chunk
            # a trailing \r may be the first half of \r\n: keep it with the unsplit tail
            suffix = b"\r" if data.endswith(b"\r") else b""
            pieces = _SEPARATOR.split(data[:-1] if suffix else data)
            pending = pieces.pop() + suffix
            for piece in pieces:
                number += 1
                if oversized:
                    oversized = False
                    yield self._too_long(number)
                elif piece.strip():
                    yield self._checked(number, piece)
            if len(pending) > self.max_line:
                oversized, pending = True, b""
        pending = pending.rstrip(b"\r")
        if oversized:
            yield self._too_long(number + 1)
        elif pending.strip():
            yield self._checked(number + 1, pending)

    def _checked(self, number: int, data: bytes) -> Line:
        if len(data) > self.max_line:
            return self._too_long(number)
        return Line(number, data)

    def _too_long(self, number: int) -> Line:
        return Line(
            number,
            b"",
            RecordError(f"line is longer than the limit of {self.max_line} bytes", line=number),
        )


def parse_line(data: bytes) -> Any:
    """Parse one JSON line; NaN and ±Infinity are accepted and become None."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordError(f"malformed JSON: {exc}") from exc
    return _drop_non_finite(value)


def _drop_non_finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _drop_non_finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_drop_non_finite(v) for v in value]
    return value
