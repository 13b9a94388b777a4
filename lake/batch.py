"""What a batch carries from its parse to its planning: where its new ids come from, the counts
it adds, and its plain updates planned in columns.

Kept apart from :mod:`lake.ingest` (the planner, which reads the lake) so that parsing a batch
(:mod:`lake.prepare`, also run in helper processes) needs nothing of the storage layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from lake import ids


@dataclass
class BatchCounts:
    datapoints_created: int = 0
    datapoints_updated: int = 0
    predictions: int = 0
    groundtruths: int = 0

    def add(self, other: BatchCounts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class IdSource:
    """Where new row ids come from: derived from (upload, line, slot), or random."""

    created_ms: int
    salt: int | None = None

    def make(self, line: int, slot: int) -> str:
        if self.salt is None:
            return ids.new_id()
        return ids.derived_id(self.created_ms, self.salt, line, slot)


@dataclass
class FastUpdate:
    """Plain updates of a batch planned in columns (:mod:`lake.columnar`): the datapoint and
    line of each, and the new rows they bring (new ids), checked and applied at commit time by
    :meth:`lake.ingest.BatchPlanner.apply_updates`."""

    datapoints: pa.Array
    lines: np.ndarray
    tables: dict[str, pa.Table]
    positions: list[int]  # where the updates are among the batch's lines
    #: in a group commit, the upload of each update (its ``lines`` are that upload's)
    owners: list[str] | None = None
