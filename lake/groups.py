"""Group commit: many small uploads applied in one lake transaction.

A server receiving many small requests (say 100 records each) cannot afford a lake transaction
(several Delta commits) per request. :class:`GroupCommitter` accepts small uploads, makes each
durable at once (a *pending marker*: one object write holding its options and its data, or
naming the file it was uploaded as), and a worker thread applies whatever is pending together:

- every upload keeps its own id, its own derived row ids, its own counts and record errors;
- uploads made only of new records in the common shape (the native path of ingestion) are
  appended together: one Delta commit per table for the whole group, and their ``uploads`` rows
  written ``SUCCEEDED`` in the same transaction;
- uploads made only of plain updates (new groundtruths and predictions of that shape for
  existing datapoints) are applied together the same way, the rows they replace rewritten in one
  commit per table; an unknown datapoint is an error of its own upload's record;
- any other upload (other updates, unusual records, a large file) is handed to the ordinary
  path.

A pending upload reads as ``RUNNING``. If the process stops, the markers stay: on restart the
worker picks them up again; an upload whose row the lake already holds was committed and is only
cleaned up, so nothing is applied twice and nothing acknowledged is lost.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lake import ids
from lake.batch import BatchCounts, IdSource
from lake.columnar import FastBatch, plan_batch
from lake.errors import BusyError, LakeError
from lake.ingest import BatchPlanner, Changes
from lake.lake import Lake, Transaction, sql_text
from lake.maintenance import tidy
from lake.ndjson import RawBatch, read_batches
from lake.tables import SCHEMAS
from lake.uploads import (
    LANDING_PREFIX,
    MAX_STORED_ERRORS,
    PENDING_PREFIX,
    PreparedBatch,
    Upload,
    Uploads,
    UploadStatus,
    _rows,
    pending_marker,
    read_pending_marker,
)

log = logging.getLogger(__name__)

#: Uploads up to this size may be grouped; bigger ones take the ordinary path.
GROUP_MAX_BYTES = 4 * 2**20
#: Uploads waiting for the worker before new ones wait for room (see GroupCommitter).
DEFAULT_MAX_QUEUED = 64
#: Seconds without uploads after which the worker merges small files (see lake.maintenance.tidy)
LULL_SECONDS = 1.0
_REMEMBERED = 100_000


class RecentUploads:
    """The uploads a committer accepted or finished lately (the newest ``size``), by id. Not
    locked: its owner holds its own lock around every call."""

    def __init__(self, size: int = _REMEMBERED) -> None:
        self.size = size
        self._uploads: collections.OrderedDict[str, Upload] = collections.OrderedDict()

    def add(self, upload: Upload) -> None:
        self._uploads[upload.id] = upload
        self._uploads.move_to_end(upload.id)
        while len(self._uploads) > self.size:
            self._uploads.popitem(last=False)

    def forget(self, upload_id: str) -> None:
        self._uploads.pop(upload_id, None)

    def __contains__(self, upload_id: object) -> bool:
        return upload_id in self._uploads

    def get(self, upload_id: str, organization_id: str | None = None) -> Upload | None:
        """The upload, if known and (given ``organization_id``) that organization's."""
        upload = self._uploads.get(upload_id)
        if upload is None or organization_id not in (None, upload.organization_id):
            return None
        return upload


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
        max_queued: int = DEFAULT_MAX_QUEUED,
        max_queued_bytes: int = 8 * 2**20,
        admit_wait: float = 30.0,
        linger: float = 0.01,
    ) -> None:
        self.uploads = uploads
        self.lake = uploads.lake
        self.fallback = fallback
        self.max_lines = max_lines
        self.max_group = max_group
        # back-pressure: a new upload waits (up to ``admit_wait`` seconds, then BusyError)
        # while this many uploads or bytes wait to be taken by the worker, so that the time
        # from request to committed stays short however many clients send
        self.max_queued = max(1, max_queued)
        self.max_queued_bytes = max_queued_bytes
        self.admit_wait = admit_wait
        self.linger = linger
        #: called (from the worker thread) with the ids of uploads this worker ended
        self.on_done: Callable[[list[str]], object] | None = None
        self._queue: list[Upload] = []
        self._queued_bytes = 0  # of the queued uploads' data held in _data
        self._fresh: set[str] = set()  # submitted to this process, not tried yet
        # the data of uploads submitted here, kept until the worker takes it (not read back)
        self._data: dict[str, bytes] = {}
        # the data of the group the worker took (touched by the worker only: a lock taken per
        # upload would make the worker wait for the interpreter lock once per upload)
        self._taken: dict[str, bytes] = {}
        # markers (and landed files) of committed uploads are deleted off the worker's path (a
        # marker left by a crash is found committed and deleted on the next start)
        self._cleaner = ThreadPoolExecutor(max_workers=2, thread_name_prefix="shoal-group-clean")
        # what this process knows without reading the lake: uploads queued or being committed,
        # and the latest ones it finished (status requests are answered from these)
        self._known = RecentUploads()
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

        While the queue is full (``max_queued`` uploads or ``max_queued_bytes``) the call
        waits for room; after ``admit_wait`` seconds it raises :class:`BusyError` (the caller
        retries later instead of the queue, and the latency, growing without end).
        """
        self._wait_for_room(len(data))
        upload = make_pending(
            self.lake,
            "",  # the data travels inside the marker: one object write per upload
            organization_id=organization_id,
            options=options,
            source=source or f"<{len(data)} bytes>",
            data=data,
        )
        self.enqueue(upload, data)
        return upload

    def submit_landed(
        self,
        landing_key: str,
        *,
        organization_id: str,
        options: dict[str, Any] | None = None,
        source: str = "",
    ) -> Upload:
        """Queue NDJSON already stored at ``landing_key`` (it is deleted once committed)."""
        self._wait_for_room(0)
        upload = make_pending(
            self.lake, landing_key, organization_id=organization_id, options=options, source=source
        )
        self.enqueue(upload, None)
        return upload

    def enqueue(self, upload: Upload, data: bytes | None) -> None:
        """Queue a pending upload made durable by :func:`make_pending` (in this process or
        another); one this worker already queued or finished is left alone."""
        with self._wake:
            if upload.id in self._known:
                return
            self._fresh.add(upload.id)
            self._queue.append(upload)
            if data is not None:
                self._data[upload.id] = data
                self._queued_bytes += len(data)
            self._known.add(upload)
            self._wake.notify_all()

    def _wait_for_room(self, size: int) -> None:
        """Wait until the queue has room for an upload of ``size`` bytes (an empty queue
        always has), or raise BusyError after ``admit_wait`` seconds."""

        def room() -> bool:
            return not self._queue or (
                len(self._queue) < self.max_queued
                and self._queued_bytes + size <= self.max_queued_bytes
            )

        with self._wake:
            if not self._wake.wait_for(room, timeout=self.admit_wait):
                raise BusyError(
                    f"{len(self._queue)} uploads are waiting to be committed; retry in a moment"
                )

    def health(self) -> dict[str, object]:
        """Where the committer runs (here), whether its worker is alive, how many uploads wait."""
        with self._wake:
            waiting = len(self._queue)
        alive = self._thread is not None and self._thread.is_alive()
        return {"process": False, "alive": alive, "restarts": 0, "waiting": waiting}

    def lookup(self, upload_id: str, *, organization_id: str | None = None) -> Upload | None:
        """The upload if this process is committing it or finished it lately, else None."""
        with self._wake:
            return self._known.get(upload_id, organization_id)

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
            left = [u for u in left if u.id not in self._known]
            self._queue[:0] = left
            for upload in left:
                self._known.add(upload)
        self._thread = threading.Thread(target=self._loop, name="shoal-group", daemon=True)
        self._thread.start()
        return [u.id for u in left]

    def stop(self, timeout: float = 10.0) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self._cleaner.shutdown(wait=True)

    def _loop(self) -> None:
        owed = False  # groups committed since small files were last looked at in a lull
        while True:
            with self._wake:
                while not self._queue and not self._stopping:
                    # a lull is LULL_SECONDS without uploads: a queue empty for a moment
                    # between requests is not one (a merge there stalls the requests coming)
                    if not self._wake.wait(LULL_SECONDS if owed else None) and owed:
                        break
                if self._stopping:
                    return
                lull = not self._queue
            if lull:
                tidy(self.lake, busy=False)
                owed = False
                continue
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
            self._taken.clear()  # what the group did not read is read back from the landing area
            if self.on_done is not None:  # before any merge: the uploads are committed
                self.on_done([u.id for u in group])
            tidy(self.lake, busy=True)
            owed = True

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
            for upload in group:
                data = self._data.pop(upload.id, None)
                if data is not None:
                    self._taken[upload.id] = data
                    self._queued_bytes -= len(data)
            self._wake.notify_all()  # requests waiting for room
            return group

    # -- committing ------------------------------------------------------------------------------
    def commit(self, group: list[Upload]) -> None:
        """Apply ``group`` (pending uploads) in one transaction where possible."""
        group = list({u.id: u for u in group}.values())
        # an upload submitted here and never tried cannot be committed yet; any other (left by
        # a process that stopped, or in a group whose commit failed) may be
        with self._wake:
            unsure = [u.id for u in group if u.id not in self._fresh]
            self._fresh.difference_update(u.id for u in group)
        committed = self._committed(unsure) if unsure else {}
        if committed:
            with self._wake:  # its row says how it ended
                for upload_id in committed:
                    self._known.forget(upload_id)
        for upload in group:
            if upload.id in committed:  # by an earlier run that stopped before cleaning up
                # (a RUNNING one was handed to the ordinary path, which reads its file)
                self._clean([upload], landed=committed[upload.id] != UploadStatus.RUNNING)
        raws: dict[str, list[tuple[Upload, RawBatch]]] = {}
        ordinary: list[Upload] = []
        for upload in group:
            if upload.id in committed:
                continue
            raw = self._raw(upload)
            if raw is None:
                ordinary.append(upload)
            else:
                raws.setdefault(upload.organization_id, []).append((upload, raw))
        prepared: list[tuple[Upload, PreparedBatch]] = []
        for items in raws.values():
            planned, rest = self._plan(items)
            prepared += planned
            ordinary += rest
        done: list[Upload] = []
        if prepared:
            done = self._commit_together(prepared)
        if prepared:
            self._cleaner.submit(self._clean, [upload for upload, _ in prepared])
        with self._wake:
            for upload in done:
                self._known.add(upload)
            for upload in ordinary:  # the ordinary path reports on these from now on
                self._known.forget(upload.id)
        for upload in ordinary:
            self._hand_over(upload)

    def _committed(self, upload_ids: list[str], txn: Transaction | None = None) -> dict[str, str]:
        """The status of those of these uploads the lake holds a row of (at ``txn``'s base,
        or the latest)."""
        low, high = min(upload_ids), max(upload_ids)
        if txn is not None and not txn.may_hold("uploads", "id", upload_ids):
            # the usual answer for new uploads (their ids are newer than any row's): no read
            return {}
        rows = (txn or self.lake).read(
            "uploads",
            columns=["id", "status"],
            filter=pc.field("id").isin(pa.array(upload_ids, pa.string())),
            # upload ids are time-ordered: only the files of recent uploads are opened (one
            # file per group commit accumulates until maintenance compacts the table)
            prune=f"id >= {sql_text(low)} AND id <= {sql_text(high)}",
        )
        return dict(
            zip(rows.column("id").to_pylist(), rows.column("status").to_pylist(), strict=True)
        )

    def _raw(self, upload: Upload) -> RawBatch | None:
        """The upload's lines as one batch, or None when it needs the ordinary path."""
        data = self._taken.pop(upload.id, None)
        if data is None:  # left by a process that stopped, or submitted already landed
            data = self._stored_data(upload)
        if data is None or len(data) > GROUP_MAX_BYTES:
            return None
        # one batch of at most max_lines lines and GROUP_MAX_BYTES of text (a small compressed
        # file may hold much more): anything bigger takes the ordinary, streaming path
        batches = read_batches(
            io.BytesIO(data),
            batch_lines=self.max_lines,
            batch_bytes=GROUP_MAX_BYTES,
            max_line=self.uploads.max_line,
        )
        try:
            first = next(batches, None)
            if first is None or next(batches, None) is not None:
                return None
        except LakeError:
            return None  # undecodable input: the ordinary path fails it with its message
        return first

    def _plan(
        self, items: list[tuple[Upload, RawBatch]]
    ) -> tuple[list[tuple[Upload, PreparedBatch]], list[Upload]]:
        """Plan the uploads of one organization in one native pass (their lines merged).

        Uploads holding records the native path leaves out are planned again without them
        and go to the ordinary path; if the merged lines cannot be planned at all, each
        upload is planned alone.
        """
        now = datetime.now(UTC)
        merged, offsets = _merge([raw for _, raw in items])
        # row ids derive from a fresh group id: a group is committed whole or not at all, and
        # an upload is applied only if its row is absent, so re-runs cannot duplicate rows
        source = IdSource(int(now.timestamp() * 1000), ids.salt_of(ids.new_id()))
        result = plan_batch(
            merged, organization_id=items[0][0].organization_id, id_source=source, now=now
        )
        if result is None:
            return self._plan_alone(items)
        fast, leftover = result
        if not leftover:
            return _split(items, offsets, merged, fast, now), []
        owners = set((np.searchsorted(offsets, merged.numbers[leftover], side="left") - 1).tolist())
        rest = [u for k, (u, _) in enumerate(items) if k in owners]
        kept = [item for k, item in enumerate(items) if k not in owners]
        if not kept:
            return [], rest
        planned, more = self._plan(kept)
        return planned, rest + more

    def _plan_alone(
        self, items: list[tuple[Upload, RawBatch]]
    ) -> tuple[list[tuple[Upload, PreparedBatch]], list[Upload]]:
        planned, rest = [], []
        for upload, raw in items:
            source = IdSource(int(upload.created_at.timestamp() * 1000), ids.salt_of(upload.id))
            batch = self.uploads._prepare(raw, upload.organization_id, source, native_min_lines=1)
            if batch.specs or batch.fast.update is not None:
                rest.append(upload)
            else:
                planned.append((upload, batch))
        return planned, rest

    def _commit_together(self, prepared: list[tuple[Upload, PreparedBatch]]) -> list[Upload]:
        with self.lake.transaction() as txn:
            if self._committed([u.id for u, _ in prepared], txn):
                # another process committed some of them meanwhile: apply none, look again
                raise LakeError("some uploads of the group were committed elsewhere")
            tables: dict[str, list[pa.Table]] = {}
            finished = []
            now = datetime.now(UTC)
            changes = Changes()
            _apply_updates(txn, changes, prepared)
            for upload, batch in prepared:
                for name, rows in batch.fast.tables.items():
                    tables.setdefault(name, []).append(rows)
                finished.append(
                    _finished(dataclasses.replace(upload, counts=BatchCounts()), batch, now)
                )
            appends = {
                name: pa.concat_tables([p.cast(SCHEMAS[name]) for p in parts])
                for name, parts in tables.items()
            }
            appends["uploads"] = _rows(finished)
            if changes.added or changes.removed:  # updates: the tables they touch rewritten
                changes.commit(txn, new_rows=appends)
            else:
                txn.append_all(appends)  # one commit per table, made in parallel
        return finished

    def _stored_data(self, upload: Upload) -> bytes | None:
        if upload.landing_key:
            return self.lake.store.get(upload.landing_key)
        marker = self.lake.store.get(PENDING_PREFIX + upload.id)
        return None if marker is None else read_pending_marker(marker)[1]

    def _hand_over(self, upload: Upload) -> None:
        """Give a pending upload to the ordinary path (its row first, then its marker goes)."""
        if not upload.landing_key:  # the ordinary path reads a landed file
            key = f"{LANDING_PREFIX}{upload.id}"
            if self.lake.store.size(key) is None:
                data = self._stored_data(upload)
                if data is None:
                    raise LakeError(f"upload {upload.id}: its pending data is gone")
                self.lake.store.put(key, data)
            upload = dataclasses.replace(upload, landing_key=key)
        # recorded RUNNING unless the lake holds its row already (handed over by an earlier
        # run, or by another server's committer that listed the same pending marker)
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

    def _clean(self, uploads: list[Upload], *, landed: bool = True) -> None:
        """Delete committed uploads' markers and (``landed``) the files they were read from,
        in one request where the store can."""
        keys = [PENDING_PREFIX + u.id for u in uploads]
        if landed:
            keys += [u.landing_key for u in uploads if u.landing_key]
        try:
            self.lake.store.delete_many(keys)
        except LakeError:  # the next start finds the markers of committed uploads again
            log.warning(
                "%d committed uploads: cannot delete their markers yet", len(uploads), exc_info=True
            )


