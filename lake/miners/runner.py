"""Miner runs as background jobs.

:class:`MinerRunner` queues runs on worker threads. A run asked for again, reset or deleted
while it works is cancelled at its next step and records nothing. When the runner starts it
resumes every run the lake still shows as queued or started (left by a process that stopped):
a run is a pure function of the lake and the miner's configuration and seed, so running it
again gives the result the interrupted run would have given. For the same reason a run whose
storage fails (an outage of the object store) is run again once it is back.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from lake.errors import LakeError, LockTimeoutError, StorageError
from lake.faults import crash_point
from lake.lake import Lake
from lake.miners.config import MinerConfig
from lake.miners.mine import mine, seed_of
from lake.miners.store import Miner, Miners
from lake.miners.vectors import RunCancelled

log = logging.getLogger(__name__)


@dataclass
class _Run:
    task_id: str
    cancel: threading.Event
    future: Future[None] | None = None
    done: int = 0
    total: int = 0


class MinerRunner:
    """Run miners in the background; ``start()`` resumes interrupted runs."""

    def __init__(self, lake: Lake, *, workers: int = 1, storage_patience: float = 300.0) -> None:
        self.lake = lake
        self.storage_patience = storage_patience
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shoal-miner")
        self._runs: dict[str, _Run] = {}  # miner id → its latest run in this process
        self._lock = threading.Lock()

    def start(self) -> list[str]:
        """Resume every queued or started run; return the miner ids."""
        unfinished = Miners(self.lake).unfinished()
        for miner in sorted(unfinished, key=lambda m: m.task.requested_at or m.updated_at):
            self._submit(miner)
        return [m.id for m in unfinished]

    # -- what the routes call ------------------------------------------------------------------
    def run(self, miner_id: str, *, organization_id: str | None) -> Miner:
        """Queue a new run of the miner, replacing (and cancelling) any earlier one."""
        miner = Miners(self.lake, organization_id=organization_id).request_run(miner_id)
        self._submit(miner)
        return miner

    def reset(self, miner_id: str, *, organization_id: str | None) -> Miner:
        miner = Miners(self.lake, organization_id=organization_id).reset(miner_id)
        self._cancel(miner.id)
        return miner

    def update(self, miner_id: str, config: MinerConfig, *, organization_id: str | None) -> Miner:
        miner = Miners(self.lake, organization_id=organization_id).update(miner_id, config)
        self._cancel(miner.id)
        return miner

    def delete(self, miner_id: str, *, organization_id: str | None) -> Miner:
        miner = Miners(self.lake, organization_id=organization_id).delete(miner_id)
        self._cancel(miner.id)
        return miner

    def progress(self, miner: Miner) -> tuple[int, int] | None:
        """(picked, wanted) of the miner's run while this process works on it."""
        with self._lock:
            run = self._runs.get(miner.id)
        if run is None or run.task_id != miner.task.id or not run.total:
            return None
        return run.done, run.total

    def running(self, miner_id: str) -> bool:
        """Whether this process has a run of the miner queued or working."""
        with self._lock:
            return miner_id in self._runs

    def wait(
        self, miner_id: str, *, organization_id: str | None, timeout: float | None = None
    ) -> Miner:
        """The miner once its latest run in this process has ended."""
        with self._lock:
            run = self._runs.get(miner_id)
        if run is not None and run.future is not None:
            run.future.result(timeout=timeout)
        return Miners(self.lake, organization_id=organization_id).get(miner_id)

    def shutdown(self, *, wait: bool = True) -> None:
        with self._lock:
            for run in self._runs.values():
                if not wait:
                    run.cancel.set()
        self._pool.shutdown(wait=wait, cancel_futures=not wait)

    # -- internals -----------------------------------------------------------------------------
    def _submit(self, miner: Miner) -> None:
        assert miner.task.id is not None
        run = _Run(miner.task.id, threading.Event())
        with self._lock:
            earlier = self._runs.get(miner.id)
            if earlier is not None:
                earlier.cancel.set()
            self._runs[miner.id] = run
            run.future = self._pool.submit(self._execute, miner, run)

    def _cancel(self, miner_id: str) -> None:
        with self._lock:
            run = self._runs.pop(miner_id, None)
        if run is not None:
            run.cancel.set()

    def _execute(self, miner: Miner, run: _Run) -> None:
        """Run the miner; storage that fails (unreachable, or the writer lock not free in
        time) does not fail the run at once: it is run again with backoff for
        ``storage_patience`` seconds (a run is a pure function of the lake), then it fails."""
        miners = Miners(self.lake, organization_id=miner.organization_id)
        assert miner.task.id is not None
        give_up = time.monotonic() + self.storage_patience
        delay = 0.5
        try:
            while True:
                try:
                    self._attempt(miners, miner, run)
                    return
                except (StorageError, LockTimeoutError) as exc:
                    if time.monotonic() + delay > give_up:
                        log.info("miner %s run %s failed: %s", miner.id, miner.task.id, exc)
                        self._fail(miners, miner, f"the lake failed: {exc}")
                        return
                    log.warning("miner %s: %s; running again in %.1f s", miner.id, exc, delay)
                    if run.cancel.wait(delay):
                        return
                    delay = min(delay * 2, 10.0)
        except RunCancelled:
            return
        except LakeError as exc:
            log.info("miner %s run %s failed: %s", miner.id, miner.task.id, exc)
            self._fail(miners, miner, str(exc))
        except Exception as exc:  # a bug must still end the run, never leave it STARTED
            log.exception(
                "miner %s run %s stopped with an unexpected error", miner.id, miner.task.id
            )
            self._fail(miners, miner, f"internal error ({type(exc).__name__}: {exc})")
        finally:
            with self._lock:
                if self._runs.get(miner.id) is run:
                    del self._runs[miner.id]

    def _attempt(self, miners: Miners, miner: Miner, run: _Run) -> None:
        assert miner.task.id is not None
        if run.cancel.is_set() or miners.start(miner.id, miner.task.id) is None:
            return
        result = mine(
            self.lake,
            miner.config,
            organization_id=miner.organization_id,
            seed=miner.config.seed if miner.config.seed is not None else seed_of(miner.id),
            progress=lambda done, total: _note(run, done, total),
            cancelled=run.cancel.is_set,
        )
        if not run.cancel.is_set():
            miners.succeed(miner.id, miner.task.id, result)

    @staticmethod
    def _fail(miners: Miners, miner: Miner, message: str) -> None:
        assert miner.task.id is not None
        try:
            miners.fail(miner.id, miner.task.id, message)
        except LakeError:
            # the lake is unreachable: the run stays queued/started and resumes at restart
            log.exception("could not record the failure of miner %s", miner.id)


def _note(run: _Run, done: int, total: int) -> None:
    run.done, run.total = done, total
    crash_point("miner.pick")
