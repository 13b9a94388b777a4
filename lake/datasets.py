"""Datasets: named, versioned sets of datapoints.

A dataset has exactly one *working* version (uncommitted) that ``add`` and ``remove`` change,
and any number of *committed* versions, which never change. ``commit`` freezes the working
version and starts a new working version copied from it; ``checkout`` throws the working version
away and starts a new one copied from a committed version. Every version stores its full
membership (``dataset_members``, one row per datapoint), so reading a version never replays
history.

A committed version also records the lake state at its commit (every table's version), so it
can be read two ways: **live** (its datapoints as they are now: labels and predictions changed
since show up, deleted datapoints are gone) or **frozen** (exactly the rows as they were at the
commit). Table maintenance keeps the files frozen reads need (:mod:`lake.maintenance`).

All writes go through lake transactions: an operation is applied entirely or not at all.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from lake import ids
from lake.errors import InputError, NotFoundError
from lake.lake import Lake, LakeState, Transaction
from lake.query.select import Rows, select
from lake.tables import SCHEMAS


@dataclass(frozen=True)
class DatasetVersion:
    id: str
    dataset: str
    organization_id: str
    created_at: datetime
    committed: bool
    dirty: bool
    message: str | None = None
    parent: str | None = None
    created_by: str | None = None
    committed_at: datetime | None = None
    lake_state: LakeState | None = None  # committed versions: the state to read them frozen

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> DatasetVersion:
        state = None
        if row.get("lake_state"):
            raw = json.loads(row["lake_state"])
            state = LakeState(int(raw["seq"]), {k: int(v) for k, v in raw["versions"].items()})
        return cls(
            row["id"],
            row["dataset"],
            row["organization_id"],
            row["created_at"],
            bool(row["committed"]),
            bool(row["dirty"]),
            row.get("message"),
            row.get("parent"),
            row.get("created_by"),
            row.get("committed_at"),
            state,
        )

    def to_row(self) -> dict[str, Any]:
        state = None
        if self.lake_state is not None:
            state = json.dumps({"seq": self.lake_state.seq, "versions": self.lake_state.versions})
        return {
            "id": self.id,
            "organization_id": self.organization_id,
            "dataset": self.dataset,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "message": self.message,
            "committed": self.committed,
            "dirty": self.dirty,
            "parent": self.parent,
            "committed_at": self.committed_at,
            "lake_state": state,
        }


@dataclass(frozen=True)
class Dataset:
    id: str
    organization_id: str
    created_at: datetime
    display_name: str
    created_by: str | None = None

    def to_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "organization_id": self.organization_id,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "display_name": self.display_name,
        }


@dataclass(frozen=True)
class Diff:
    version1: str
    version2: str
    added: pa.Array  # datapoint ids in version2 and not in version1
    removed: pa.Array  # datapoint ids in version1 and not in version2


class Datasets:
    """The datasets of one organization (or of every organization when None)."""

    def __init__(self, lake: Lake, *, organization_id: str | None = None) -> None:
        self.lake = lake
        self.organization_id = organization_id

    # -- reading -------------------------------------------------------------------------------
    def list_datasets(self) -> list[Dataset]:
        rows = self._rows("datasets", None)
        datasets = [Dataset(**row) for row in rows]
        return sorted(datasets, key=lambda d: (d.created_at, d.id))

    def get(self, dataset_id: str) -> Dataset:
        rows = self._rows("datasets", pc.field("id") == _uuid(dataset_id, "dataset id"))
        if not rows:
            raise NotFoundError(f"dataset {dataset_id} not found")
        return Dataset(**rows[0])

    def get_by_name(self, name: str) -> Dataset:
        """The oldest dataset named ``name`` (names are not unique)."""
        matches = [d for d in self.list_datasets() if d.display_name == name]
        if not matches:
            raise NotFoundError(f"no dataset is named {name!r}")
        return matches[0]

    def versions(self, dataset_id: str) -> list[DatasetVersion]:
        """Every version, newest first: the working version, then commits, latest first."""
        dataset = self.get(dataset_id)
        rows = self._rows("dataset_versions", pc.field("dataset") == dataset.id)
        versions = [DatasetVersion.from_row(row) for row in rows]
        return sorted(
            versions,
            key=lambda v: (not v.committed, v.committed_at or v.created_at, v.created_at),
            reverse=True,
        )

    def version(self, version_id: str) -> DatasetVersion:
        rows = self._rows("dataset_versions", pc.field("id") == _uuid(version_id, "version id"))
        if not rows:
            raise NotFoundError(f"dataset version {version_id} not found")
        return DatasetVersion.from_row(rows[0])

    def working(self, dataset_id: str) -> DatasetVersion:
        return self._working(dataset_id, self.lake.state())

    def members(self, version_id: str, *, state: LakeState | None = None) -> pa.Array:
        """The datapoint ids of a version, sorted (an Arrow array, not a Python list)."""
        version = self.version(version_id)
        return self._members(version.id, state or self.lake.state())

    def select(
        self, version_id: str, table: str = "datapoints", *, frozen: bool = False, **request: Any
    ) -> Rows:
        """Rows of ``table`` for the datapoints of a version (``request``: as for ``select``).

        Live by default: the datapoints as they are now. ``frozen``: as they were when the
        version was committed (committed versions only).
        """
        version = self.version(version_id)
        state = None
        if frozen:
            if version.lake_state is None:
                raise InputError(
                    f"version {version.id} is not committed: only committed versions read frozen"
                )
            state = version.lake_state
        return select(
            self.lake,
            table,
            organization_id=self.organization_id,
            state=state,
            dataset_version=version.id,
            **request,
        )

    def diff(self, version1: str, version2: str) -> Diff:
        """Datapoints added and removed from ``version1`` to ``version2`` (any two datasets)."""
        first, second = self.version(version1), self.version(version2)
        state = self.lake.state()
        a = pl.from_arrow(self._members(first.id, state).cast(pa.large_string()))
        b = pl.from_arrow(self._members(second.id, state).cast(pa.large_string()))
        assert isinstance(a, pl.Series) and isinstance(b, pl.Series)
        frame_a, frame_b = a.alias("id").to_frame(), b.alias("id").to_frame()
        added = frame_b.join(frame_a, on="id", how="anti").sort("id").get_column("id")
        removed = frame_a.join(frame_b, on="id", how="anti").sort("id").get_column("id")
        return Diff(
            first.id,
            second.id,
            added.to_arrow().cast(pa.string()),
            removed.to_arrow().cast(pa.string()),
        )

    # -- writing -------------------------------------------------------------------------------
    def create(self, display_name: str, *, created_by: str | None = None) -> Dataset:
        if not isinstance(display_name, str) or not display_name.strip():
            raise InputError("a dataset needs a non-empty display name")
        now = datetime.now(UTC)
        dataset = Dataset(ids.new_id(), self._org(), now, display_name, created_by)
        working = DatasetVersion(
            ids.new_id(),
            dataset.id,
            dataset.organization_id,
            now,
            False,
            False,
            created_by=created_by,
        )
        with self.lake.transaction() as txn:
            txn.append("datasets", pa.Table.from_pylist([dataset.to_row()], SCHEMAS["datasets"]))
            self._save_versions(txn, [working])
        return dataset

    def add(self, dataset_id: str, datapoint_ids: Iterable[str] | pa.Array) -> int:
        """Add datapoints to the working version; return how many were not members yet.

        Every id must name a datapoint of the organization, else nothing is added.
        """
        wanted = _id_array(datapoint_ids)
        with self.lake.transaction() as txn:
            working = self._working(dataset_id, txn.base)
            self._check_datapoints(wanted, txn.base)
            current = self._members(working.id, txn.base)
            new = pc.filter(wanted, pc.invert(pc.is_in(wanted, value_set=current)))
            if len(new):
                txn.append("dataset_members", _member_rows(working, new))
                self._save_versions(txn, [_replace(working, dirty=True)])
        return len(new)

    def remove(self, dataset_id: str, datapoint_ids: Iterable[str] | pa.Array) -> int:
        """Remove datapoints from the working version; return how many were members."""
        unwanted = _id_array(datapoint_ids)
        with self.lake.transaction() as txn:
            working = self._working(dataset_id, txn.base)
            current = self._members(working.id, txn.base)
            gone = pc.filter(current, pc.is_in(current, value_set=unwanted))
            if len(gone):
                drop = (pc.field("version") == working.id) & pc.field("datapoint").isin(gone)
                txn.delete("dataset_members", "version", [working.id], drop)
                self._save_versions(txn, [_replace(working, dirty=True)])
        return len(gone)

    def commit(
        self, dataset_id: str, message: str | None = None, *, created_by: str | None = None
    ) -> DatasetVersion:
        """Freeze the working version (recording the lake state); a copy becomes the new one."""
        with self.lake.transaction() as txn:
            working = self._working(dataset_id, txn.base)
            now = datetime.now(UTC)
            committed = _replace(
                working,
                committed=True,
                dirty=False,
                message=message,
                committed_at=now,
                lake_state=LakeState(txn.base.seq, dict(txn.base.versions)),
            )
            self._start_working(txn, committed, now, created_by)
        return committed

    def checkout(
        self, dataset_id: str, version_id: str, *, created_by: str | None = None
    ) -> DatasetVersion:
        """Discard the working version; start a new one copied from committed ``version_id``."""
        with self.lake.transaction() as txn:
            working = self._working(dataset_id, txn.base)
            target = self.version(version_id)
            if target.dataset != working.dataset:
                raise InputError(f"version {target.id} is not a version of dataset {dataset_id}")
            if not target.committed:
                raise InputError(
                    f"version {target.id} is the working version: nothing to check out"
                )
            self._drop_versions(txn, [working.id])
            self._start_working(txn, target, datetime.now(UTC), created_by, keep=False)
        return target

    def delete(self, dataset_id: str) -> Dataset:
        """Delete a dataset with its versions and their memberships."""
        with self.lake.transaction() as txn:
            dataset = self.get(dataset_id)
            versions = self._rows("dataset_versions", pc.field("dataset") == dataset.id, txn.base)
            self._drop_versions(txn, [v["id"] for v in versions])
            txn.delete("datasets", "id", [dataset.id], pc.field("id") == dataset.id)
        return dataset

    # -- internals -----------------------------------------------------------------------------
    def _org(self) -> str:
        from lake.uploads import DEFAULT_ORGANIZATION

        return self.organization_id or DEFAULT_ORGANIZATION

    def _rows(
        self, table: str, condition: pc.Expression | None, state: LakeState | None = None
    ) -> list[dict[str, Any]]:
        if self.organization_id is not None:
            mine = pc.field("organization_id") == self.organization_id
            condition = mine if condition is None else condition & mine
        return self.lake.read(table, state=state, filter=condition).to_pylist()

    def _working(self, dataset_id: str, state: LakeState) -> DatasetVersion:
        dataset_id = _uuid(dataset_id, "dataset id")
        if not self._rows("datasets", pc.field("id") == dataset_id, state):
            raise NotFoundError(f"dataset {dataset_id} not found")
        rows = self._rows(
            "dataset_versions",
            (pc.field("dataset") == dataset_id) & (pc.field("committed") == pa.scalar(False)),
            state,
        )
        if not rows:
            raise NotFoundError(f"dataset {dataset_id} has no working version")
        return DatasetVersion.from_row(rows[0])

    def _members(self, version_id: str, state: LakeState) -> pa.Array:
        table = self.lake.read(
            "dataset_members",
            state=state,
            columns=["datapoint"],
            filter=pc.field("version") == version_id,
            prune=f"version = '{version_id}'",
        )
        return pc.unique(table.column("datapoint").combine_chunks()).sort().cast(pa.string())

    def _check_datapoints(self, wanted: pa.Array, state: LakeState) -> None:
        condition = pc.field("id").isin(wanted)
        if self.organization_id is not None:
            condition &= pc.field("organization_id") == self.organization_id
        found = self.lake.read("datapoints", state=state, columns=["id"], filter=condition)
        missing = pc.filter(wanted, pc.invert(pc.is_in(wanted, value_set=found.column("id"))))
        if len(missing):
            shown = ", ".join(missing.slice(0, 5).to_pylist())
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise NotFoundError(
                f"{len(missing)} datapoint id(s) not found: {shown}{more}; nothing was added"
            )

    def _start_working(
        self,
        txn: Transaction,
        source: DatasetVersion,
        now: datetime,
        created_by: str | None,
        *,
        keep: bool = True,
    ) -> DatasetVersion:
        """A new clean working version copied from ``source`` (saved too when ``keep``)."""
        working = DatasetVersion(
            ids.new_id(),
            source.dataset,
            source.organization_id,
            now,
            False,
            False,
            parent=source.id,
            created_by=created_by,
        )
        self._save_versions(txn, [source, working] if keep else [working])
        members = self._members(source.id, txn.base)
        if len(members):
            txn.append("dataset_members", _member_rows(working, members))
        return working

    def _save_versions(self, txn: Transaction, versions: list[DatasetVersion]) -> None:
        rows = pa.Table.from_pylist([v.to_row() for v in versions], SCHEMAS["dataset_versions"])
        txn.upsert("dataset_versions", rows)

    def _drop_versions(self, txn: Transaction, version_ids: list[str]) -> None:
        if not version_ids:
            return
        txn.upsert("dataset_versions", SCHEMAS["dataset_versions"].empty_table(), version_ids)
        drop = pc.field("version").isin(pa.array(version_ids, pa.string()))
        txn.delete("dataset_members", "version", version_ids, drop)


def _replace(version: DatasetVersion, **changes: Any) -> DatasetVersion:
    return dataclasses.replace(version, **changes)


def _uuid(value: object, what: str) -> str:
    canonical = ids.canonical(value)
    if canonical is None:
        raise InputError(f"{what} must be a UUID, got {value!r}")
    return canonical


def _id_array(values: Iterable[str] | pa.Array) -> pa.Array:
    """Datapoint ids as a sorted, unique Arrow array of canonical UUIDs."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array):
        values = list(values)
        bad = [v for v in values if not isinstance(v, str)]
        if bad:
            raise InputError(f"datapoint ids must be strings, got {bad[0]!r}")
        values = pa.array(values, pa.string())
    canonical = pc.utf8_lower(values.cast(pa.string()))
    valid = pc.match_substring_regex(
        canonical, r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    )
    if not pc.all(valid.fill_null(False), min_count=0).as_py():
        first = pc.filter(values, pc.invert(valid.fill_null(False)))[0].as_py()
        raise InputError(f"datapoint ids must be UUIDs, got {first!r}")
    return pc.unique(canonical).sort()


def _member_rows(version: DatasetVersion, datapoints: pa.Array) -> pa.Table:
    n = len(datapoints)
    return pa.table(
        {
            "version": _constant(version.id, n),
            "organization_id": _constant(version.organization_id, n),
            "datapoint": datapoints.cast(pa.string()),
        },
        schema=SCHEMAS["dataset_members"],
    )


def _constant(value: str, n: int) -> pa.Array:
    return pc.fill_null(pa.nulls(n, pa.string()), value)
