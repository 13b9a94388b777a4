"""Streaming NDJSON: lines split on ``\\n``, ``\\r\\n`` or bare ``\\r``; gzip, bz2 or zstd by magic
bytes.

The reader never holds more than one read chunk plus one line in memory. A line longer than the
configured cap is reported as an error for that line and skipped. JSON is parsed leniently:
``NaN`` and ``Infinity`` are accepted and become ``null``.
"""

from __future__ import annotations

import bz2
import io
import json
import math
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, NamedTuple

import numpy as np
import orjson
import zstandard

from lake.errors import InputError, RecordError

CHUNK = 1 << 20
DEFAULT_MAX_LINE = 64 << 20
# a batch also ends at about this much text (records with large embeddings): 128 MiB rather
# than 64 halves a bulk upload's per-batch costs (~14 small requests and 5 commits on S3) for
# ~0.5 GiB more peak memory; S3 ingest of 512-d embeddings gained 8–20% (BENCHMARKS.md)
DEFAULT_BATCH_BYTES = 128 << 20
GZIP_MAGIC = b"\x1f\x8b"
BZ2_MAGIC = b"BZh"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_COMPRESSED = (GZIP_MAGIC, BZ2_MAGIC, ZSTD_MAGIC)
#: zstd level of landed uploads. Measured on a 2.1 GB embedding file: level 1 gives 314 MB
#: and level 3 251 MB, for the same 3.8 s of CPU, and the object store is spared the 63 MB
#: (SeaweedFS spends ~9 ms of CPU per MB it stores); on a 446 MB file of short records, level
#: 3 costs 0.2 s of CPU more than level 1 (29 MB instead of 28).
LANDING_ZSTD_LEVEL = 3
#: zstd compresses in this many threads (measured: a 650 MB embedding file in 0.9 s with 2
#: threads, 1.6 s with one, for the same CPU time and output)
ZSTD_THREADS = min(4, os.cpu_count() or 1) if (os.cpu_count() or 1) > 1 else 0


class Line(NamedTuple):
    number: int  # 1-based
    data: bytes
    error: RecordError | None = None


@dataclass
class RawBatch:
    """Complete lines of a stream, ``\n``-separated, with the numbers of the non-blank ones.

    Lines over the size limit are left out of ``data`` and reported in ``errors``.
    """

    data: bytes
    numbers: np.ndarray
    errors: list[Line]

    def __len__(self) -> int:
        return len(self.numbers) + len(self.errors)

    @property
    def last_line(self) -> int:
        last = [int(self.numbers[-1])] if len(self.numbers) else []
        return max([*last, *(e.number for e in self.errors)], default=0)

    def through(self, last: int) -> RawBatch:
        """The batch without its lines after line ``last``."""
        if self.last_line <= last:
            return self
        keep = [line for line in self.lines() if line.number <= last]
        return RawBatch(
            b"\n".join(line.data for line in keep),
            np.array([line.number for line in keep], dtype=self.numbers.dtype),
            [e for e in self.errors if e.number <= last],
        )

    def lines(self) -> list[Line]:
        """The non-blank lines with their numbers (errors not included)."""
        pieces = [piece for piece in self.data.split(b"\n") if piece.strip()]
        return [Line(int(n), piece) for n, piece in zip(self.numbers, pieces, strict=True)]


def zstd_unless_compressed(source: IO[bytes]) -> IO[bytes]:
    """``source`` compressed with zstd as it is read (NDJSON shrinks ~7-15x at several hundred
    MB/s a core), or as it is when it is gzip, bz2 or zstd already."""
    head = source.read(len(ZSTD_MAGIC))
    whole = _Prefixed(head, source)
    if head.startswith(_COMPRESSED):
        return io.BufferedReader(whole, CHUNK)
    compressor = zstandard.ZstdCompressor(level=LANDING_ZSTD_LEVEL, threads=ZSTD_THREADS)
    compressing = compressor.stream_reader(io.BufferedReader(whole, CHUNK), closefd=False)
    # (a buffered reader fills every read: object stores want parts of a fixed size)
    return io.BufferedReader(compressing, CHUNK)


class _Prefixed(io.RawIOBase):
    """Bytes already read from a stream, then the rest of it."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self.head = head
        self.rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.head:
            n = min(len(buffer), len(self.head))
            buffer[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        data = self.rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _Decompressed:
    """Chunks of a stream, decompressed when its first bytes say it is gzip, bz2 or zstd."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.bytes_read = 0

    def chunks(self) -> Iterator[bytes]:
        first = self._read()
        while 0 < len(first) < len(ZSTD_MAGIC):  # enough bytes to tell every magic apart
            more = self._read()
            if not more:
                break
            first += more
        if first.startswith(GZIP_MAGIC):
            yield from self._inflate(first, lambda: zlib.decompressobj(wbits=31))
        elif first.startswith(BZ2_MAGIC):
            yield from self._inflate(first, bz2.BZ2Decompressor)
        elif first.startswith(ZSTD_MAGIC):
            yield from self._inflate(first, lambda: zstandard.ZstdDecompressor().decompressobj())
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
                if decoder.eof:  # a member ended with the previous chunk: the next one starts
                    decoder = factory()
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
        except (OSError, zlib.error, EOFError, ValueError, zstandard.ZstdError) as exc:
            raise InputError(f"the upload is not valid compressed data: {exc}") from exc
        if not decoder.eof:
            raise InputError("the upload's compressed data ends before its end marker")


