"""Requests waiting for uploads to end (``GET /api/ingestion/executions/{id}?wait=S``).

The request awaits an event on the server's event loop; the threads that end uploads (the
group committer, the job runner) wake it with :meth:`Waiters.notify`, so a waiting client holds
no thread and learns of the end at once instead of polling.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable


class Waiters:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[str, list[asyncio.Event]] = {}  # touched on the loop's thread only

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    async def wait(self, upload_ids: str | Iterable[str], timeout: float) -> None:
        """Return when one of ``upload_ids`` (an id or several) is said to have ended, or
        after ``timeout`` seconds."""
        ids = [upload_ids] if isinstance(upload_ids, str) else list(dict.fromkeys(upload_ids))
        event = asyncio.Event()
        for upload_id in ids:
            self._events.setdefault(upload_id, []).append(event)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
        finally:
            for upload_id in ids:
                waiting = self._events.get(upload_id, [])
                if event in waiting:
                    waiting.remove(event)
                if not waiting:
                    self._events.pop(upload_id, None)

    def notify(self, upload_ids: Iterable[str]) -> None:
        """Wake the requests waiting for ``upload_ids`` (from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._wake, list(upload_ids))

    def _wake(self, upload_ids: list[str]) -> None:
        for upload_id in upload_ids:
            for event in self._events.get(upload_id, ()):
                event.set()
