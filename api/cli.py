"""The ``shoal`` command line.

Embedded-lake commands (they open the lake directly, no server needed)::

    shoal ingest [--lake URI] FILE...   apply NDJSON files, print a JSON summary per file
    shoal stats  [--lake URI]           row counts per table, as JSON

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
