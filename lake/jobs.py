"""Background execution of uploads.

:class:`JobRunner` runs uploads on worker threads. When it starts it picks up every upload still
``RUNNING`` in the lake (left by a process that stopped) and resumes it after its last committed
batch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from lake.lake import Lake
from lake.uploads import Upload, Uploads, UploadStatus

log = logging.getLogger(__name__)


class JobRunner:
    """Run uploads in the background; ``start()`` resumes interrupted ones."""

    def __init__(self, lake: Lake, *, workers: int = 1, uploads: Uploads | None = None) -> None:
        self.lake = lake
        self.uploads = uploads or Uploads(lake)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shoal-job")
        self._futures: dict[str, Future[Upload]] = {}
        self._lock = threading.Lock()
        #: called (from a worker thread) with the id of each upload a run ended or left
        self.on_done: Callable[[list[str]], object] | None = None

    def start(self) -> list[str]:
        """Resume every RUNNING upload; return their ids."""
        resumed = [u.id for u in self.uploads.list_uploads(status=UploadStatus.RUNNING)]
        for upload_id in reversed(resumed):  # oldest first
            self.submit(upload_id)
        return resumed

    def submit(self, upload_id: str) -> Future[Upload]:
        with self._lock:
            future = self._futures.get(upload_id)
            if future is not None and not future.done():
                return future
            future = self._pool.submit(self._run, upload_id)
            self._futures[upload_id] = future
            return future

    def _run(self, upload_id: str) -> Upload:
        try:
            return self.uploads.run(upload_id)
        except Exception:
            log.exception("upload %s stopped with an unexpected error", upload_id)
            raise
        finally:
            with self._lock:
                self._futures.pop(upload_id, None)
            if self.on_done is not None:
                self.on_done([upload_id])

    def wait(self, upload_id: str, timeout: float | None = None) -> Upload:
        with self._lock:
            future = self._futures.get(upload_id)
        if future is not None:
            future.result(timeout=timeout)
        return self.uploads.get(upload_id)

    def shutdown(self, *, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
