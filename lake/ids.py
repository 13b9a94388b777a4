"""Ids: canonical lowercase UUID strings, time-ordered (UUIDv7 layout).

Rows written by an upload get ids derived from the upload and the record's line, so that a
re-run of the same upload produces the same ids, and rows of one upload sort together (which
keeps the Delta files an upsert has to rewrite few).
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid

import numpy as np
import pyarrow as pa

_LINE_BITS = 36
_SLOT_BITS = 12
_SALT_BITS = 74 - _LINE_BITS - _SLOT_BITS
MAX_SLOT = (1 << _SLOT_BITS) - 1


def _assemble(ms: int, low74: int) -> str:
    rand_a = (low74 >> 62) & 0xFFF
    rand_b = low74 & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def new_id() -> str:
    """A fresh random time-ordered id."""
    return _assemble(time.time_ns() // 1_000_000, int.from_bytes(os.urandom(10)) >> 6)


def salt_of(upload_id: str) -> int:
    digest = hashlib.blake2b(upload_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest) & ((1 << _SALT_BITS) - 1)


def derived_id(ms: int, salt: int, line: int, slot: int) -> str:
    """The id of row ``slot`` of record ``line`` of the upload with ``salt``, created at ``ms``.

    Slot 0 is the datapoint; its attachments and their children take 1, 2, ... in the order
    the record lists them. Beyond MAX_SLOT rows in one record, random ids are used.
    """
    if slot > MAX_SLOT or line >= 1 << _LINE_BITS:
        return new_id()
    low = (line << (_SLOT_BITS + _SALT_BITS)) | (slot << _SALT_BITS) | salt
    return _assemble(ms, low)


def canonical(value: object) -> str | None:
    """The canonical form of a UUID given as text, or None if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_WORDS = np.arange(1 << 16)
# each 16-bit word as its four hex digits, in memory order (first digit in the lowest byte)
_HEX_WORDS = (
    _HEX[(_WORDS >> 12) & 0xF].astype(np.uint32)
    | (_HEX[(_WORDS >> 8) & 0xF].astype(np.uint32) << 8)
    | (_HEX[(_WORDS >> 4) & 0xF].astype(np.uint32) << 16)
    | (_HEX[_WORDS & 0xF].astype(np.uint32) << 24)
).astype("<u4")
# where each character of the 8-4-4-4-12 text comes from: one of the 32 digits, or (32) a dash
_DASH = 32
_LAYOUT = np.array(
    [
        *range(0, 8),
        _DASH,
        *range(8, 12),
        _DASH,
        *range(12, 16),
        _DASH,
        *range(16, 20),
        _DASH,
        *range(20, 32),
    ]
)


def derived_ids(ms: int, salt: int, lines: np.ndarray, slots: np.ndarray) -> pa.Array:
    """Vectorised :func:`derived_id` for many (line, slot) pairs, as an Arrow string array."""
    lines = np.asarray(lines, dtype=np.uint64)
    slots = np.asarray(slots, dtype=np.uint64)
    if lines.size and (int(lines.max()) >= 1 << _LINE_BITS or int(slots.max()) > MAX_SLOT):
        return pa.array(
            [derived_id(ms, salt, int(a), int(b)) for a, b in zip(lines, slots, strict=True)]
        )
    low = (
        (lines << np.uint64(_SLOT_BITS + _SALT_BITS))
        | (slots << np.uint64(_SALT_BITS))
        | (np.uint64(salt))
    )  # 74 bits do not fit: lines stay below 2**36, so split the shift
    rand_a = (lines >> np.uint64(_LINE_BITS - 12)) & np.uint64(0xFFF)
    rand_b = low & np.uint64((1 << 62) - 1)
    high = np.uint64((ms & ((1 << 48) - 1)) << 16 | 0x7 << 12) | rand_a
    low64 = np.uint64(0b10 << 62) | rand_b
    halves = np.empty((lines.size, 2), dtype=np.uint64)
    halves[:, 0] = high
    halves[:, 1] = low64
    words = halves.astype(">u8").view(">u2").astype(np.uint16).reshape(lines.size, 8)
    digits = np.empty((lines.size, 9), dtype=np.uint32)  # 32 hex digits, then the dash
    digits[:, :8] = _HEX_WORDS.take(words)
    digits[:, 8] = ord("-")
    flat = pa.py_buffer(np.take(digits.view(np.uint8), _LAYOUT, axis=1))
    offsets = pa.py_buffer(np.arange(0, 36 * (lines.size + 1), 36, dtype=np.int32))
    return pa.StringArray.from_buffers(lines.size, offsets, flat)
