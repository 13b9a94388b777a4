"""Shoal's lake engine: Delta tables on a local folder or S3, ingestion, uploads and jobs.

The engine knows no HTTP. Open a lake with :class:`Lake`, ingest with :class:`Uploads`, run
uploads in the background with :class:`JobRunner`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lake.errors import (
    BusyError,
    CommitConflictError,
    ConfigError,
    InputError,
    LakeError,
    LockLostError,
    LockTimeoutError,
    NotFoundError,
    QueryError,
    RecordError,
    StorageError,
)

if TYPE_CHECKING:
    from lake.jobs import JobRunner
    from lake.lake import Lake, LakeState
    from lake.storage import S3Options
    from lake.uploads import Upload, Uploads, UploadStatus

# The engine's classes are imported on first use: a process that only parses batches (a parse
# helper, lake.parsepool) imports this package without Delta, the query engine or the jobs.
_LAZY = {
    "JobRunner": "lake.jobs",
    "Lake": "lake.lake",
    "LakeState": "lake.lake",
    "S3Options": "lake.storage",
    "Upload": "lake.uploads",
    "UploadStatus": "lake.uploads",
    "Uploads": "lake.uploads",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lake' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "BusyError",
    "CommitConflictError",
    "ConfigError",
    "InputError",
    "JobRunner",
    "Lake",
    "LakeError",
    "LakeState",
    "LockLostError",
    "LockTimeoutError",
    "NotFoundError",
    "QueryError",
    "RecordError",
    "S3Options",
    "StorageError",
    "Upload",
    "UploadStatus",
    "Uploads",
]
