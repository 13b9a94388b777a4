"""Uploads: a file kept in the lake's landing area, a row in ``uploads``, and the job applying it.

Status lifecycle: ``RUNNING`` → ``SUCCEEDED`` (every line processed; failed records listed),
``FAILED`` (the input cannot be read, or the lake failed), ``TIMED_OUT`` (past its deadline) or
``ABORTED`` (cancelled). Progress (``lines_done``) is committed in the same lake state as each
batch's rows, so a job interrupted at any point resumes after its last committed batch.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc

from lake import ids, parsepool
from lake.batch import BatchCounts, IdSource
from lake.errors import (
    InputError,
    LakeError,
    LockTimeoutError,
    NotFoundError,
    RecordError,
    StorageError,
)
from lake.faults import crash_point
from lake.ingest import BatchPlanner
from lake.lake import Lake, LakeState
from lake.maintenance import tidy
from lake.ndjson import DEFAULT_MAX_LINE, RawBatch, read_batches
from lake.prepare import NATIVE_MIN_LINES, PreparedBatch, prepare_batch
from lake.storage import file_fingerprint
from lake.tables import SCHEMAS

log = logging.getLogger(__name__)

DEFAULT_ORGANIZATION = "default"
DEFAULT_BATCH_SIZE = 50_000
MAX_STORED_ERRORS = 1000
_ABORT_PREFIX = "_shoal/abort/"
PENDING_PREFIX = "_shoal/pending/"  # uploads accepted for group commit
LANDING_PREFIX = "_landing/"  # upload files
_LINKED = "linked"  # option: (size, mtime_ns) of an upload file the lake links, not copies


def pending_marker(marker: dict[str, Any], data: bytes | None) -> bytes:
    """A pending upload's marker (see :mod:`lake.groups`): its JSON on one line, then (when
    the upload was submitted as data rather than landed) its NDJSON."""
    head = json.dumps(marker).encode()
    return head if data is None else head + b"\n" + data


def read_pending_marker(raw: bytes) -> tuple[dict[str, Any], bytes]:
    """A marker's JSON and the data after it (empty for a landed upload)."""
    head, _, data = raw.partition(b"\n")
    marker: dict[str, Any] = json.loads(head)
    return marker, data


@dataclass(frozen=True)
class LandingReport:
    """What :func:`prune_landing` did: files deleted, and old files kept for an upload."""

    deleted: int
    kept: int


def prune_landing(lake: Lake, *, retention_hours: float) -> LandingReport:
    """Delete the upload files no upload reads any more: those of the landing area written
    more than ``retention_hours`` ago that neither a RUNNING upload nor an upload accepted
    for group commit (a pending marker) reads. A finished upload keeps its row (status,
    counts, errors); a file uploaded but never ingested goes too, as do the parts of a copy a
    crash cut short.

    The files are listed first and what needs them is read after, so an upload started from
    one of them meanwhile keeps it; the one case left is ``/ingest`` naming a file uploaded
    more than the retention period ago while the deletion runs.
    """
    cutoff = time.time() - retention_hours * 3600
    old = [key for key, written in lake.store.list_dated(LANDING_PREFIX) if written < cutoff]
    if not old:
        return LandingReport(0, 0)
    needed: set[str] = set()
    for key in lake.store.list(PENDING_PREFIX):
        raw = lake.store.get(key)
        if raw is not None:  # (else committed meanwhile: its file went with it)
            needed.add(read_pending_marker(raw)[0].get("landing_key") or "")
    running = lake.read(
        "uploads",
        columns=["landing_key"],
        filter=pc.field("status") == str(UploadStatus.RUNNING),
    )
    needed.update(key or "" for key in running.column("landing_key").to_pylist())
    unneeded = [key for key in old if key not in needed]
    lake.store.delete_many(unneeded)
    if unneeded:
        log.info("deleted %d upload files of the landing area", len(unneeded))
    return LandingReport(len(unneeded), len(old) - len(unneeded))


#: Opens a URL for streaming (the server's allow-listed fetcher: :mod:`api.fetch`); raises
#: :class:`InputError` with the reason when the URL may not or cannot be read, also mid-stream.
Fetcher = Callable[[str], contextlib.AbstractContextManager[IO[bytes]]]


class UploadStatus(StrEnum):
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    ABORTED = "ABORTED"

    @property
    def finished(self) -> bool:
        return self is not UploadStatus.RUNNING


