"""Queries over the lake: the filter language, selection, deletes and read-only SQL.

:func:`select` runs the reference's select request (``filters``, ``selectColumns``, ``orderBy``,
``desc``, ``limit``, ``offset``) on datapoints, predictions, groundtruths or bboxes and streams
Arrow batches. Filters are parsed into a typed tree (:mod:`lake.query.filters`) checked against
the tables' schemas, and translated to polars by one visitor (:mod:`lake.query.expressions`).
"""

from lake.query.delete import delete
from lake.query.output import FORMATS, write
from lake.query.select import Rows, Selection, select
from lake.query.sql import check_read_only, sql

__all__ = ["FORMATS", "Rows", "Selection", "check_read_only", "delete", "select", "sql", "write"]