def _line_ends(data: bytes, start: int, stop: int) -> np.ndarray:
    """Where the lines of ``data[start:stop]`` end (after each \n), counted from ``start``."""
    # long lines (embeddings): a search per line, at the speed of memchr; short ones: one
    # vector pass over every byte
    ends = []
    find = data.find
    at = find(b"\n", start, stop)
    while at >= 0:
        ends.append(at + 1 - start)
        if len(ends) == _PROBE_LINES and at - start < _PROBE_LINES * _LONG_LINE:
            window = np.frombuffer(data, dtype=np.uint8, count=stop - start, offset=start)
            return np.flatnonzero(window == 10) + 1
        at = find(b"\n", at + 1, stop)
    return np.asarray(ends, dtype=np.int64)


_PROBE_LINES = 64
_LONG_LINE = 512  # bytes: from this length on, a search per line costs less


_BLANK = np.zeros(256, dtype=bool)  # by byte value: \t \n \v \f space
_BLANK[[9, 10, 11, 12, 32]] = True


def read_batches(
    stream: IO[bytes],
    *,
    batch_lines: int,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    max_line: int = DEFAULT_MAX_LINE,
    skip_through: int = 0,
    on_read: Any = None,
) -> Iterator[RawBatch]:
    """Batches of at most ``batch_lines`` non-blank lines and about ``batch_bytes`` of text
    (lines up to ``skip_through`` skipped), so that large records make smaller batches.

    ``\r\n`` and bare ``\r`` become ``\n``; ``on_read(raw_bytes_so_far)`` reports progress.
    """
    source = _Decompressed(stream)
    splitter = _Splitter(max_line, skip_through)
    for chunk in source.chunks():
        splitter.feed(chunk)
        if on_read is not None:
            on_read(source.bytes_read)
        while splitter.count > batch_lines or splitter.size > batch_bytes:
            yield splitter.take(batch_lines, batch_bytes)
    splitter.finish()
    while splitter.count or splitter.errors:
        yield splitter.take(batch_lines, batch_bytes)


