"""A request body streamed into the lake's object store as it arrives.

The store's writers are blocking (boto3, file writes): one runs on a worker thread and reads a
pipe that the event loop fills with the body's chunks, a few MiB ahead at most. Receiving the
body and writing it to the store overlap, and nothing is spooled to a temporary file.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator

from fastapi import HTTPException

from lake.storage import ObjectStore

_PIECE = 1 << 20  # chunks are gathered into pieces this big before they cross threads
_AHEAD = 8  # pieces received but not yet written


class _Aborted(Exception):
    """The request ended before its body did (the store's writer stops, storing nothing)."""


class _Pipe(io.RawIOBase):
    """Read on a worker thread; fed with pieces (then None, or an exception) by the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pieces: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(_AHEAD)
        self.rest = memoryview(b"")
        self.ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self.rest:
            if self.ended:
                return 0
            piece = asyncio.run_coroutine_threadsafe(self.pieces.get(), self.loop).result()
            if isinstance(piece, BaseException):
                self.ended = True
                raise piece
            if piece is None:
                self.ended = True
                return 0
            self.rest = memoryview(piece)
        n = min(len(buffer), len(self.rest))
        buffer[:n] = self.rest[:n]
        self.rest = self.rest[n:]
        return n


async def stream_to_store(
    store: ObjectStore, key: str, body: AsyncIterator[bytes], *, max_bytes: int
) -> int:
    """Write ``body`` to ``key`` while it arrives; return its size.

    A body over ``max_bytes`` is refused with 413 (also when no Content-Length announced it),
    and a body that does not arrive whole stores nothing.
    """
    loop = asyncio.get_running_loop()
    pipe = _Pipe(loop)
    reader = io.BufferedReader(pipe, buffer_size=_PIECE)
    writing = asyncio.ensure_future(asyncio.to_thread(store.land, key, reader))

    async def send(item: bytes | BaseException | None) -> None:
        # the writer may have failed and stopped reading: then its error is raised here
        put = asyncio.ensure_future(pipe.pieces.put(item))
        await asyncio.wait({put, writing}, return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()
            await writing  # raises the writer's error
            raise RuntimeError("the store's writer stopped before the body ended")

    size = 0
    pending = bytearray()
    try:
        async for chunk in body:
            size += len(chunk)
            if size > max_bytes:
                raise HTTPException(
                    413,
                    f"request body is over the limit of {max_bytes} bytes (SHOAL_MAX_BODY_MB)",
                )
            pending += chunk
            if len(pending) >= _PIECE:
                await send(bytes(pending))
                pending.clear()
        if pending:
            await send(bytes(pending))
        await send(None)
    except BaseException as exc:
        await _abort(pipe, writing, exc)
        raise
    await writing
    return size


async def _abort(pipe: _Pipe, writing: asyncio.Future[None], exc: BaseException) -> None:
    """Make the writer fail (so nothing is stored) and wait for it to stop."""
    if not writing.done():
        while not pipe.pieces.empty():  # room for the abort, whatever was queued
            pipe.pieces.get_nowait()
        pipe.pieces.put_nowait(_Aborted(f"the request body did not arrive whole: {exc!r}"))
    # the writer's error is a consequence: the request's own error is the one raised
    with contextlib.suppress(Exception):
        await asyncio.shield(writing)