def make_pending(
    lake: Lake,
    landing_key: str,
    *,
    organization_id: str,
    options: dict[str, Any] | None,
    source: str,
    data: bytes | None = None,
) -> Upload:
    """Make an upload durable as pending (its marker, holding ``data`` when given) and return
    it RUNNING; a group committer applies it (see :meth:`GroupCommitter.enqueue`)."""
    marker = {
        "organization_id": organization_id,
        "landing_key": landing_key,
        "options": options or {},
        "source": source or landing_key.rsplit("/", 1)[-1],
        "created_at": datetime.now(UTC).isoformat(),
    }
    upload_id = ids.new_id()
    lake.store.put(PENDING_PREFIX + upload_id, pending_marker(marker, data))
    return Upload.from_marker(upload_id, marker)


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


def _merge(raws: list[RawBatch]) -> tuple[RawBatch, np.ndarray]:
    """The lines of several batches as one, numbered on; and where each batch starts."""
    offsets = np.zeros(len(raws) + 1, dtype=np.int64)
    for k, raw in enumerate(raws):
        offsets[k + 1] = offsets[k] + raw.last_line
    numbers = np.concatenate([raw.numbers + offsets[k] for k, raw in enumerate(raws)])
    data = b"\n".join(raw.data for raw in raws if len(raw.numbers))
    return RawBatch(data, numbers, []), offsets


