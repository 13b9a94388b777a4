"""Read-only SQL over the lake's tables, scoped to one organization.

The statement runs in an in-memory DuckDB database that holds nothing but the lake's data tables
at one lake state, each registered as an Arrow dataset already narrowed to the caller's
organization (so no statement can see another organization's rows, whatever it names). The
database is locked down before the statement runs: no file system, no extensions, no
configuration changes. On top of that, exactly one ``SELECT`` (or ``WITH ... SELECT``) statement
is accepted; DDL, DML, ``COPY``, ``ATTACH``, ``PRAGMA`` and several statements are refused with
a :class:`QueryError` before anything runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from lake.errors import QueryError, StorageError
from lake.lake import Lake, LakeState
from lake.query.select import Rows
from lake.tables import DATA_TABLES, SCHEMAS

#: The tables a statement can read (the lake's bookkeeping tables are not among them).
SQL_TABLES = DATA_TABLES

_BATCH_ROWS = 65_536
_LOCKDOWN = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "threads": 2,
}


def sql(
    lake: Lake,
    statement: str,
    *,
    organization_id: str | None = None,
    state: LakeState | None = None,
    memory_limit: str = "1GB",
) -> Rows:
    """Run one read-only ``statement``; rows stream as Arrow batches."""
    check_read_only(statement)
    state = state or lake.state()
    con = duckdb.connect(config={**_LOCKDOWN, "memory_limit": memory_limit})
    try:
        for table in SQL_TABLES:
            con.register(table, _dataset(lake, table, state, organization_id))
        con.execute("SET lock_configuration = true")
        reader = con.sql(statement).to_arrow_reader(_BATCH_ROWS)
    except duckdb.Error as exc:
        con.close()
        raise QueryError(f"SQL error: {_first_line(exc)}") from None
    return Rows(reader.schema, _stream(con, reader), frozenset())


def check_read_only(statement: object) -> None:
    """Refuse anything but exactly one SELECT statement, with a message saying what was found."""
    if not isinstance(statement, str) or not statement.strip():
        raise QueryError("the SQL statement is empty")
    try:
        statements = duckdb.extract_statements(statement)
    except duckdb.Error as exc:
        raise QueryError(f"SQL syntax error: {_first_line(exc)}") from None
    if len(statements) != 1:
        raise QueryError(f"exactly one SQL statement is allowed, got {len(statements)}")
    kind = statements[0].type.name
    word = _first_word(statement)
    if word in ("PRAGMA", "CALL"):
        kind = word  # forms the parser files as SELECT
    if kind != "SELECT":
        raise QueryError(f"only SELECT statements are allowed, got {kind}")


def _dataset(lake: Lake, table: str, state: LakeState, organization_id: str | None) -> object:
    version = state.versions.get(table)
    if version is None:
        return SCHEMAS[table].empty_table()
    dataset = lake.delta.dataset(table, version)
    if organization_id is not None:
        dataset = dataset.filter(pc.field("organization_id") == organization_id)
    return dataset


def _stream(
    con: duckdb.DuckDBPyConnection, reader: pa.RecordBatchReader
) -> Iterator[pa.RecordBatch]:
    try:
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except (OSError, duckdb.IOException, duckdb.HTTPException) as exc:
                message = f"reading the lake's tables failed: {_first_line(exc)}"
                raise StorageError(message) from None
            except (duckdb.Error, pa.ArrowException) as exc:
                raise QueryError(f"SQL error: {_first_line(exc)}") from None
            yield batch
    finally:
        con.close()


def _first_word(statement: str) -> str:
    words = statement.lstrip("( \t\r\n").split(None, 1)
    return words[0].upper() if words else ""


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
