"""Group commit: many small uploads applied in one lake transaction.

A server receiving many small requests (say 100 records each) cannot afford a lake transaction
(several Delta commits) per request. :class:`GroupCommitter` accepts small uploads, makes each
durable at once (its data in the landing area and a *pending marker*, two object writes), and a
worker thread applies whatever is pending together:

- every upload keeps its own id, its own derived row ids, its own counts and record errors;
- uploads made only of new records in the common shape (the native path of ingestion) are
  appended together: one Delta commit per table for the whole group, and their ``uploads`` rows
  written ``SUCCEEDED`` in the same transaction;
- any other upload (updates, unusual records, a large file) is handed to the ordinary path.

A pending upload reads as ``RUNNING``. If the process stops, the markers stay: on restart the
worker picks them up again; an upload whose row the lake already holds was committed and is only
cleaned up, so nothing is applied twice and nothing acknowledged is lost.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lake import ids
from lake.errors import BusyError, LakeError
from lake.ingest import BatchCounts, IdSource
from lake.ndjson import read_batches
from lake.tables import SCHEMAS
from lake.uploads import (
    MAX_STORED_ERRORS,
    PENDING_PREFIX,
    PreparedBatch,
    Upload,
    Uploads,
    UploadStatus,
    _rows,
)

log = logging.getLogger(__name__)

#: Uploads up to this size may be grouped; bigger ones take the ordinary path.
GROUP_MAX_BYTES = 4 * 2**20
_REMEMBERED = 100_000


class GroupCommitter:
    """Apply small uploads in shared transactions, on a worker thread.

    ``fallback(upload_id)`` runs an upload the ordinary way (a job runner's ``submit``); it is
    called for pending uploads that cannot be grouped, after their ``uploads`` row is written.
    """

    def __init__(
        self,
        uploads: Uploads,
        *,
        fallback: Callable[[str], object],
        max_lines: int = 50_000,
        max_group: int = 500,
        max_queued: int = 5_000,
        linger: float = 0.01,
    ) -> None:
        self.uploads = uploads
        self.lake = uploads.lake
        self.fallback = fallback
        self.max_lines = max_lines
        self.max_group = max_group
        self.max_queued = max_queued
        self.linger = linger
        self._queue: list[Upload] = []
        # what this process knows without reading the lake: uploads queued or being committed,
        # and the latest ones it finished (status requests are answered from these)
        self._known: collections.OrderedDict[str, Upload] = collections.OrderedDict()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- accepting -------------------------------------------------------------------------------
    def submit(
        self,
        data: bytes,
        *,
        organization_id: str,
        options: dict[str, Any] | None = None,
        source: str = "",
    ) -> Upload:
        """Make ``data`` (NDJSON) durable as a pending upload and queue it; return it RUNNING.

        Raises :class:`BusyError` when ``max_queued`` uploads already wait (back-pressure:
        the caller retries later instead of the queue, and the latency, growing without end).
        """
        with self._wake:
            if len(self._queue) >= self.max_queued:
                raise BusyError(
                    f"{len(self._queue)} uploads are waiting to be committed; retry in a moment"
                )
        upload_id = ids.new_id()
        now = datetime.now(UTC)
        landing_key = f"_landing/{upload_id}"
        self.lake.store.put(landing_key, data)
        marker = {
            "organization_id": organization_id,
            "landing_key": landing_key,
            "options": options or {},
            "source": source or f"<{len(data)} bytes>",
            "created_at": now.isoformat(),
        }
        self.lake.store.put(PENDING_PREFIX + upload_id, json.dumps(marker).encode())
        upload = self.uploads.pending(upload_id)
        assert upload is not None
        with self._wake:
            self._queue.append(upload)
            self._remember(upload)
            self._wake.notify()
        return upload

    def lookup(self, upload_id: str, *, organization_id: str | None = None) -> Upload | None:
        """The upload if this process is committing it or finished it lately, else None."""
        with self._wake:
            upload = self._known.get(upload_id)
        if upload is None or organization_id not in (None, upload.organization_id):
            return None
        return upload

    def _remember(self, upload: Upload) -> None:  # called holding self._wake
        self._known[upload.id] = upload
        self._known.move_to_end(upload.id)
        while len(self._known) > _REMEMBERED:
            self._known.popitem(last=False)

    # -- the worker ------------------------------------------------------------------------------
    def start(self) -> list[str]:
        """Start the worker; queue the uploads left pending by a process that stopped."""
        left = []
        for key in self.lake.store.list(PENDING_PREFIX):
            upload = self.uploads.pending(key[len(PENDING_PREFIX) :])
            if upload is not None:
                left.append(upload)
        left.sort(key=lambda u: (u.created_at, u.id))
        with self._wake:
            queued = {u.id for u in self._queue}
            left = [u for u in left if u.id not in queued]
            self._queue[:0] = left
        self._thread = threading.Thread(target=self._loop, name="shoal-group", daemon=True)
        self._thread.start()
        return [u.id for u in left]

    def stop(self, timeout: float = 10.0) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
            if self.linger:
                self._wake_after(self.linger)
            group = self._take()
            try:
                started = time.perf_counter()
                self.commit(group)
                log.debug(
                    "group of %d uploads committed in %.3f s",
                    len(group),
                    time.perf_counter() - started,
                )
            except Exception:
                log.exception("group commit of %d uploads failed", len(group))
                self._one_by_one(group)

    def _one_by_one(self, group: list[Upload]) -> None:
        """After a failed group: each upload alone, and one that still fails goes to the
        ordinary path (which reports it FAILED with the reason); if even that fails (the
        storage is down), the uploads wait in the queue and are tried again."""
        for position, upload in enumerate(group):
            try:
                try:
                    self.commit([upload])
                except LakeError:
                    raise
                except Exception:
                    log.exception("upload %s cannot be group-committed", upload.id)
                    self._hand_over(upload)
            except Exception:
                log.exception("upload %s waits for the storage to come back", upload.id)
                with self._wake:
                    queued = {u.id for u in self._queue}
                    self._queue[:0] = [u for u in group[position:] if u.id not in queued]
                    self._wake.wait(1.0)
                return

    def _wake_after(self, seconds: float) -> None:
        # let requests arriving together join the same group
        with self._wake:
            self._wake.wait(seconds)

    def _take(self) -> list[Upload]:
        with self._wake:
            group = self._queue[: self.max_group]
            del self._queue[: self.max_group]
            return group

    # -- committing ------------------------------------------------------------------------------
    def commit(self, group: list[Upload]) -> None:
        """Apply ``group`` (pending uploads) in one transaction where possible."""
        prepared: list[tuple[Upload, PreparedBatch]] = []
        ordinary: list[Upload] = []
        group = list({u.id: u for u in group}.values())
        for upload in group:
            batch = self._prepare(upload)
            if batch is None:
                ordinary.append(upload)
            else:
                prepared.append((upload, batch))
        done: list[Upload] = []
        if prepared:
            done = self._commit_together(prepared)
        for upload, _ in prepared:  # committed now or by an earlier run: either way done
            self._clean(upload)
        with self._wake:
            for upload in done:
                self._remember(upload)
            for upload in ordinary:  # the ordinary path reports on these from now on
                self._known.pop(upload.id, None)
        for upload in ordinary:
            self._hand_over(upload)

    def _prepare(self, upload: Upload) -> PreparedBatch | None:
        """The upload as one native batch, or None when it needs the ordinary path."""
        data = self.lake.store.get(upload.landing_key)
        if data is None or len(data) > GROUP_MAX_BYTES:
            return None
        try:
            batches = list(
                read_batches(
                    io.BytesIO(data), batch_lines=self.max_lines, max_line=self.uploads.max_line
                )
            )
        except LakeError:
            return None  # undecodable input: the ordinary path fails it with its message
        if len(batches) != 1:
            return None
        source = IdSource(int(upload.created_at.timestamp() * 1000), ids.salt_of(upload.id))
        batch = self.uploads._prepare(
            batches[0], upload.organization_id, source, native_min_lines=1
        )
        return None if batch.specs else batch

    def _commit_together(self, prepared: list[tuple[Upload, PreparedBatch]]) -> list[Upload]:
        ids_ = [u.id for u, _ in prepared]
        with self.lake.transaction() as txn:
            known = (
                self.lake.read(
                    "uploads",
                    state=txn.base,
                    columns=["id"],
                    filter=pc.field("id").isin(pa.array(ids_, pa.string())),
                )
                .column("id")
                .to_pylist()
            )
            fresh = [(u, b) for u, b in prepared if u.id not in set(known)]
            tables: dict[str, list[pa.Table]] = {}
            finished = []
            now = datetime.now(UTC)
            for upload, batch in fresh:
                for name, rows in batch.fast.tables.items():
                    tables.setdefault(name, []).append(rows)
                finished.append(
                    _finished(dataclasses.replace(upload, counts=BatchCounts()), batch, now)
                )
            for name, parts in tables.items():
                txn.append(name, pa.concat_tables([p.cast(SCHEMAS[name]) for p in parts]))
            if finished:
                txn.append("uploads", _rows(finished))
        return finished

    def _hand_over(self, upload: Upload) -> None:
        """Give a pending upload to the ordinary path (its row first, then its marker goes)."""
        try:
            self.uploads._current(upload.id, self.lake.state())
        except LakeError:  # not recorded yet (else a previous run handed it over already)
            self.uploads.start(
                upload.landing_key,
                organization_id=upload.organization_id,
                options=upload.options,
                label=upload.source,
                upload_id=upload.id,
                created_at=upload.created_at,
            )
        self.lake.store.delete(PENDING_PREFIX + upload.id)
        self.fallback(upload.id)

    def _clean(self, upload: Upload) -> None:
        self.lake.store.delete(PENDING_PREFIX + upload.id)
        self.lake.store.delete(upload.landing_key)


def _finished(upload: Upload, batch: PreparedBatch, now: datetime) -> Upload:
    errors = sorted(batch.errors, key=lambda e: e.line or 0)
    upload.status = UploadStatus.SUCCEEDED
    upload.finished_at = upload.updated_at = now
    upload.records_read = batch.records_read
    upload.lines_done = batch.last_line
    upload.counts.add(batch.fast.counts)
    upload.failures = len(errors)
    upload.errors = [e.to_dict() for e in errors[:MAX_STORED_ERRORS]]
    return upload