def _split(
    items: list[tuple[Upload, RawBatch]],
    offsets: np.ndarray,
    merged: RawBatch,
    fast: FastBatch,
    now: datetime,
) -> list[tuple[Upload, PreparedBatch]]:
    """Per-upload batches of one merged plan: the rows go with the first, counts with each."""
    datapoints = fast.tables.get("datapoints")
    owner: dict[str, int] = {}
    created = np.zeros(len(items), dtype=np.int64)
    if datapoints is not None:  # its rows are in line order
        rows_of = np.searchsorted(offsets, merged.numbers, side="left") - 1
        for datapoint_id, k in zip(
            datapoints.column("id").to_pylist(), rows_of.tolist(), strict=True
        ):
            owner[datapoint_id] = k
        created = np.bincount(rows_of, minlength=len(items))

    def per_upload(table: str) -> np.ndarray:
        rows = fast.tables.get(table)
        if rows is None or not owner:
            return np.zeros(len(items), dtype=np.int64)
        index = [owner[d] for d in rows.column("datapoint").to_pylist()]
        return np.bincount(np.asarray(index, dtype=np.int64), minlength=len(items))

    predictions, groundtruths = per_upload("predictions"), per_upload("groundtruths")
    update = fast.update
    if update is not None:  # checked at commit, counted per upload then (see _apply_updates)
        rows_of = np.searchsorted(offsets, update.lines, side="left") - 1
        update = dataclasses.replace(
            update,
            lines=update.lines - offsets[rows_of],
            owners=[items[k][0].id for k in rows_of.tolist()],
        )
    out = []
    for k, (upload, raw) in enumerate(items):
        counts = BatchCounts(int(created[k]), 0, int(predictions[k]), int(groundtruths[k]))
        first = k == 0
        batch = FastBatch(fast.tables if first else {}, counts, update if first else None)
        errors = [line.error for line in raw.errors if line.error is not None]
        out.append((upload, PreparedBatch(raw.last_line, len(raw), now, batch, [], errors)))
    return out


