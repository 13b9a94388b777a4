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

_LINE_BITS = 36
_SLOT_BITS = 12
_SALT_BITS = 74 - _LINE_BITS - _SLOT_BITS
MAX_SLOT = (1 << _SLOT_BITS) - 1


def _assemble(ms: int, low74: int) -> str:
    rand_a = (low74 >> 62) & 0xFFF
    rand_b = low74 & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return str(uuid.UUID(int=value))


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
