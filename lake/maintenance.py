"""Table maintenance: compact small files, checkpoint, vacuum what nothing needs any more.

``maintain`` works on one table per lake transaction, so no writer commits meanwhile (writers
wait for the lock, for one table's maintenance at most) and readers move to the compacted files
atomically with the next lake state. For each table it compacts small files, writes a
checkpoint, and vacuums the data files no reader needs:

- files of the latest version, and of the version the previous lake state names, are kept;
- files of every version of a data table (and of ``dataset_members``) a committed dataset
  version recorded are kept (its frozen read needs them), for as long as that dataset version
  exists;
- files removed less than ``retention_hours`` ago are kept, for readers still reading an older
  lake state;
- everything else (files replaced by updates, deletes and compactions) is deleted.

The Delta logs themselves are never trimmed (tables are created with
``delta.enableExpiredLogCleanup = false``), so every recorded version stays loadable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import orjson

from lake.lake import Lake, LakeState
from lake.tables import DATA_TABLES, TABLE_NAMES

#: What a frozen read of a committed dataset version reads at the lake state it recorded (the
#: bookkeeping tables, uploads and miners among them, are always read at the latest state).
FROZEN_TABLES = frozenset((*DATA_TABLES, "dataset_members"))

DEFAULT_RETENTION_HOURS = 24.0
DEFAULT_TARGET_SIZE = 128 * 2**20


@dataclass(frozen=True)
class TableReport:
    table: str
    files_before: int
    files_after: int
    vacuumed: int
    kept_versions: int  # table versions kept readable for committed dataset versions


def maintain(
    lake: Lake,
    *,
    retention_hours: float = DEFAULT_RETENTION_HOURS,
    target_size: int = DEFAULT_TARGET_SIZE,
    progress: Callable[[str], None] | None = None,
) -> list[TableReport]:
    """Compact, checkpoint and vacuum every table of ``lake``; return what was done.

    One table per lake transaction: writers wait for one table's maintenance at most, and the
    versions committed dataset versions pin are read under the same lock (a dataset committed
    meanwhile cannot lose its files).
    """
    reports = []
    for table in TABLE_NAMES:
        with lake.transaction() as txn:  # no writer commits meanwhile
            base = txn.base.versions.get(table)
            if base is None:
                continue
            if progress is not None:
                progress(f"compacting {table}")
            pinned = pinned_versions(lake, txn.base).get(table, set())
            files_before = lake.delta.file_count(table, base)
            txn.compact(table, target_size=target_size)
            # readers of the state being replaced, and a rollback to it, need its files too
            keep = pinned | {base, txn.versions[table]}
            removed = lake.delta.checkpoint_and_vacuum(
                table, keep_versions=sorted(keep), retention_hours=retention_hours
            )
            reports.append(
                TableReport(
                    table,
                    files_before,
                    lake.delta.file_count(table, txn.versions[table]),
                    len(removed),
                    len(pinned),
                )
            )
    return reports


def pinned_versions(lake: Lake, state: LakeState | None = None) -> dict[str, set[int]]:
    """Versions of the tables frozen reads use (:data:`FROZEN_TABLES`) that committed dataset
    versions (of every organization) recorded."""
    rows = lake.read("dataset_versions", state=state, columns=["lake_state"])
    rows = rows.column("lake_state").to_pylist()
    pinned: dict[str, set[int]] = {}
    for raw in rows:
        if raw:
            for table, version in orjson.loads(raw)["versions"].items():
                if table in FROZEN_TABLES:
                    pinned.setdefault(table, set()).add(int(version))
    return pinned
