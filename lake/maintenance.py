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
- everything else (files replaced by updates, deletes and compactions) is deleted, and so
  are the files no version ever held, once older than ``retention_hours`` (left by a writer
  that died between writing a data file and committing it).

The Delta logs themselves are never trimmed (tables are created with
``delta.enableExpiredLogCleanup = false``), so every recorded version stays loadable.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from lake.errors import LakeError
from lake.lake import Lake, LakeState
from lake.tables import DATA_TABLES, SCHEMAS, TABLE_NAMES

log = logging.getLogger(__name__)

#: What a frozen read of a committed dataset version reads at the lake state it recorded (the
#: bookkeeping tables, uploads and miners among them, are always read at the latest state).
FROZEN_TABLES = frozenset((*DATA_TABLES, "dataset_members"))

DEFAULT_RETENTION_HOURS = 24.0
DEFAULT_TARGET_SIZE = 128 * 2**20

#: Small-file merging (:func:`merge_small_files`): a merged file holds up to this many rows,
#: about what one ingestion batch writes to a file, so that an update rewrites as much
#: whichever way the rows arrived; files of fewer than half as many rows are small.
MERGE_ROWS = 50_000
#: Small files a table may hold before they are merged.
MERGE_AT = 32
#: ... while its writer has more work waiting: a merge then waits for a lull, up to this many
#: (a merge costs about as much as the commits that made its files, and commit time grows
#: with the file count only ~0.15 ms per file).
MERGE_BUSY_AT = 128
#: A table's files are looked at after this many commits of this process to it.
LOOK_EVERY = 8
#: ... while its writer has more work waiting.
BUSY_LOOK_EVERY = 64


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


def tidy(lake: Lake, *, busy: bool = False) -> None:
    """:func:`merge_small_files` after a writer's work, never failing it: a merge that
    cannot be made now (the storage failing, the lock busy) is made at a later look, and
    whatever it raised is logged, not passed to a caller whose own work is done.

    ``busy``: the writer has more work waiting; tables are merged only once they hold
    :data:`MERGE_BUSY_AT` small files, so a burst of small commits does not pay for merges
    the next lull can make.
    """
    try:
        if busy:
            merge_small_files(lake, look_every=BUSY_LOOK_EVERY, at_least=MERGE_BUSY_AT)
        else:
            merge_small_files(lake, look_every=LOOK_EVERY, at_least=MERGE_AT)
    except LakeError:
        log.warning("small files of %s not merged this time", lake.uri, exc_info=True)
    except Exception:  # a bug must not turn a finished upload into a failed call
        log.exception("merging the small files of %s failed", lake.uri)


def merge_small_files(
    lake: Lake,
    *,
    tables: Iterable[str] | None = None,
    look_every: int = LOOK_EVERY,
    at_least: int = MERGE_AT,
    rows: int = MERGE_ROWS,
    budget: int = 2 * MERGE_ROWS,
) -> dict[str, int]:
    """Merge the small files of tables that hold ``at_least`` of them; return how many files
    of each table were merged.

    Every commit adds a file, and readers (and delta-rs commits, which bring every file of the
    table up to date) pay for each. Runs of small files adjacent in id order (ids are
    time-ordered, so these are files written one after the other) are merged into one file of
    up to ``rows`` rows each (:meth:`Transaction.merge_files`); large files stay as they are.
    The rows are the same before and after, readers move to the merged files with the next
    lake state, and the replaced files stay on disk for readers of older states until
    maintenance vacuums them.

    Only tables this process committed to ``look_every`` times since it last looked at them
    are looked at (a look lists the table's files); the writer lock is taken only when there
    is something to merge, and a call rewrites about ``budget`` rows at most (a writer waits
    for one short merge at a time; a table not reached is looked at on the next call).
    """
    merged: dict[str, int] = {}
    due = [
        table
        for table in (tables if tables is not None else TABLE_NAMES)
        if "id" in SCHEMAS[table].names
        and lake.delta.commits_since_look.get(table, 0) >= look_every
    ]
    existing = lake.state().versions if due else {}
    for table in due:
        if table not in existing or budget <= 0:
            continue
        if _mergeable(lake.delta.file_ranges(table), rows // 2).num_rows < at_least:
            continue
        with lake.transaction() as txn:  # the files again, now that no writer commits
            if table not in txn.base.versions:
                continue
            files = _mergeable(lake.delta.file_ranges(table), rows // 2)
            if files.num_rows < at_least:
                continue
            count = 0
            lows = files.column("low")
            for low, high, n, held in _runs(files, rows=rows, budget=budget):
                # the run: the files (in id order) starting within its range
                inside = pc.and_(pc.greater_equal(lows, low), pc.less_equal(lows, high))
                txn.merge_files(table, files.filter(inside))
                count += n
                budget -= held
            merged[table] = count
        lake.delta.commits_since_look[table] = 0  # (the merge's own commits do not count)
        log.info("table %s: %d small files merged", table, count)
    return merged


def _mergeable(files: pa.Table, small: int) -> pa.Table:
    """The files of fewer than ``small`` rows a merge may rewrite, in id order: those whose id
    range meets no larger file's (a rewrite by id range rewrites every file the range meets:
    a small file spanning a wide range, as an update of scattered rows leaves, stays as it
    is). None at all when a file has no id statistics (its range is unknown)."""
    lows, highs = files.column("low").to_pylist(), files.column("high").to_pylist()
    if None in lows or None in highs:
        return files.slice(0, 0)
    counts = files.column("rows").to_pylist()
    large = sorted((lo, hi) for lo, hi, n in zip(lows, highs, counts, strict=True) if n >= small)
    starts = [lo for lo, _ in large]
    reach: list[str] = []  # reach[i]: the highest id of the large files up to the i-th
    for _, hi in large:
        reach.append(max(reach[-1], hi) if reach else hi)

    def meets_large(lo: str, hi: str) -> bool:
        # the large files starting at or before ``hi``; one of them meets [lo, hi] if it
        # reaches ``lo``
        last = bisect.bisect_right(starts, hi) - 1
        return last >= 0 and reach[last] >= lo

    keep = [
        n < small and not meets_large(lo, hi) for lo, hi, n in zip(lows, highs, counts, strict=True)
    ]
    return files.filter(pa.array(keep, pa.bool_()))


def _runs(files: pa.Table, *, rows: int, budget: int) -> list[tuple[str, str, int, int]]:
    """Runs of files (in id order) to merge: (lowest id, highest id, files, rows), each of up
    to ``rows`` rows unless files overlap, and of two files at least; until ``budget`` rows."""
    runs: list[tuple[str, str, int, int]] = []
    total = held = count = 0  # rows merged so far; rows and files of the current run
    low = high = ""
    for file_low, file_high, n in zip(
        files.column("low").to_pylist(),
        files.column("high").to_pylist(),
        files.column("rows").to_pylist(),
        strict=True,
    ):
        if count and file_low > high and held + n > rows:
            if count >= 2:
                runs.append((low, high, count, held))
                total += held
                if total >= budget:
                    return runs
            count = held = 0
        if not count:
            low, high = file_low, file_high
        count += 1
        held += n
        high = max(high, file_high)
    if count >= 2:
        runs.append((low, high, count, held))
    return runs
