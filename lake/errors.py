"""Exceptions raised by the lake engine.

Every error the engine raises on purpose derives from :class:`LakeError`::

    LakeError
    ├── ConfigError          a lake URI or option that cannot be used
    ├── StorageError         the object store or a Delta table failed underneath us
    │   ├── CommitConflictError   a Delta commit kept conflicting after every retry
    │   └── LockLostError         the writer lock expired and another writer took it
    ├── LockTimeoutError     the lake's writer lock could not be taken in time
    ├── BusyError            too much work is queued: try again later
    ├── RecordError          one ingestion record cannot be applied (line, field, reason)
    ├── InputError           an upload's input cannot be read at all (fatal for the upload)
    ├── QueryError           a filter, column, order or SQL statement that cannot be run
    └── NotFoundError        an id (upload, datapoint, ...) that the lake does not hold

A :class:`RecordError` never stops an upload: the record is reported and skipped.
"""

from __future__ import annotations


class LakeError(Exception):
    """Base class of every error raised on purpose by :mod:`lake`."""


class ConfigError(LakeError):
    """A lake URI or storage option is missing or malformed."""


class StorageError(LakeError):
    """The object store or the Delta engine failed."""


class CommitConflictError(StorageError):
    """A Delta commit conflicted with concurrent writers more times than allowed."""


class LockLostError(StorageError):
    """The writer lock expired while held and another writer took it over."""


class LockTimeoutError(LakeError):
    """The lake's writer lock stayed held by another writer past the timeout."""


class BusyError(LakeError):
    """More work is queued than the lake accepts; the caller should retry later."""


class NotFoundError(LakeError):
    """An id that the lake does not hold."""


class InputError(LakeError):
    """The input of an upload cannot be read (undecodable file, unreadable source)."""


class QueryError(LakeError):
    """A query cannot be run as written: the message names the filter, column or clause."""


class RecordError(LakeError):
    """One record cannot be applied; the others of its upload still are.

    ``field`` is a dotted path into the record (``predictions[0].logits``), or ``""`` when the
    record as a whole is at fault. ``line`` is 1-based and set once the record's line is known.
    """

    def __init__(self, reason: str, *, field: str = "", line: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.line = line

    def at(self, prefix: str) -> RecordError:
        """Return the same error with ``prefix`` prepended to its field path."""
        field = (
            f"{prefix}.{self.field}"
            if self.field and not self.field.startswith("[")
            else (f"{prefix}{self.field}")
        )
        return RecordError(self.reason, field=field, line=self.line)

    def to_dict(self) -> dict[str, object]:
        return {"line": self.line, "field": self.field, "reason": self.reason}

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else "record"
        if self.field:
            where += f", field {self.field}"
        return f"{where}: {self.reason}"