def _apply_updates(
    txn: Transaction, changes: Changes, prepared: list[tuple[Upload, PreparedBatch]]
) -> None:
    """Apply the plain updates of a group (one set per organization) into ``changes``, and
    give each upload its counts and its records' errors."""
    by_id = {upload.id: batch for upload, batch in prepared}
    for upload, batch in prepared:
        update = batch.fast.update
        if update is None:
            continue
        assert update.owners is not None
        planner = BatchPlanner(
            txn,
            organization_id=upload.organization_id,
            id_source=IdSource(0),  # creates nothing: its rows come planned
            now=batch.now,
        )
        planner.changes = changes
        errors, exists = planner.apply_updates(update)
        owner_of = dict(zip(update.datapoints.to_pylist(), update.owners, strict=True))
        present = set(update.datapoints.filter(pa.array(exists)).to_pylist())
        for owner, found in zip(update.owners, exists.tolist(), strict=True):
            by_id[owner].fast.counts.datapoints_updated += int(found)
        for error, owner in zip(
            errors, [o for o, f in zip(update.owners, exists, strict=True) if not f], strict=True
        ):
            by_id[owner].errors.append(error)
        for kind in ("groundtruths", "predictions"):
            rows = update.tables.get(kind)
            if rows is None:
                continue
            for datapoint in rows.column("datapoint").to_pylist():
                owner_counts = by_id[owner_of[datapoint]].fast.counts
                found = datapoint in present
                setattr(owner_counts, kind, getattr(owner_counts, kind) + int(found))
