"""Shoal's lake engine: Delta tables on a local folder or S3, ingestion, uploads and jobs.

The engine knows no HTTP. Open a lake with :class:`Lake`, ingest with :class:`Uploads`, run
uploads in the background with :class:`JobRunner`.
"""

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
from lake.jobs import JobRunner
from lake.lake import Lake, LakeState
from lake.storage import S3Options
from lake.uploads import Upload, Uploads, UploadStatus

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
