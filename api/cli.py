"""The ``shoal`` command line.

Embedded-lake commands (they open the lake directly, no server needed)::

    shoal ingest [--lake URI] FILE...   apply NDJSON files, print a JSON summary per file
    shoal stats  [--lake URI]           row counts per table, as JSON
    shoal select [--lake URI] [--table T] [--filters JSON] [--columns C...] [--order-by COL]
                 [--desc] [--limit N] [--offset N] [--format json|ndjson|csv|parquet]
    shoal sql    [--lake URI] "SELECT ..." [--format ...]
    shoal delete [--lake URI] [--table T] --filters JSON [...]   print the deleted rows

``--lake`` defaults to ``$SHOAL_LAKE``, then ``./shoal-data``. S3 lakes (``s3://bucket/prefix``)
take their endpoint and credentials from ``SHOAL_S3_ENDPOINT`` / ``AWS_*``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from lake import Lake, LakeError, Uploads


def _lake(args: argparse.Namespace) -> Lake:
    return Lake(args.lake)


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, default=str) + "\n")
    sys.stdout.flush()


def cmd_ingest(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    lake = _lake(args)
    uploads = Uploads(lake, batch_size=args.batch_size)
    failed = False
    for path in args.files:
        options = {"timeout_seconds": args.timeout} if args.timeout else {}
        upload = uploads.create(path, organization_id=args.org, options=options)
        total = os.path.getsize(path)
        with tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            desc=os.path.basename(path),
            disable=args.quiet or not sys.stderr.isatty(),
            file=sys.stderr,
        ) as bar:

            def progress(done: int, bar: tqdm[Any] = bar) -> None:
                bar.update(done - bar.n)

            upload = uploads.run(upload.id, progress=progress)
        summary = upload.summary(max_errors=args.max_errors)
        summary["file"] = path
        _print_json(summary)
        failed |= upload.status != "SUCCEEDED"
    return 1 if failed else 0


def cmd_stats(args: argparse.Namespace) -> int:
    _print_json(_lake(args).stats())
    return 0


def _filters(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise LakeError(f"--filters is not valid JSON: {exc}") from None


def cmd_select(args: argparse.Namespace) -> int:
    from lake.query import select, write

    rows = select(
        _lake(args),
        args.table,
        filters=_filters(args.filters),
        columns=args.columns,
        order_by=args.order_by,
        desc=args.desc,
        limit=args.limit,
        offset=args.offset,
        organization_id=args.org,
    )
    write(rows, sys.stdout.buffer, args.format)
    sys.stdout.flush()
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    from lake.query import sql, write

    write(
        sql(_lake(args), args.statement, organization_id=args.org), sys.stdout.buffer, args.format
    )
    sys.stdout.flush()
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from lake.query import delete

    deleted = delete(
        _lake(args),
        args.table,
        filters=_filters(args.filters),
        order_by=args.order_by,
        desc=args.desc,
        limit=args.limit,
        offset=args.offset,
        organization_id=args.org,
    )
    _print_json({"deleted": deleted.num_rows, "ids": deleted.column("id").to_pylist()})
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shoal", description="Shoal, the ML data lake.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def lake_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--lake",
            default=None,
            help="lake root: a folder or s3://bucket/prefix (default: $SHOAL_LAKE or ./shoal-data)",
        )

    ingest = commands.add_parser("ingest", help="apply NDJSON files to an embedded lake")
    lake_option(ingest)
    ingest.add_argument(
        "files", nargs="+", metavar="FILE", help="NDJSON files (plain, gzip or bz2)"
    )
    ingest.add_argument("--org", default="default", help="organization that owns the rows")
    ingest.add_argument(
        "--batch-size", type=int, default=50_000, help="records per commit (default 50000)"
    )
    ingest.add_argument(
        "--timeout", type=float, default=None, help="seconds before the upload ends as TIMED_OUT"
    )
    ingest.add_argument(
        "--max-errors", type=int, default=10, help="record errors shown in the summary (default 10)"
    )
    ingest.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    ingest.set_defaults(func=cmd_ingest)

    stats = commands.add_parser("stats", help="row counts per table, as JSON")
    lake_option(stats)
    stats.set_defaults(func=cmd_stats)

    from lake.query.output import FORMATS

    def query_options(sub: argparse.ArgumentParser, *, tables: Sequence[str]) -> None:
        lake_option(sub)
        sub.add_argument("--table", default="datapoints", choices=tables, help="primary table")
        sub.add_argument("--order-by", default=None, help="column, JSON path or RANDOM()")
        sub.add_argument("--desc", action="store_true", help="descending order")
        sub.add_argument("--limit", type=int, default=None, help="at most N primary rows")
        sub.add_argument("--offset", type=int, default=0, help="skip N primary rows")
        sub.add_argument("--org", default=None, help="only this organization's rows")

    select = commands.add_parser("select", help="select rows with the JSON filter language")
    query_options(select, tables=("datapoints", "predictions", "groundtruths", "bboxes"))
    select.add_argument(
        "--filters", default="[]", help='JSON list of {"left", "op", "right"} (default: [])'
    )
    select.add_argument(
        "--columns", nargs="+", default=["*"], help="columns: *, names, JSON paths, t.* (default *)"
    )
    select.add_argument("--format", choices=FORMATS, default="ndjson", help="output format")
    select.set_defaults(func=cmd_select)

    sql = commands.add_parser("sql", help="run one read-only SQL statement")
    lake_option(sql)
    sql.add_argument("statement", help="a single SELECT statement")
    sql.add_argument("--org", default=None, help="only this organization's rows")
    sql.add_argument("--format", choices=FORMATS, default="ndjson", help="output format")
    sql.set_defaults(func=cmd_sql)

    delete = commands.add_parser("delete", help="delete rows by filter (with cascades)")
    query_options(delete, tables=("datapoints", "predictions", "groundtruths"))
    delete.add_argument(
        "--filters", required=True, help='JSON list of filters; "[]" deletes every row'
    )
    delete.set_defaults(func=cmd_delete)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for path in getattr(args, "files", []):
        if not os.path.isfile(path):
            print(f"shoal: error: no such file: {path}", file=sys.stderr)
            return 2
    try:
        return int(args.func(args))
    except LakeError as exc:
        print(f"shoal: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
