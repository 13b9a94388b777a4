"""Group commit in a process of its own.

A server answering many small requests spends its interpreter lock on them; a group committer
sharing that lock waits for it at every step (measured: a group's own CPU time was a sixth of
its wall time under load). :class:`GroupProcess` has the same interface as
:class:`~lake.groups.GroupCommitter` for the server, and runs the committer in a child process
with its own interpreter:

- ``submit`` makes the upload durable here (its pending marker, as the committer does) and sends
  it to the child over a pipe; the answer (``RUNNING``) does not wait for the child;
- the child applies uploads in groups and sends back each finished one (status, counts,
  errors), which answers ``lookup`` and wakes the requests waiting for them (``on_done``);
- uploads the group path does not take are handed back (``fallback``, the server's job runner).

If the child dies, it is started again: the markers of the uploads it had not finished are
still in the lake, and the new child applies them (never twice, see :mod:`lake.groups`).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import threading
import time
from collections.abc import Callable
from typing import Any

from lake.errors import BusyError, LakeError
from lake.groups import DEFAULT_MAX_QUEUED, GroupCommitter, RecentUploads, make_pending
from lake.lake import Lake
from lake.storage import S3Options
from lake.uploads import PENDING_PREFIX, Upload

log = logging.getLogger(__name__)

_RESPAWN_PAUSE = 1.0  # seconds before a child that stopped is started again
_CONTEXT = multiprocessing.get_context("spawn")  # no fork of a process holding threads


class GroupProcess:
    """The server side of a group committer running in a child process."""

    def __init__(
        self,
        lake: Lake,
        *,
        fallback: Callable[[str], object],
        uploads_options: dict[str, Any] | None = None,
        max_queued: int = DEFAULT_MAX_QUEUED,
        admit_wait: float = 30.0,
    ) -> None:
        self.lake = lake
        self.fallback = fallback
        self.uploads_options = uploads_options or {}
        # back-pressure: a new upload waits while this many are accepted and not finished
        self.max_queued = max(1, max_queued)
        self.admit_wait = admit_wait
        self.on_done: Callable[[list[str]], object] | None = None
        self._known = RecentUploads()
        self._open: set[str] = set()  # accepted here, not finished yet
        self._room = threading.Condition()
        self._send_lock = threading.Lock()
        self._conn: multiprocessing.connection.Connection | None = None
        self._process: Any = None
        self._reader: threading.Thread | None = None
        self._stopping = False
        self.restarts = 0

    # -- the child -------------------------------------------------------------------------------
    def start(self) -> list[str]:
        self._spawn()
        self._reader = threading.Thread(target=self._read, name="shoal-group-reader", daemon=True)
        self._reader.start()
        return []  # the child picks up what earlier processes left pending

    def _spawn(self) -> None:
        ours, theirs = _CONTEXT.Pipe()
        s3 = self.lake.location.s3 if self.lake.location.scheme == "s3" else None
        process = _CONTEXT.Process(
            target=_child,
            args=(self.lake.uri, s3, self.uploads_options, theirs),
            name="shoal-group-commit",
            daemon=True,
        )
        process.start()
        theirs.close()
        with self._send_lock:
            self._conn, self._process = ours, process

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        with self._send_lock:
            conn, process = self._conn, self._process
            if conn is not None:
                with contextlib.suppress(OSError):
                    conn.send(("stop",))
        if process is not None:
            process.join(timeout)
            if process.is_alive():
                process.terminate()
                process.join(timeout)
        if self._reader is not None:
            self._reader.join(timeout)

    def _read(self) -> None:
        while True:
            conn = self._conn
            assert conn is not None
            try:
                message = conn.recv()
            except (EOFError, OSError):
                if self._stopping:
                    return
                log.error("the group commit process stopped; starting it again")
                self.restarts += 1
                conn.close()
                time.sleep(_RESPAWN_PAUSE)  # a child failing at once does not spin
                if self._stopping:
                    return
                self._spawn()
                self._forget_unreported()
                continue
            try:
                self._handle(message)
            except Exception:
                log.exception("cannot handle %r from the group commit process", message[0])

    def _forget_unreported(self) -> None:
        """After a child stopped: an upload it committed, whose marker it deleted, but that it
        did not report before it stopped, would read RUNNING here and hold room for ever. The
        lake knows how such an upload ended; its waiting requests are woken to ask it."""
        with self._room:
            accepted = set(self._open)  # each one's marker was written before it was accepted
        try:
            pending = {k[len(PENDING_PREFIX) :] for k in self.lake.store.list(PENDING_PREFIX)}
        except LakeError:
            log.warning("cannot list pending uploads; will look again", exc_info=True)
            return
        gone = accepted - pending
        if not gone:
            return
        with self._room:
            for upload_id in gone:
                self._open.discard(upload_id)
                self._known.forget(upload_id)
            self._room.notify_all()
        if self.on_done is not None:
            self.on_done(sorted(gone))

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "hand_over":  # its uploads row is written: the ordinary path runs it
            upload_id = message[1]
            with self._room:
                self._known.forget(upload_id)
            self.fallback(upload_id)
        elif kind == "done":
            finished: list[tuple[str, Upload | None]] = message[1]
            with self._room:
                for upload_id, upload in finished:
                    self._open.discard(upload_id)
                    if upload is None or not upload.status.finished:
                        # handed over (the job runner reports on it), or found committed by an
                        # earlier run: the lake knows
                        self._known.forget(upload_id)
                    else:
                        self._known.add(upload)
                self._room.notify_all()
            if self.on_done is not None:
                self.on_done([upload_id for upload_id, _ in finished])

    def health(self) -> dict[str, object]:
        """Where the committer runs, whether it is alive, how often it was started again, and
        how many uploads wait for it."""
        process = self._process
        with self._room:
            waiting = len(self._open)
        return {
            "process": True,
            "alive": bool(process is not None and process.is_alive()),
            "restarts": self.restarts,
            "waiting": waiting,
        }

    # -- accepting -------------------------------------------------------------------------------
    def submit(
        self,
        data: bytes,
        *,
        organization_id: str,
        options: dict[str, Any] | None = None,
        source: str = "",
    ) -> Upload:
        """Make ``data`` durable as a pending upload and send it to the child; see
        :meth:`GroupCommitter.submit` (the same back-pressure, on uploads not finished)."""
        return self._accept(
            "", organization_id, options, source or f"<{len(data)} bytes>", data=data
        )

    def submit_landed(
        self,
        landing_key: str,
        *,
        organization_id: str,
        options: dict[str, Any] | None = None,
        source: str = "",
    ) -> Upload:
        return self._accept(landing_key, organization_id, options, source)

    def _accept(
        self,
        landing_key: str,
        organization_id: str,
        options: dict[str, Any] | None,
        source: str,
        *,
        data: bytes | None = None,
    ) -> Upload:
        with self._room:
            if not self._room.wait_for(
                lambda: len(self._open) < self.max_queued, timeout=self.admit_wait
            ):
                raise BusyError(
                    f"{len(self._open)} uploads are waiting to be committed; retry in a moment"
                )
        upload = make_pending(
            self.lake,
            landing_key,
            organization_id=organization_id,
            options=options,
            source=source,
            data=data,
        )
        with self._room:
            self._open.add(upload.id)
            self._known.add(upload)
        with self._send_lock:
            try:
                assert self._conn is not None
                self._conn.send(("upload", upload, data))
            except OSError:  # the child is being replaced: the next one finds the marker
                log.warning("upload %s waits for the group commit process to restart", upload.id)
        return upload

    def lookup(self, upload_id: str, *, organization_id: str | None = None) -> Upload | None:
        """The upload if it was accepted here lately (RUNNING, or as the child finished it)."""
        with self._room:
            return self._known.get(upload_id, organization_id)


def _child(
    uri: str,
    s3: S3Options | None,
    uploads_options: dict[str, Any],
    conn: multiprocessing.connection.Connection,
) -> None:
    """The child process: a group committer fed by the pipe, reporting back on it."""
    from lake.memory import calm_garbage_collector, retain_freed_memory
    from lake.uploads import Uploads

    retain_freed_memory()
    lake = Lake(uri, s3=s3)
    uploads = Uploads(lake, **uploads_options)
    send_lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with send_lock:
            conn.send(message)

    committer = GroupCommitter(
        uploads,
        fallback=lambda upload_id: send(("hand_over", upload_id)),
        max_queued=1_000_000,  # the server side holds the back-pressure
    )

    def done(upload_ids: list[str]) -> None:
        send(("done", [(i, committer.lookup(i)) for i in upload_ids]))

    committer.on_done = done
    committer.start()
    calm_garbage_collector()
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):  # the server went away
                break
            if message[0] == "stop":
                break
            _, upload, data = message
            committer.enqueue(upload, data)
    finally:
        committer.stop()
