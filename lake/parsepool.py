"""Large batches parsed in helper processes, so that parsing does not hold the job's GIL.

A batch of records with embeddings is ~128 MiB of number text. Parsing it (cutting the vectors
out, simdjson for their numbers, Arrow for the rest, planning the rows) is pure CPU and much of
it holds the GIL (simdjson does, and the cutting is a Python loop); in threads, the job's
committing thread waits for the GIL while a batch is parsed. Measured on the S3 embedding
benchmark (2 cores; the GIL was held 14.8 s of a 24.7 s run, 7 s of it by simdjson): parsing in
two helper processes applied records 13% faster after the landing (BENCHMARKS.md, 2026-12-07).

A helper is a plain ``python`` process running :func:`serve` (not a ``multiprocessing`` child,
which would import the application's ``__main__`` module again). The batch's text goes to it
through its standard input, the prepared batch (Arrow tables, record specs, errors) comes back
pickled on its standard output. A batch is parsed the same way wherever it is parsed
(:func:`lake.prepare.prepare_batch` is a pure function of its arguments), so any failure of the
helper path (a helper killed, or not started, or an error in the parse) only sends the batch to
the usual in-thread parse, which then gives the same result or raises the same error. Helpers
start on the first large batch, live as long as the process and end with it (their input
closes), or sooner when a failure turns the helpers off. Small batches (a bulk upload's
50,000 short records are ~25 MiB) are parsed in threads as before: Arrow's parser, most of
their work, does not hold the GIL.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from lake.memory import status_mib
from lake.ndjson import RawBatch

if TYPE_CHECKING:
    from lake.batch import IdSource
    from lake.prepare import PreparedBatch

log = logging.getLogger(__name__)

#: Batches with at least this much text are parsed in a helper process.
PROCESS_MIN_BYTES = 48 * 2**20
_HEAD = 8  # bytes of the length before each message


class ParseProcesses:
    """Up to ``workers`` helper processes parsing batches (see the module's documentation)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._changed = threading.Condition()
        self._idle: list[_Helper] = []
        self._started = 0
        self._pids: list[int] = []  # of every helper started
        self.broken = False  # a helper failed: batches are parsed in threads from then on
        self.parsed = 0  # batches the helpers prepared

    def prepare(
        self,
        raw: RawBatch,
        organization_id: str,
        id_source: IdSource,
        *,
        fast_path: bool,
        use_threads: bool,
        native_min_lines: int,
    ) -> PreparedBatch | None:
        """The batch prepared by a helper; None when the helper path failed (the caller
        parses the batch itself)."""
        helper = self._take()
        if helper is None:
            return None
        request = {
            "size": len(raw.data),
            "numbers": raw.numbers,
            "errors": raw.errors,
            "organization_id": organization_id,
            "id_source": id_source,
            "fast_path": fast_path,
            "use_threads": use_threads,
            "native_min_lines": native_min_lines,
        }
        try:
            kind, answer = helper.call(request, raw.data)
        except Exception as exc:  # the helper died, or its pipes are in an unknown state
            helper.stop()
            self._turn_off(f"a helper failed ({exc!r})")
            return None
        self._give(helper)
        if kind != "ok":  # the parse failed there: the usual parse says why
            log.debug("a helper could not parse a batch: %s", answer)
            return None
        with self._changed:
            self.parsed += 1
        return answer

    def _take(self) -> _Helper | None:
        with self._changed:
            while True:
                if self.broken:
                    return None
                if self._idle:
                    return self._idle.pop()
                if self._started < self.workers:
                    self._started += 1
                    break
                self._changed.wait()
        try:
            helper = _Helper()
        except OSError as exc:
            self._turn_off(str(exc))
            return None
        with self._changed:
            self._pids.append(helper.process.pid)
        return helper

    def _turn_off(self, why: str) -> None:
        """A helper failed or could not start (it is not counted any more): batches are parsed
        in threads from now on, and threads waiting for a helper are told so."""
        log.warning("parsing in helper processes is off: %s", why)
        with self._changed:
            self.broken = True
            self._started -= 1
            self._changed.notify_all()
        self.close()  # no batch will reach the idle ones; busy ones end on their return

    def _give(self, helper: _Helper) -> None:
        with self._changed:
            if not self.broken:
                self._idle.append(helper)
                self._changed.notify()
                return
            self._started -= 1
        helper.stop()

    def peak_rss_mib(self) -> float | None:
        """The largest peak resident memory of the helpers started (Linux), None if none."""
        peaks = [status_mib("VmHWM", pid) for pid in self._pids]
        return max((peak for peak in peaks if peak is not None), default=None)

    def close(self) -> None:
        with self._changed:
            idle, self._idle = self._idle, []
            self._started -= len(idle)
        for helper in idle:
            helper.stop()


class _Helper:
    """One helper process and its pipes."""

    def __init__(self) -> None:
        env = dict(os.environ)
        # the helper imports this package from where this process has it
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.process = subprocess.Popen(
            # -P: the working folder is not put first on the path (a "lake" folder there)
            [sys.executable, "-P", "-c", "from lake.parsepool import serve; serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.input: IO[bytes] = self.process.stdin
        self.output: IO[bytes] = self.process.stdout

    def call(self, request: dict[str, Any], data: bytes) -> tuple[str, Any]:
        """Send a request and its batch text; the helper's answer."""
        _send(self.input, pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL), data)
        return pickle.loads(_receive(self.output))

    def stop(self) -> None:
        for pipe in (self.input, self.output):
            with contextlib.suppress(OSError):
                pipe.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _send(pipe: IO[bytes], head: bytes, data: bytes = b"") -> None:
    pipe.write(len(head).to_bytes(_HEAD, "big"))
    pipe.write(head)
    if data:
        pipe.write(data)  # written straight from the batch's bytes, without the GIL
    pipe.flush()


def _receive(pipe: IO[bytes]) -> bytes:
    size = int.from_bytes(_read(pipe, _HEAD), "big")
    return _read(pipe, size)


def _read(pipe: IO[bytes], size: int) -> bytes:
    data = pipe.read(size)
    if len(data) != size:
        raise EOFError("the helper process ended")
    return data


_pools: dict[int, ParseProcesses] = {}
_pools_lock = threading.Lock()


def parse_processes(workers: int) -> ParseProcesses:
    """The process's helpers for ``workers`` parse workers, started on first use, stopped at
    exit."""
    with _pools_lock:
        pool = _pools.get(workers)
        if pool is None:
            pool = _pools[workers] = ParseProcesses(workers)
            atexit.register(pool.close)
        return pool


def serve() -> None:
    """A helper's loop: parse the batches sent on standard input until it closes."""
    from lake.memory import retain_freed_memory
    from lake.prepare import prepare_batch

    retain_freed_memory()  # as the job's process: each batch reuses the last one's memory
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C is the job's to handle; it closes our input
    requests = sys.stdin.buffer
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print must not reach the job
    while True:
        try:
            request = pickle.loads(_receive(requests))
        except EOFError:
            return
        data = _read(requests, request["size"])
        try:
            prepared = prepare_batch(
                RawBatch(data, request["numbers"], request["errors"]),
                request["organization_id"],
                request["id_source"],
                fast_path=request["fast_path"],
                use_threads=request["use_threads"],
                native_min_lines=request["native_min_lines"],
            )
            answer = pickle.dumps(("ok", prepared), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            answer = pickle.dumps(("error", f"{type(exc).__name__}: {exc}"))
        del data
        _send(answers, answer)
