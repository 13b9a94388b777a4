"""A batch parsed and validated: what can be done with its text before it meets the lake.

:func:`prepare_batch` is a pure function of its arguments (and the clock), run in the job's
parse threads or in helper processes (:mod:`lake.parsepool`). It imports nothing of the storage
layer (Delta, the lake, the planner), so a helper starts with what parsing needs and no more.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from lake.batch import BatchCounts, IdSource
from lake.columnar import FastBatch, plan_batch
from lake.errors import RecordError
from lake.ndjson import Line, RawBatch, parse_line
from lake.records import RecordSpec, finish_logits, normalise

NATIVE_MIN_LINES = 64  # below this, parsing line by line is as quick


@dataclass
class PreparedBatch:
    """A batch parsed and validated outside the writer lock."""

    last_line: int
    records_read: int
    now: datetime
    fast: FastBatch
    specs: list[RecordSpec]
    errors: list[RecordError]


def prepare_batch(
    raw: RawBatch,
    organization_id: str,
    id_source: IdSource,
    *,
    fast_path: bool = True,
    use_threads: bool = False,
    native_min_lines: int = NATIVE_MIN_LINES,
) -> PreparedBatch:
    """Parse and validate a batch; new records of the plain shape become Arrow tables
    (:mod:`lake.columnar`), the others record specs for the planner. A pure function of its
    arguments (and the clock), so a helper process may run it (:mod:`lake.parsepool`).
    ``fast_path`` off: every record takes the per-record path (tests)."""
    now = datetime.now(UTC)
    errors = [line.error for line in raw.errors if line.error is not None]
    native = None
    if fast_path and len(raw.numbers) >= native_min_lines:
        native = plan_batch(
            raw,
            organization_id=organization_id,
            id_source=id_source,
            now=now,
            use_threads=use_threads,
        )
    if native is None:
        batch, rest = FastBatch({}, BatchCounts()), raw.lines()
    else:
        batch, leftover = native
        lines = raw.lines() if leftover else []
        rest = [lines[i] for i in leftover]
    specs = _specs(rest, errors)
    if batch.update is not None and any(
        a.id is not None for spec in specs for a in (*spec.groundtruths, *spec.predictions)
    ):
        # a record changing an attachment by id may change one that an update replaces:
        # all go the per-record way, which applies them in line order
        lines = raw.lines()
        specs += _specs([lines[i] for i in batch.update.positions], errors)
        specs.sort(key=lambda spec: spec.line)
        batch.update = None
    finish_logits(specs)
    return PreparedBatch(raw.last_line, len(raw), now, batch, specs, errors)


def _specs(lines: list[Line], errors: list[RecordError]) -> list[RecordSpec]:
    specs = []
    for line in lines:
        try:
            specs.append(normalise(parse_line(line.data), line.number, defer_logits=True))
        except RecordError as exc:
            exc.line = line.number
            errors.append(exc)
    return specs
