"""A lake: Delta tables under one root, read and written at consistent states.

A *lake state* is the set of table versions left behind by the last completed batch. Writers
commit a batch under the lake-wide writer lock, one Delta commit per table, then publish the
next state (a small JSON object created with create-if-absent semantics). Readers read every
table at the versions of the latest published state, so they never see half a batch.

A writer that dies between its table commits and its publication leaves an *intent* marker;
the next writer finds it and restores the tables to the last published state before it writes,
so an interrupted batch is rolled back and can be re-run without duplicating anything.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from lake.delta import DeltaStore
from lake.errors import LockLostError, StorageError
from lake.faults import crash_point
from lake.storage import LakeLocation, ObjectStore, S3Options
from lake.tables import SCHEMAS, TABLE_NAMES, empty

_STATE_PREFIX = "_shoal/state/"
_LATEST_HINT = "_shoal/latest_state"
_INTENT = "_shoal/commit_intent"

#: sends a writer's independent requests to a remote store together (see Lake._together)
_REQUESTS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="shoal-lake-request")
A = TypeVar("A")
B = TypeVar("B")


@dataclass(frozen=True)
class LakeState:
    """Table versions that form a consistent lake; ``seq`` counts published states."""

    seq: int
    versions: dict[str, int] = field(default_factory=dict)
    created_at: str = ""
    #: progress of the uploads still running, committed together with their batches
    progress: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "seq": self.seq,
                "versions": self.versions,
                "created_at": self.created_at,
                "progress": self.progress,
            }
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> LakeState:
        data = json.loads(raw)
        return cls(
            int(data["seq"]),
            {k: int(v) for k, v in data["versions"].items()},
            str(data.get("created_at", "")),
            dict(data.get("progress") or {}),
        )


EMPTY_STATE = LakeState(-1)


def _state_key(seq: int) -> str:
    return f"{_STATE_PREFIX}{seq:020d}.json"


class Lake:
    """Open a lake at ``uri`` (a folder, ``file://`` or ``s3://bucket/prefix``).

    With no ``uri`` the lake is ``$SHOAL_LAKE`` or ``./shoal-data``.
    """

    def __init__(
        self, uri: str | None = None, *, s3: S3Options | None = None, lock_timeout: float = 300.0
    ) -> None:
        self.location = LakeLocation.parse(uri, s3=s3)
        self.store: ObjectStore = self.location.open_store()
        self.delta = DeltaStore(self.location, self.store)
        self.lock_timeout = lock_timeout
        # the newest state this object read or published: states are immutable and numbered
        # without gaps, so while the next number is absent it is still the latest
        self._seen: LakeState | None = None

    @property
    def uri(self) -> str:
        return self.location.uri

    def __repr__(self) -> str:
        return f"Lake({self.uri!r})"

    # -- states --------------------------------------------------------------------------------
    def state(self) -> LakeState:
        """The latest published state (EMPTY_STATE for a lake nothing was written to).

        One request when no state was published since this object last looked (the next
        state is absent), else the latest-state hint, that state and the next.
        """
        seen = self._seen
        if seen is not None and self.store.get(_state_key(seen.seq + 1)) is None:
            return seen
        found = self._latest()
        if found.seq >= 0 and (self._seen is None or found.seq > self._seen.seq):
            self._seen = found
        return found

    def _latest(self) -> LakeState:
        hint = self.store.get(_LATEST_HINT)
        seq = int(hint) if hint else -1
        found: LakeState | None = None
        if seq >= 0:
            raw = self.store.get(_state_key(seq))
            if raw is None:  # a hint newer than any state cannot happen; rescan to be safe
                return self._scan_states()
            found = LakeState.from_json(raw)
        while True:  # the hint may lag behind: walk forward
            raw = self.store.get(_state_key(seq + 1))
            if raw is None:
                break
            found = LakeState.from_json(raw)
            seq += 1
        if found is None:
            return self._scan_states() if seq < 0 else EMPTY_STATE
        return found

    def _scan_states(self) -> LakeState:
        keys = [k for k in self.store.list(_STATE_PREFIX) if k.endswith(".json")]
        if not keys:
            return EMPTY_STATE
        raw = self.store.get(keys[-1])
        return LakeState.from_json(raw) if raw else EMPTY_STATE

    # -- reading -------------------------------------------------------------------------------
    def read(
        self,
        table: str,
        *,
        state: LakeState | None = None,
        columns: Sequence[str] | None = None,
        filter: pc.Expression | None = None,
        prune: str | None = None,
    ) -> pa.Table:
        """Rows of ``table`` at ``state`` (the latest by default) as an Arrow table.

        ``filter`` selects rows; ``prune`` is a SQL predicate that skips whole files by their
        statistics (a range of keys, say), applied before the filter.
        """
        state = state or self.state()
        version = state.versions.get(table)
        if version is None:
            result = empty(table)
            if columns is not None:
                result = result.select(list(columns))
            return result
        return self.delta.read(table, version, columns=columns, filter=filter, prune=prune)

    def fragments(self, table: str, *, state: LakeState | None = None) -> list[ds.Fragment]:
        """The data files of ``table`` at ``state``, to stream a large table file by file."""
        state = state or self.state()
        version = state.versions.get(table)
        return [] if version is None else self.delta.fragments(table, version)

    def scan(self, table: str, *, state: LakeState | None = None) -> pl.LazyFrame:
        state = state or self.state()
        version = state.versions.get(table)
        if version is None:
            return pl.LazyFrame(schema=pl.from_arrow(empty(table)).schema)  # type: ignore[union-attr]
        return self.delta.scan(table, version)

    def split_points(
        self, table: str, column: str, rows_per_part: int, *, state: LakeState | None = None
    ) -> list[str]:
        """Values of ``column`` cutting ``table`` into parts of about ``rows_per_part`` rows."""
        state = state or self.state()
        version = state.versions.get(table)
        if version is None:
            return []
        return self.delta.split_points(table, version, column, rows_per_part)

    def count(self, table: str, *, state: LakeState | None = None) -> int:
        state = state or self.state()
        version = state.versions.get(table)
        return 0 if version is None else self.delta.count(table, version)

    def stats(self) -> dict[str, Any]:
        state = self.state()
        return {
            "lake": self.uri,
            "state": state.seq,
            "tables": {name: self.count(name, state=state) for name in TABLE_NAMES},
        }

    # -- writing -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Hold the writer lock, commit tables through the yielded object, publish on success.

        If the body raises, nothing is published and the tables are restored to the state
        they had, so readers and later writers never see the partial batch.
        """
        with self.store.writer_lock(timeout=self.lock_timeout):
            state, intent = self._together(self.state, lambda: self.store.get(_INTENT))
            base = self._repair_if_interrupted(state, intent)
            txn = Transaction(self, base)
            try:
                yield txn
            except LockLostError:
                # the writer that took the lock over repairs the lake (it found our intent
                # marker); touching the tables now could undo its work
                raise
            except BaseException:
                if txn.dirty:
                    self._restore(base, txn.versions)
                    self.store.delete(_INTENT)
                raise
            if txn.dirty or txn.progress != base.progress:
                self.store.keep_lock()
                crash_point("state.publish")
                self._publish(base, txn.versions, txn.progress, clear_intent=txn.dirty)

    def _publish(
        self,
        base: LakeState,
        versions: dict[str, int],
        progress: dict[str, dict[str, Any]],
        *,
        clear_intent: bool,
    ) -> LakeState:
        new = LakeState(base.seq + 1, dict(versions), datetime.now(UTC).isoformat(), dict(progress))
        if not self.store.put_if_absent(_state_key(new.seq), new.to_json()):
            raise StorageError(
                f"lake state {new.seq} was published by another writer while this one held "
                "the writer lock; is a writer running without the lock?"
            )
        self._seen = new
        # the intent goes before the lock does (the next writer must not find it), the hint
        # may follow at any time (readers walk forward from it)
        self._together(
            lambda: self.store.put(_LATEST_HINT, str(new.seq).encode()),
            lambda: self.store.delete(_INTENT) if clear_intent else None,
        )
        return new

    def _together(self, first: Callable[[], A], second: Callable[[], B]) -> tuple[A, B]:
        """Both calls' results; on a remote store the second request is sent while the first
        waits for its answer (the writer's few small requests are its fixed cost per batch)."""
        if not self.store.remote:
            return first(), second()
        later = _REQUESTS.submit(second)
        try:
            result = first()
        except BaseException:
            later.exception()  # (waited for: nothing runs on after the caller moved on)
            raise
        return result, later.result()

    def _repair_if_interrupted(self, state: LakeState, intent: bytes | None) -> LakeState:
        if intent is None:
            return state
        latest = {name: self.delta.latest_version(name) for name in TABLE_NAMES}
        self._restore(state, {k: v for k, v in latest.items() if v is not None})
        self.store.delete(_INTENT)
        return state

    def _restore(self, base: LakeState, current: dict[str, int]) -> None:
        """Undo commits made after ``base`` (those of an interrupted or failed batch)."""
        for name, version in current.items():
            published = base.versions.get(name)
            if published is None:
                continue  # a table created by the failed batch holds nothing readers see
            if version > published and self.delta.latest_version(name) != published:
                self.delta.restore(name, published)


def key_ranges(keys: Sequence[str], *, most: int = 64) -> list[tuple[str, str]]:
    """At most ``most`` inclusive ranges covering ``keys``: a rewrite skips the files between."""
    ordered = sorted(set(keys))
    step = max(1, -(-len(ordered) // most))
    return [
        (ordered[i], ordered[min(i + step, len(ordered)) - 1]) for i in range(0, len(ordered), step)
    ]


def sql_text(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


class Transaction:
    """The commits of one batch. Reads inside it see the base state."""

    def __init__(self, lake: Lake, base: LakeState) -> None:
        self.lake = lake
        self.base = base
        self.versions = dict(base.versions)
        self.progress = dict(base.progress)
        self.dirty = False

    def read(
        self,
        table: str,
        *,
        columns: Sequence[str] | None = None,
        filter: pc.Expression | None = None,
        prune: str | None = None,
    ) -> pa.Table:
        """Rows of ``table`` at the base state (read through the writer's table object while it
        stands there: no Delta log replay per transaction)."""
        version = self.base.versions.get(table)
        if version is None:
            return self.lake.read(
                table, state=self.base, columns=columns, filter=filter, prune=prune
            )
        return self.lake.delta.read(
            table, version, columns=columns, filter=filter, prune=prune, at_writer=True
        )

    def may_hold(self, table: str, column: str, values: Sequence[str]) -> bool:
        """Whether ``table`` at the base state may hold one of ``values`` in ``column`` (by
        its files' statistics: no data read)."""
        version = self.base.versions.get(table)
        return version is not None and self.lake.delta.may_hold(table, version, column, values)

    def set_progress(self, upload_id: str, progress: dict[str, Any] | None) -> None:
        """Record (or, with None, forget) a running upload's progress in the next state."""
        if progress is None:
            self.progress.pop(upload_id, None)
        else:
            self.progress[upload_id] = progress

    def _begin(self, table: str) -> None:
        self.lake.store.keep_lock()
        if not self.dirty:
            self.lake.store.put(
                _INTENT, json.dumps({"base": self.base.seq, "at": time.time()}).encode()
            )
            self.dirty = True
        if table not in self.versions:
            version = self.lake.delta.create(table)
            if version > 0:  # left over by a writer that died before publishing it
                version = self.lake.delta.restore(table, 0)
            self.versions[table] = version

    def append(self, table: str, rows: pa.Table) -> None:
        if rows.num_rows == 0:
            return
        self._begin(table)
        self.versions[table] = self.lake.delta.append(
            table, rows.cast(SCHEMAS[table]), expect=self.versions[table]
        )
        crash_point("table.committed")

    def append_all(self, tables: dict[str, pa.Table]) -> None:
        """Append rows to several tables, one commit each, the commits made in parallel."""
        tables = {name: rows for name, rows in tables.items() if rows.num_rows}
        for name in tables:
            self._begin(name)
        self.lake.store.keep_lock()

        def committed(table: str, version: int) -> None:
            self.versions[table] = version  # known at once: a failed batch undoes it
            crash_point("table.committed")

        self.lake.delta.append_all(
            {name: rows.cast(SCHEMAS[name]) for name, rows in tables.items()},
            committed=committed,
            expect={name: self.versions[name] for name in tables},
        )

    def upsert(self, table: str, rows: pa.Table, delete_ids: Sequence[str] = ()) -> None:
        """Update rows by id (insert the new ones) and delete ``delete_ids``, in one commit.

        Only the files holding those ids are rewritten (ids are time-ordered, so they are few).
        """
        if rows.num_rows == 0 and not delete_ids:
            return
        if not delete_ids and self.base.versions.get(table) is None:
            self.append(table, rows)
            return
        changed = [*rows.column("id").to_pylist(), *delete_ids]
        drop = pc.field("id").isin(pa.array(changed, pa.string()))
        self.replace(table, "id", key_ranges(changed), drop, rows)

    def replace(
        self,
        table: str,
        key: str,
        ranges: Sequence[tuple[str, str]],
        drop: pc.Expression,
        rows: pa.Table,
    ) -> None:
        """Rewrite the rows whose ``key`` lies in ``ranges``, in one commit.

        Rows there matching ``drop`` give way to ``rows`` (updated, new) or go (deleted); the
        others are carried over. Only the files holding those key ranges are rewritten, so the
        cost follows what the batch touches, not the table.
        """
        self._begin(table)
        version = self.lake.delta.replace_rows(
            table, key, ranges, drop, rows.cast(SCHEMAS[table]), expect=self.versions[table]
        )
        if version is not None:
            self.versions[table] = version
            crash_point("table.committed")
            return
        self._rewrite_through_delta_rs(table, key, ranges, drop, rows)

    def _rewrite_through_delta_rs(
        self,
        table: str,
        key: str,
        ranges: Sequence[tuple[str, str]],
        drop: pc.Expression,
        rows: pa.Table,
    ) -> None:
        """:meth:`replace` as delta-rs does it: the key ranges' rows read whole and written
        again, with ``rows``, in one overwrite of the ranges."""
        self._begin(table)
        predicate = " OR ".join(
            f"({key} >= {sql_text(low)} AND {key} <= {sql_text(high)})" for low, high in ranges
        )
        carried = self.read(table, prune=predicate, filter=~drop)
        inside = None
        for low, high in ranges:  # the files read hold keys outside the ranges too
            column = carried.column(key)
            part = pc.and_(pc.greater_equal(column, low), pc.less_equal(column, high))
            inside = part if inside is None else pc.or_(inside, part)
        if inside is not None:
            carried = carried.filter(inside)
        data = pa.concat_tables([rows.cast(SCHEMAS[table]), carried.cast(SCHEMAS[table])])
        self.versions[table] = self.lake.delta.replace(
            table, data, predicate, expect=self.versions[table]
        )
        crash_point("table.committed")

    def delete(self, table: str, key: str, keys: Sequence[str], drop: pc.Expression) -> None:
        """Delete the rows matching ``drop``; all of them have their ``key`` in ``keys``."""
        if not keys or self.base.versions.get(table) is None:
            return
        self.replace(table, key, key_ranges(keys), drop, SCHEMAS[table].empty_table())

    def rewrite(self, table: str, ranges: Sequence[tuple[str, str]]) -> None:
        """Rewrite the rows whose id lies in ``ranges`` as they are (their files merged)."""
        nothing = pc.field("id").is_null()  # ids are never null: every row is carried over
        self._rewrite_through_delta_rs(table, "id", ranges, nothing, SCHEMAS[table].empty_table())

    def merge_files(self, table: str, files: pa.Table) -> None:
        """Merge ``files`` of ``table`` (rows of ``DeltaStore.file_ranges``) into one, in one
        commit: the same rows. Through delta-rs (a rewrite of their id range) when the lake
        cannot commit it itself."""
        self._begin(table)
        version = self.lake.delta.merge_files(table, files, expect=self.versions[table])
        if version is None:
            low = min(files.column("low").to_pylist())
            high = max(files.column("high").to_pylist())
            self.rewrite(table, [(low, high)])
            return
        self.versions[table] = version
        crash_point("table.committed")

    def compact(self, table: str, *, target_size: int) -> None:
        """Merge ``table``'s small files (same rows, fewer files)."""
        self._begin(table)
        self.versions[table] = self.lake.delta.compact(table, target_size=target_size)

    def ensure_tables(self, names: Sequence[str] = TABLE_NAMES) -> None:
        """Create missing tables so that the published state names every one of them."""
        for name in names:
            if name not in self.versions:
                self._begin(name)
