"""Miners as rows of the ``miners`` table: their configuration and their latest run.

A run's status is Celery's vocabulary, as the reference clients read it: a miner that never ran
(or was reset) is ``PENDING`` with no result; :meth:`Miners.request_run` queues a run
(``PENDING`` with a ``task_id``), the runner marks it ``STARTED``, then ``SUCCESS`` with the
datapoint ids or ``FAILURE`` with a message. Every change is one lake transaction, and a run
only records its outcome while it is still the miner's latest (``task_id`` unchanged): a run
that a reset, a new run or a delete superseded leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lake import ids
from lake.errors import NotFoundError
from lake.lake import Lake, LakeState
from lake.miners.config import MinerConfig
from lake.tables import SCHEMAS


class TaskStatus(StrEnum):
    PENDING = "PENDING"
    STARTED = "STARTED"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"


@dataclass(frozen=True)
class Task:
    """A miner's latest run (``id`` None: never run, or reset)."""

    id: str | None
    status: TaskStatus
    requested_at: datetime | None = None
    started_at: datetime | None = None
    done_at: datetime | None = None
    message: str | None = None
    result: list[str] | None = None

    @property
    def finished(self) -> bool:
        return self.status in (TaskStatus.SUCCESS, TaskStatus.FAILURE)


NO_TASK = Task(None, TaskStatus.PENDING)


@dataclass(frozen=True)
class Miner:
    id: str
    organization_id: str
    config: MinerConfig
    created_at: datetime
    updated_at: datetime
    task: Task = NO_TASK
    created_by: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Miner:
        task = NO_TASK
        if row.get("task_id"):
            task = Task(
                row["task_id"],
                TaskStatus(row["task_status"]),
                row.get("task_requested_at"),
                row.get("task_started_at"),
                row.get("task_done_at"),
                row.get("task_message"),
                row.get("task_result"),
            )
        return cls(
            row["id"],
            row["organization_id"],
            MinerConfig.parse(json.loads(row["config"])),
            row["created_at"],
            row["updated_at"],
            task,
            row.get("created_by"),
        )

    def to_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "organization_id": self.organization_id,
            "display_name": self.config.display_name,
            "strategy": str(self.config.strategy),
            "config": json.dumps(self.config.to_doc()),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "created_by": self.created_by,
            "task_id": self.task.id,
            "task_status": str(self.task.status) if self.task.id else None,
            "task_requested_at": self.task.requested_at,
            "task_started_at": self.task.started_at,
            "task_done_at": self.task.done_at,
            "task_message": self.task.message,
            "task_result": self.task.result,
        }


class Miners:
    """The miners of one organization (or of every organization when None)."""

    def __init__(self, lake: Lake, *, organization_id: str | None = None) -> None:
        self.lake = lake
        self.organization_id = organization_id

    # -- reading -------------------------------------------------------------------------------
    def list_miners(self) -> list[Miner]:
        miners = [Miner.from_row(row) for row in self._rows(None)]
        return sorted(miners, key=lambda m: (m.created_at, m.id))

    def get(self, miner_id: str, *, state: LakeState | None = None) -> Miner:
        canonical = ids.canonical(miner_id)
        rows = self._rows(pc.field("id") == canonical, state) if canonical else []
        if not rows:
            raise NotFoundError(f"miner {miner_id} not found")
        return Miner.from_row(rows[0])

    def unfinished(self) -> list[Miner]:
        """Miners whose latest run is queued or started: what a restart resumes."""
        condition = pc.field("task_status").isin(["PENDING", "STARTED"])
        return [Miner.from_row(row) for row in self._rows(condition)]

    # -- writing -------------------------------------------------------------------------------
    def create(self, config: MinerConfig, *, created_by: str | None = None) -> Miner:
        from lake.uploads import DEFAULT_ORGANIZATION

        now = datetime.now(UTC)
        org = self.organization_id or DEFAULT_ORGANIZATION
        miner = Miner(ids.new_id(), org, config, now, now, created_by=created_by)
        with self.lake.transaction() as txn:
            txn.append("miners", _table([miner]))
        return miner

    def update(self, miner_id: str, config: MinerConfig) -> Miner:
        """A new configuration; the results of the old one are dropped (the miner is reset)."""
        return self._change(miner_id, config=config, task=NO_TASK)

    def reset(self, miner_id: str) -> Miner:
        return self._change(miner_id, task=NO_TASK)

    def request_run(self, miner_id: str) -> Miner:
        """Queue a new run (``PENDING``); it replaces the result of any earlier one."""
        task = Task(ids.new_id(), TaskStatus.PENDING, requested_at=datetime.now(UTC))
        return self._change(miner_id, task=task)

    def start(self, miner_id: str, task_id: str) -> Miner | None:
        """Mark run ``task_id`` started; None when it is no longer the miner's latest run."""
        return self._advance(miner_id, task_id, TaskStatus.STARTED)

    def succeed(self, miner_id: str, task_id: str, result: list[str]) -> Miner | None:
        return self._advance(miner_id, task_id, TaskStatus.SUCCESS, result=result)

    def fail(self, miner_id: str, task_id: str, message: str) -> Miner | None:
        return self._advance(miner_id, task_id, TaskStatus.FAILURE, message=message)

    def delete(self, miner_id: str) -> Miner:
        with self.lake.transaction() as txn:
            miner = self.get(miner_id, state=txn.base)
            txn.delete("miners", "id", [miner.id], pc.field("id") == miner.id)
        return miner

    # -- internals -----------------------------------------------------------------------------
    def _change(self, miner_id: str, **changes: Any) -> Miner:
        with self.lake.transaction() as txn:
            miner = self.get(miner_id, state=txn.base)
            changed = _replace(miner, **changes)
            txn.upsert("miners", _table([changed]))
        return changed

    def _advance(
        self, miner_id: str, task_id: str, status: TaskStatus, **fields: Any
    ) -> Miner | None:
        with self.lake.transaction() as txn:
            try:
                miner = self.get(miner_id, state=txn.base)
            except NotFoundError:
                return None  # deleted while it ran
            if miner.task.id != task_id:
                return None  # reset or run again meanwhile
            now = datetime.now(UTC)
            stamp = {"started_at": now} if status is TaskStatus.STARTED else {"done_at": now}
            task = _replace_task(miner.task, status=status, **stamp, **fields)
            changed = _replace(miner, task=task)
            txn.upsert("miners", _table([changed]))
        return changed

    def _rows(
        self, condition: pc.Expression | None, state: LakeState | None = None
    ) -> list[dict[str, Any]]:
        if self.organization_id is not None:
            mine = pc.field("organization_id") == self.organization_id
            condition = mine if condition is None else condition & mine
        return self.lake.read("miners", state=state, filter=condition).to_pylist()


def _table(miners: list[Miner]) -> pa.Table:
    return pa.Table.from_pylist([m.to_row() for m in miners], SCHEMAS["miners"])


def _replace(miner: Miner, **changes: Any) -> Miner:
    return dataclasses.replace(miner, updated_at=datetime.now(UTC), **changes)


def _replace_task(task: Task, **changes: Any) -> Task:
    return dataclasses.replace(task, **changes)