class _Splitter:
    """Turns chunks into complete, numbered, ``\n``-separated lines."""

    def __init__(self, max_line: int, skip_through: int) -> None:
        self.max_line = max_line
        self.skip_through = skip_through
        self.number = 0  # lines completed so far
        self.pending = b""
        self.oversized = False
        self.parts: list[bytes | memoryview] = []
        self.numbers: list[np.ndarray] = []
        self.ends: list[np.ndarray] = []  # end offset (exclusive, with its \n) of each line
        self.errors: list[Line] = []
        self.count = 0

    def feed(self, chunk: bytes) -> None:
        if self.oversized or b"\r" in chunk or self.pending.endswith(b"\r"):
            self._feed_and_mend(chunk)
            return
        # the common case, with no copy of the chunk: the line the previous chunks began is
        # completed on its own, the chunk's whole lines are kept as a view of it
        cut = chunk.rfind(b"\n")
        if cut < 0:
            self.pending += chunk
        else:
            start = 0
            if self.pending:
                start = chunk.index(b"\n") + 1
                self._complete(self.pending + chunk[:start])
            if start <= cut:
                self._complete(chunk, start, cut + 1)
            self.pending = chunk[cut + 1 :]
        if len(self.pending) > self.max_line:
            self.oversized, self.pending = True, b""

    def _feed_and_mend(self, chunk: bytes) -> None:
        """:meth:`feed` where line ends are to be mended (``\r\n`` or ``\r``) or a line
        too long is being passed over."""
        data = self.pending + chunk if self.pending else chunk
        # a trailing \r may be the first half of \r\n: keep it with the unsplit tail
        suffix = b"\r" if data.endswith(b"\r") else b""
        body = data[:-1] if suffix else data
        if b"\r" in body:
            body = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        cut = body.rfind(b"\n")
        if cut < 0:
            self.pending = body + suffix
        else:
            self.pending = body[cut + 1 :] + suffix
            self._complete(body[: cut + 1])
        # a \r held back is a line end, not part of the line: it stays when the line goes
        held = b"\r" if self.pending.endswith(b"\r") else b""
        if len(self.pending) - len(held) > self.max_line:
            self.oversized, self.pending = True, held

    def finish(self) -> None:
        tail = self.pending.rstrip(b"\r")
        self.pending = b""
        if self.oversized:
            self._complete(b"\n")
        elif tail.strip():
            self._complete(tail + b"\n")

    def _complete(self, data: bytes, start: int = 0, stop: int | None = None) -> None:
        """Register ``data[start:stop]`` (kept as a view of ``data``): whole lines, each
        ending with \n."""
        stop = len(data) if stop is None else stop
        if self.oversized:  # the first line of the block ends a line that was too long
            self.oversized = False
            self.number += 1
            if self.number > self.skip_through:
                self.errors.append(_too_long(self.number, self.max_line))
            start = data.index(b"\n", start, stop) + 1
            if start == stop:
                return
        whole = start == 0 and stop == len(data)
        block: bytes | memoryview = data if whole else memoryview(data)[start:stop]
        raw = np.frombuffer(block, dtype=np.uint8)
        ends = _line_ends(data, start, stop)
        starts = np.concatenate(([0], ends[:-1]))
        numbers = self.number + 1 + np.arange(len(ends), dtype=np.int64)
        self.number += len(ends)
        # a line is blank when it holds only white space: look closer only at lines that
        # start with white space (a record line starts with "{")
        keep = ~_BLANK[raw[np.minimum(starts, len(raw) - 1)]]
        for i in np.flatnonzero(~keep):
            keep[i] = bool(bytes(block[starts[i] : ends[i]]).strip())
        keep &= numbers > self.skip_through
        too_long = keep & (ends - starts - 1 > self.max_line)
        if too_long.any():
            self.errors.extend(_too_long(int(n), self.max_line) for n in numbers[too_long])
            keep &= ~too_long
        if not keep.all():
            block = b"".join(block[a:b] for a, b in zip(starts[keep], ends[keep], strict=True))
            lengths = (ends - starts)[keep]
            ends = np.cumsum(lengths)
            numbers = numbers[keep]
        if len(numbers):
            self.parts.append(block)
            self.numbers.append(numbers)
            self.ends.append(ends)
            self.count += len(numbers)

    @property
    def size(self) -> int:
        return sum(len(part) for part in self.parts)

    def take(self, size: int, max_bytes: int) -> RawBatch:
        """The first lines held, at most ``size`` of them and about ``max_bytes`` (at least one
        line), with the errors among them. Only the bytes taken are copied."""
        offset = 0
        ends = []
        for part, part_ends in zip(self.parts, self.ends, strict=True):
            ends.append(part_ends + offset)
            offset += len(part)
        all_ends = np.concatenate(ends) if ends else np.zeros(0, dtype=np.int64)
        numbers = np.concatenate(self.numbers) if self.numbers else np.zeros(0, dtype=np.int64)
        size = min(size, max(1, int(np.searchsorted(all_ends, max_bytes, side="right"))))
        if len(numbers) > size:
            head_numbers = numbers[:size]
            # parts hold whole lines: the cut falls inside part k, at one of its line ends
            k = int(np.searchsorted(np.cumsum([len(n) for n in self.numbers]), size, "right"))
            within = size - sum(len(n) for n in self.numbers[:k])
            split = int(self.ends[k][within - 1]) if within else 0
            part = self.parts[k]
            head = b"".join([*self.parts[:k], part[:split]])
            rest_ends = self.ends[k][within:] - split
            self.parts = [part[split:], *self.parts[k + 1 :]]
            self.numbers = [self.numbers[k][within:], *self.numbers[k + 1 :]]
            self.ends = [rest_ends, *self.ends[k + 1 :]]
        else:
            head, head_numbers = b"".join(self.parts), numbers
            self.parts, self.numbers, self.ends = [], [], []
        self.count = sum(len(n) for n in self.numbers)
        if self.count:  # errors up to the last line taken go with this batch
            last = int(head_numbers[-1])
            errors = [e for e in self.errors if e.number <= last]
            self.errors = [e for e in self.errors if e.number > last]
        else:
            errors, self.errors = self.errors, []
        return RawBatch(head, head_numbers, errors)


def _too_long(number: int, limit: int) -> Line:
    return Line(
        number, b"", RecordError(f"line is longer than the limit of {limit} bytes", line=number)
    )


class LineReader:
    """Iterate the lines of a (possibly compressed) byte stream; blank lines are skipped."""

    def __init__(self, stream: IO[bytes], *, max_line: int = DEFAULT_MAX_LINE) -> None:
        self.stream = stream
        self.max_line = max_line

    def __iter__(self) -> Iterator[Line]:
        for batch in read_batches(self.stream, batch_lines=1 << 16, max_line=self.max_line):
            yield from sorted([*batch.lines(), *batch.errors], key=lambda line: line.number)


def parse_line(data: bytes) -> Any:
    """Parse one JSON line; NaN and ±Infinity are accepted and become None."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(
            f"not valid UTF-8: byte 0x{data[exc.start]:02x} at position {exc.start}"
        ) from None
    try:
        return _drop_non_finite(json.loads(text))
    except ValueError as exc:
        raise RecordError(f"malformed JSON: {exc}") from exc
    except RecursionError:
        raise RecordError("malformed JSON: nested too deeply") from None


def dump_json(value: Any) -> str:
    """Compact JSON text of a parsed value, as :func:`parse_line` reads it back: non-finite
    floats become null, and integers beyond 64 bits (which orjson refuses) are kept."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        pass
    return json.dumps(_drop_non_finite(value), separators=(",", ":"), ensure_ascii=False)


def _drop_non_finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _drop_non_finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_drop_non_finite(v) for v in value]
    return value