@dataclass
class Upload:
    """What the lake knows of one upload."""

    id: str
    organization_id: str
    status: UploadStatus
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    source: str = ""
    landing_key: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    lines_done: int = 0
    records_read: int = 0
    counts: BatchCounts = field(default_factory=BatchCounts)
    failures: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    error_message: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Upload:
        return cls(
            id=row["id"],
            organization_id=row["organization_id"],
            status=UploadStatus(row["status"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            finished_at=row["finished_at"],
            source=row["source"] or "",
            landing_key=row["landing_key"] or "",
            options=json.loads(row["options"] or "{}"),
            lines_done=row["lines_done"] or 0,
            records_read=row["records_read"] or 0,
            counts=BatchCounts(
                row["datapoints_created"] or 0,
                row["datapoints_updated"] or 0,
                row["predictions"] or 0,
                row["groundtruths"] or 0,
            ),
            failures=row["failures"] or 0,
            errors=json.loads(row["errors"] or "[]"),
            error_message=row["error_message"],
        )

    @classmethod
    def from_marker(cls, upload_id: str, marker: dict[str, Any]) -> Upload:
        """A pending upload (accepted for group commit) from its marker."""
        created = datetime.fromisoformat(marker["created_at"])
        return cls(
            upload_id,
            marker["organization_id"],
            UploadStatus.RUNNING,
            created,
            created,
            source=marker.get("source", ""),
            landing_key=marker.get("landing_key") or "",
            options=marker.get("options") or {},
        )

    def to_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "organization_id": self.organization_id,
            "status": str(self.status),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "finished_at": self.finished_at,
            "source": self.source,
            "landing_key": self.landing_key,
            "options": json.dumps(self.options),
            "lines_done": self.lines_done,
            "records_read": self.records_read,
            **asdict(self.counts),
            "failures": self.failures,
            "errors": json.dumps(self.errors),
            "error_message": self.error_message,
        }

    def progress(self) -> dict[str, Any]:
        """The counters kept in the lake state while the upload runs."""
        return {
            "lines_done": self.lines_done,
            "records_read": self.records_read,
            **asdict(self.counts),
            "failures": self.failures,
            "updated_at": self.updated_at.isoformat(),
        }

    def with_progress(self, progress: dict[str, Any] | None) -> Upload:
        if not progress:
            return self
        self.lines_done = int(progress["lines_done"])
        self.records_read = int(progress["records_read"])
        self.counts = BatchCounts(
            *(int(progress[name]) for name in BatchCounts.__dataclass_fields__)
        )
        self.failures = int(progress["failures"])
        self.updated_at = datetime.fromisoformat(progress["updated_at"])
        return self

    def summary(self, *, max_errors: int = 10) -> dict[str, Any]:
        """A JSON-ready digest: id, status, counts, first errors."""
        return {
            "id": self.id,
            "status": str(self.status),
            "records_read": self.records_read,
            **asdict(self.counts),
            "failures": self.failures,
            "errors": self.errors[:max_errors],
            "error_message": self.error_message,
        }


ProgressCallback = Callable[[int], None]


class Uploads:
    """Create, inspect and run the uploads of one lake."""

    def __init__(
        self,
        lake: Lake,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_line: int = DEFAULT_MAX_LINE,
        fast_path: bool = True,
        storage_patience: float = 300.0,
        fetcher: Fetcher | None = None,
        parse_workers: int = 2,
        parse_processes: bool = True,
    ) -> None:
        self.lake = lake
        self.parse_workers = max(1, parse_workers)  # batches parsed while one commits
        # batches of at least process_min_bytes are parsed in helper processes (lake.parsepool)
        self.helpers: parsepool.ParseProcesses | None = (
            parsepool.parse_processes(self.parse_workers) if parse_processes else None
        )
        self.process_min_bytes = parsepool.PROCESS_MIN_BYTES
        self.fetcher = fetcher  # None: uploads of URLs are refused
        self.batch_size = batch_size
        self.max_line = max_line
        # how long a run waits for unreachable storage (resuming after its last committed
        # batch) before the upload fails
        self.storage_patience = storage_patience
        self.fast_path = fast_path  # off: every record takes the per-record path (tests)
        # upload id -> (path, fingerprint) of a file this process copied into the lake: a run
        # here reads it rather than the copy, while it is unchanged (see :meth:`_open`)
        self._copied_from: dict[str, tuple[str, tuple[int, int]]] = {}

    # -- creating and reading ------------------------------------------------------------------
    def create(
        self,
        source: str | os.PathLike[str] | bytes | IO[bytes],
        *,
        organization_id: str = DEFAULT_ORGANIZATION,
        options: dict[str, Any] | None = None,
    ) -> Upload:
        """Land ``source`` (a file path, bytes or a binary stream) and record a RUNNING upload."""
        key = f"{LANDING_PREFIX}{ids.new_id()}"
        copied_from = None  # (path, fingerprint) of a file copied whole and unchanged
        if isinstance(source, bytes):
            self.lake.store.put(key, source)
            label = f"<{len(source)} bytes>"
        elif not isinstance(source, str | os.PathLike):
            self.lake.store.land(key, source)
            label = str((options or {}).get("name") or "<stream>")
        else:
            if not os.path.isfile(source):
                raise InputError(f"no such file: {os.fspath(source)}")
            before = file_fingerprint(source)
            linked = self.lake.store.land_file(key, source)
            if linked is not None:  # the lake holds the file itself: a rewrite would show
                options = {**(options or {}), _LINKED: list(linked)}
            label = os.path.basename(os.fspath(source))
            if linked is None and before is not None and file_fingerprint(source) == before:
                copied_from = (os.fspath(source), before)
        upload = self.start(key, organization_id=organization_id, options=options, label=label)
        if copied_from is not None:
            self._copied_from[upload.id] = copied_from
        return upload

    def start(
        self,
        landing_key: str,
        *,
        organization_id: str = DEFAULT_ORGANIZATION,
        options: dict[str, Any] | None = None,
        label: str = "",
        upload_id: str | None = None,
        created_at: datetime | None = None,
    ) -> Upload:
        """Record a RUNNING upload of an object already in the lake (``landing_key``).

        With ``upload_id`` (an upload accepted earlier, handed over by a group committer),
        an upload the lake already holds a row of is returned as it stands: the check and the
        write are one transaction, so two processes handing the same upload over record it
        once, and one that already ran (maybe to its end) is never started again.
        """
        if self.lake.store.size(landing_key) is None:
            raise InputError(f"nothing was uploaded under {landing_key!r}")
        now = created_at or datetime.now(UTC)
        upload = Upload(
            upload_id or ids.new_id(),
            organization_id,
            UploadStatus.RUNNING,
            now,
            now,
            source=label or landing_key.rsplit("/", 1)[-1],
            landing_key=landing_key,
            options=dict(options or {}),
        )
        return self._save(upload, unless_recorded=upload_id is not None)

    def fetch(
        self,
        url: str,
        *,
        organization_id: str = DEFAULT_ORGANIZATION,
        options: dict[str, Any] | None = None,
        label: str = "",
    ) -> Upload:
        """Record a RUNNING upload of ``url``: its run first copies the file into the landing
        area with the fetcher (a run resumed after a crash fetches again if the copy was not
        complete), then applies it like any upload."""
        if self.fetcher is None:
            raise InputError(f"cannot ingest {label or url!r}: this lake does not fetch URLs")
        now = datetime.now(UTC)
        upload_id = ids.new_id()
        upload = Upload(
            upload_id,
            organization_id,
            UploadStatus.RUNNING,
            now,
            now,
            source=label or url,
            landing_key=f"{LANDING_PREFIX}{upload_id}",
            options={**(options or {}), "url": url},
        )
        return self._save(upload)

    def _save(self, upload: Upload, *, unless_recorded: bool = False) -> Upload:
        """Write a new upload's row and progress; ``unless_recorded``: unless the lake holds
        its row already (checked in the same transaction), which is then returned."""
        with self.lake.transaction() as txn:
            if unless_recorded and txn.may_hold("uploads", "id", [upload.id]):
                with contextlib.suppress(NotFoundError):
                    return self._current(upload.id, txn.base)
            txn.upsert("uploads", _rows([upload]))
            txn.set_progress(upload.id, upload.progress())
        return upload

    def get(self, upload_id: str, *, organization_id: str | None = None) -> Upload:
        state = self.lake.state()
        upload_id = ids.canonical(upload_id) or upload_id
        try:
            upload = self._current(upload_id, state, organization_id=organization_id)
        except NotFoundError:
            pending = self.pending(upload_id)
            if pending is None:  # committed between the two reads, or unknown
                state = self.lake.state()
                upload = self._current(upload_id, state, organization_id=organization_id)
            elif organization_id not in (None, pending.organization_id):
                raise
            else:
                return pending
        if not upload.status.finished:
            upload.errors = self._stored_errors(upload.id, state)
        return upload

    def pending(self, upload_id: str) -> Upload | None:
        """An upload accepted for group commit and not committed yet (see :mod:`lake.groups`)."""
        if ids.canonical(upload_id) != upload_id:  # markers are named by the ids the lake gives
            return None
        raw = self.lake.store.get(PENDING_PREFIX + upload_id)
        if raw is None:
            return None
        return Upload.from_marker(upload_id, read_pending_marker(raw)[0])

    def _stored_errors(self, upload_id: str, state: LakeState) -> list[dict[str, Any]]:
        rows = self.lake.read(
            "upload_errors",
            state=state,
            columns=["line", "field", "reason"],
            filter=pc.field("upload_id") == upload_id,
        )
        return rows.sort_by("line").slice(0, MAX_STORED_ERRORS).to_pylist()

    def list_uploads(
        self, *, organization_id: str | None = None, status: UploadStatus | None = None
    ) -> list[Upload]:
        condition = None
        if organization_id is not None:
            condition = pc.field("organization_id") == organization_id
        if status is not None:
            by_status = pc.field("status") == str(status)
            condition = by_status if condition is None else condition & by_status
        state = self.lake.state()
        rows = self.lake.read("uploads", state=state, filter=condition).to_pylist()
        uploads = [
            Upload.from_row(row).with_progress(state.progress.get(row["id"])) for row in rows
        ]
        return sorted(uploads, key=lambda u: u.created_at, reverse=True)

    def abort(self, upload_id: str, *, organization_id: str | None = None) -> Upload:
        """Cancel a RUNNING upload; batches already committed stay."""
        upload = self.get(upload_id, organization_id=organization_id)
        if upload.status.finished:
            return upload
        self.lake.store.put(_ABORT_PREFIX + upload.id, b"1")
        return self._finish(upload, UploadStatus.ABORTED, "the upload was aborted")

    def _current(
        self, upload_id: str, state: LakeState, *, organization_id: str | None = None
    ) -> Upload:
        """The upload's row at ``state``, with the progress that state holds for it."""
        condition = pc.field("id") == upload_id
        if organization_id is not None:
            condition &= pc.field("organization_id") == organization_id
        rows = self.lake.read("uploads", state=state, filter=condition).to_pylist()
        if not rows:
            raise NotFoundError(f"upload {upload_id} not found")
        return Upload.from_row(rows[0]).with_progress(state.progress.get(upload_id))

    # -- running -------------------------------------------------------------------------------
    def run(self, upload_id: str, *, progress: ProgressCallback | None = None) -> Upload:
        """Process a RUNNING upload to its end (resuming after its last committed batch).

        Storage that fails (unreachable, or the writer lock not free in time) does not fail
        the upload: nothing of the batch in flight became visible, so the run waits with
        backoff and resumes after its last committed batch, for ``storage_patience`` seconds;
        then the upload fails (or, if even that cannot be recorded, stays RUNNING for the next
        start to resume).
        """
        try:
            return self._run_with_patience(upload_id, progress)
        finally:
            self._copied_from.pop(upload_id, None)  # the file on disk is for this run only

    def _run_with_patience(self, upload_id: str, progress: ProgressCallback | None) -> Upload:
        give_up = time.monotonic() + self.storage_patience
        delay = 0.5
        while True:
            try:
                upload = self._run_from_last_batch(upload_id, progress)
                tidy(self.lake)
                return upload
            except (StorageError, LockTimeoutError) as exc:
                if time.monotonic() + delay > give_up:
                    upload = self.get(upload_id)
                    return self._finish(upload, UploadStatus.FAILED, f"the lake failed: {exc}")
                log.warning("upload %s: %s; resuming in %.1f s", upload_id, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _run_from_last_batch(self, upload_id: str, progress: ProgressCallback | None) -> Upload:
        upload = self.get(upload_id)
        if upload.status.finished:
            return upload
        deadline = _deadline(upload)
        if self.lake.store.size(upload.landing_key) is None:
            url = upload.options.get("url")
            if not url:
                return self._finish(
                    upload, UploadStatus.FAILED, "cannot open the upload: it is gone"
                )
            try:
                self._land(str(url), upload.landing_key)
            except InputError as exc:
                return self._finish(upload, UploadStatus.FAILED, str(exc))
        linked = upload.options.get(_LINKED)
        if linked is not None and self.lake.store.fingerprint(upload.landing_key) != tuple(linked):
            return self._finish(
                upload,
                UploadStatus.FAILED,
                "the upload's file was changed after it was uploaded (a local lake links the"
                " file instead of copying it: rewrite it only once its upload has ended)",
            )
        with self._open(upload) as stream:
            return self._run(upload, stream, deadline, progress)

    def _open(self, upload: Upload) -> IO[bytes]:
        """The upload's file: the one it was copied from when this process copied it into the
        lake and it is unchanged (the same bytes, without fetching the copy back from object
        storage and decompressing it), else the lake's copy."""
        copied = self._copied_from.get(upload.id)
        if copied is not None:
            path, fingerprint = copied
            with contextlib.suppress(OSError):
                handle = open(path, "rb")  # noqa: SIM115 (the caller closes it)
                if file_fingerprint(handle.fileno()) == fingerprint:
                    return handle
                handle.close()
            self._copied_from.pop(upload.id, None)  # changed or gone: the copy is the upload
        return self.lake.store.open_read(upload.landing_key)

    def _land(self, url: str, key: str) -> None:
        """Copy ``url`` to ``key`` with the fetcher; the copy appears whole or not at all."""
        if self.fetcher is None:
            raise InputError("this server does not fetch URLs: the upload cannot be read")
        with self.fetcher(url) as response:
            source = _SourceErrors(response)
            try:
                self.lake.store.upload_fileobj(key, io.BufferedReader(source, 1 << 20))
            except StorageError:
                if source.error is not None:  # the source failed, not the lake
                    raise source.error from None
                raise
            if source.error is not None:
                raise source.error

    def _run(
        self,
        upload: Upload,
        stream: IO[bytes],
        deadline: float | None,
        progress: ProgressCallback | None,
    ) -> Upload:
        id_source = IdSource(int(upload.created_at.timestamp() * 1000), ids.salt_of(upload.id))
        bytes_read = [0]

        def on_read(done: int) -> None:
            bytes_read[0] = done

        # {"offset", "limit"} (the reference's URL form) keeps lines offset+1 .. limit
        offset = int(upload.options.get("offset") or 0)
        limit = upload.options.get("limit")
        batches = read_batches(
            stream,
            batch_lines=self.batch_size,
            max_line=self.max_line,
            skip_through=max(upload.lines_done, offset),
            on_read=on_read,
        )
        if limit is not None:
            batches = _through(batches, int(limit))

        def prepare(raw: RawBatch) -> PreparedBatch:
            return self._prepare(raw, upload.organization_id, id_source)

        # While one batch commits (mostly native code, without the GIL), the next ones are
        # parsed by the parse workers (large ones handed to helper processes); they are
        # committed in line order.
        with ThreadPoolExecutor(
            max_workers=self.parse_workers, thread_name_prefix="shoal-parse"
        ) as pool:
            pending: deque[Future[PreparedBatch]] = deque()

            def fill() -> None:
                while len(pending) < self.parse_workers:
                    raw = next(batches, None)
                    if raw is None:
                        return
                    pending.append(pool.submit(prepare, raw))

            try:
                fill()
                while pending:
                    prepared = pending.popleft().result()
                    fill()
                    upload, ours = self._commit_batch(upload, prepared, id_source)
                    if progress is not None:
                        progress(bytes_read[0])
                    if upload.status.finished or not ours:
                        return upload
                    if deadline is not None and time.monotonic() > deadline:
                        return self._finish(
                            upload, UploadStatus.TIMED_OUT, "the upload passed its deadline"
                        )
            except InputError as exc:
                return self._finish(upload, UploadStatus.FAILED, str(exc))
            except (StorageError, LockTimeoutError):
                raise  # transient: run() resumes after the last committed batch
            except LakeError as exc:
                return self._finish(upload, UploadStatus.FAILED, f"the lake failed: {exc}")
            except Exception as exc:  # a bug: end the upload with it rather than hang RUNNING
                log.exception("upload %s failed unexpectedly", upload.id)
                return self._finish(
                    upload, UploadStatus.FAILED, f"internal error: {type(exc).__name__}: {exc}"
                )
            finally:
                for future in pending:
                    future.cancel()
        return self._finish(upload, UploadStatus.SUCCEEDED, None)

    def _prepare(
        self,
        raw: RawBatch,
        organization_id: str,
        id_source: IdSource,
        *,
        native_min_lines: int = NATIVE_MIN_LINES,
    ) -> PreparedBatch:
        """Parse and validate a batch (see :func:`prepare_batch`): a large one in a helper
        process, or here when it is small or the helper path fails."""
        use_threads = self.parse_workers == 1
        prepared = None
        if self.helpers is not None and len(raw.data) >= self.process_min_bytes:
            prepared = self.helpers.prepare(
                raw,
                organization_id,
                id_source,
                fast_path=self.fast_path,
                use_threads=use_threads,
                native_min_lines=native_min_lines,
            )
        if prepared is None:
            prepared = prepare_batch(
                raw,
                organization_id,
                id_source,
                fast_path=self.fast_path,
                use_threads=use_threads,
                native_min_lines=native_min_lines,
            )
        crash_point("upload.parsed")
        return prepared

    def _commit_batch(
        self, upload: Upload, batch: PreparedBatch, id_source: IdSource
    ) -> tuple[Upload, bool]:
        """Commit a batch; (the upload, False) if this run must stop without committing it."""
        errors = list(batch.errors)
        with self.lake.transaction() as txn:
            progress = txn.base.progress.get(upload.id)
            if progress is None or self.lake.store.get(_ABORT_PREFIX + upload.id):
                return self._current(upload.id, txn.base), False  # finished or aborted
            if int(progress["lines_done"]) != upload.lines_done:
                # another process is running this upload (it resumed it too): leave it to it
                return self._current(upload.id, txn.base), False
            current = upload.with_progress(progress)
            planner = BatchPlanner(
                txn, organization_id=upload.organization_id, id_source=id_source, now=batch.now
            )
            planner.load(batch.specs)
            for spec in batch.specs:
                try:
                    planner.apply(spec)
                except RecordError as exc:
                    errors.append(exc)
            if batch.fast.update is not None:
                errors += planner.apply_updates(batch.fast.update)[0]
            planner.changes.commit(txn, new_rows=batch.fast.tables)
            room = max(0, MAX_STORED_ERRORS - current.failures)
            if errors and room:
                errors.sort(key=lambda e: e.line or 0)
                txn.append("upload_errors", _error_rows(current, errors[:room]))
            current.failures += len(errors)
            current.counts.add(planner.counts)
            current.counts.add(batch.fast.counts)
            current.records_read += batch.records_read
            current.lines_done = batch.last_line
            current.updated_at = batch.now
            txn.set_progress(current.id, current.progress())
        return current, True

    def _finish(self, upload: Upload, status: UploadStatus, message: str | None) -> Upload:
        with self.lake.transaction() as txn:
            current = self._current(upload.id, txn.base)
            if current.status.finished:
                return current
            current.status = status
            current.error_message = message
            current.finished_at = current.updated_at = datetime.now(UTC)
            current.errors = self._stored_errors(upload.id, txn.base)
            txn.upsert("uploads", _rows([current]))
            txn.set_progress(current.id, None)
        self.lake.store.delete(_ABORT_PREFIX + upload.id)
        return current


class _SourceErrors(io.RawIOBase):
    """A fetched stream whose read errors are kept, to tell them from the lake's own."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.error: InputError | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self.stream.read(len(buffer))
        except InputError as exc:
            self.error = exc
            raise
        buffer[: len(data)] = data
        return len(data)


def _through(batches: Iterator[RawBatch], last: int) -> Iterator[RawBatch]:
    for batch in batches:
        cut = batch.through(last)
        if len(cut):
            yield cut
        if batch.last_line >= last:
            return


def _deadline(upload: Upload) -> float | None:
    timeout = upload.options.get("timeout_seconds")
    if not timeout:
        return None
    elapsed = (datetime.now(UTC) - upload.created_at).total_seconds()
    return time.monotonic() + float(timeout) - elapsed


def _error_rows(upload: Upload, errors: list[RecordError]) -> pa.Table:
    return pa.table(
        {
            "upload_id": [upload.id] * len(errors),
            "organization_id": [upload.organization_id] * len(errors),
            "line": pa.array([e.line for e in errors], pa.int64()),
            "field": [e.field for e in errors],
            "reason": [e.reason for e in errors],
        },
        schema=SCHEMAS["upload_errors"],
    )


def _rows(uploads: list[Upload]) -> pa.Table:
    return pa.Table.from_pylist([u.to_row() for u in uploads], schema=SCHEMAS["uploads"])
