"""The ``shoal`` command line.

Embedded-lake commands (they open the lake directly, no server needed)::

    shoal ingest [--lake URI] FILE...   apply NDJSON files, print a JSON summary per file
    shoal stats  [--lake URI]           row counts per table, as JSON
    shoal select [--lake URI] [--table T] [--filters JSON] [--columns C...] [--order-by COL]
                 [--desc] [--limit N] [--offset N] [--format json|ndjson|csv|parquet]
    shoal sql    [--lake URI] "SELECT ..." [--format ...]
    shoal delete [--lake URI] [--table T] --filters JSON [...]   print the deleted rows
    shoal datasets list|create|add|remove|commit|history|checkout|diff|export|delete ...
    shoal miners create|list|show|run|status|results|reset|delete ...
    shoal maintain [--lake URI] [--retention-hours H]   compact, checkpoint, vacuum, prune uploads
    shoal serve [--lake URI] [--host H] [--port P]      the HTTP server (also python -m api)

Against a server (``--endpoint URL --api-key KEY``, or ``SHOAL_ENDPOINT`` / ``SHOAL_API_KEY``)::

    shoal upload FILE... [--wait]      send NDJSON files; print the upload ids (or the results)
    shoal status UPLOAD_ID             an upload's status and counts
    shoal select|sql|datasets|miners ... --endpoint URL   the same commands, through the server
    shoal keys create --org ORG [--name N] | list [--org ORG] | revoke KEY_ID

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
from lake.memory import calm_garbage_collector, retain_freed_memory


def _lake(args: argparse.Namespace) -> Lake:
    return Lake(args.lake)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, default=str) + "\n")
    sys.stdout.flush()


def cmd_ingest(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    retain_freed_memory()
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
        print_json(summary)
        failed |= upload.status != "SUCCEEDED"
    return 1 if failed else 0


def cmd_stats(args: argparse.Namespace) -> int:
    print_json(_lake(args).stats())
    return 0


def json_option(text: str, option: str = "--filters") -> Any:
    """The value of an option given as JSON text."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise LakeError(f"{option} is not valid JSON: {exc}") from None


def cmd_select(args: argparse.Namespace) -> int:
    if args.endpoint:
        from api import remote

        return remote.select(args, json_option(args.filters))
    from lake.query import select, write

    rows = select(
        _lake(args),
        args.table,
        filters=json_option(args.filters),
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
    if args.endpoint:
        from api import remote

        return remote.sql(args)
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
        filters=json_option(args.filters),
        order_by=args.order_by,
        desc=args.desc,
        limit=args.limit,
        offset=args.offset,
        organization_id=args.org,
    )
    print_json({"deleted": deleted.num_rows, "ids": deleted.column("id").to_pylist()})
    return 0


def _datasets(args: argparse.Namespace) -> Any:
    from lake.datasets import Datasets

    return Datasets(_lake(args), organization_id=args.org)


def find_dataset_id(datasets: Any, name_or_id: str) -> str:
    from lake import ids

    if ids.canonical(name_or_id) is not None:
        return str(ids.canonical(name_or_id))
    return str(datasets.get_by_name(name_or_id).id)


def _version_json(version: Any) -> dict[str, Any]:
    row = version.to_row()
    row.pop("lake_state")
    row["frozen_state"] = version.lake_state.seq if version.lake_state else None
    return row


def _datapoint_ids(args: argparse.Namespace) -> Any:
    from lake.query import select

    values: list[str] = list(args.ids)
    if args.ids_file:
        with open(args.ids_file) as lines:
            values += [line.strip() for line in lines if line.strip()]
    if args.filters is not None:
        rows = select(
            _lake(args),
            "datapoints",
            filters=json_option(args.filters),
            columns=["id"],
            organization_id=args.org,
        )
        values += rows.to_arrow().column("id").to_pylist()
    if not values:
        raise LakeError("give datapoint ids, --ids-file or --filters")
    return values


def cmd_datasets(args: argparse.Namespace) -> int:
    if args.endpoint:
        from api import remote

        filters = getattr(args, "filters", None)
        return remote.datasets(args, None if filters is None else json_option(filters))
    datasets = _datasets(args)
    action = args.action
    if action == "list":
        for dataset in datasets.list_datasets():
            print_json(dataset.to_row())
    elif action == "create":
        print_json(datasets.create(args.name).to_row())
    elif action in ("add", "remove"):
        dataset_id = find_dataset_id(datasets, args.dataset)
        method = datasets.add if action == "add" else datasets.remove
        print_json(
            {action + ("ed" if action == "add" else "d"): method(dataset_id, _datapoint_ids(args))}
        )
    elif action == "commit":
        print_json(
            _version_json(datasets.commit(find_dataset_id(datasets, args.dataset), args.message))
        )
    elif action == "history":
        for version in datasets.versions(find_dataset_id(datasets, args.dataset)):
            print_json(_version_json(version))
    elif action == "checkout":
        version = datasets.checkout(find_dataset_id(datasets, args.dataset), args.version)
        print_json({"checked_out": version.id})
    elif action == "diff":
        diff = datasets.diff(args.version1, args.version2)
        print_json(
            {
                "version1": diff.version1,
                "version2": diff.version2,
                "added": diff.added.to_pylist(),
                "removed": diff.removed.to_pylist(),
            }
        )
    elif action == "export":
        cmd_export(args, datasets)
    elif action == "delete":
        print_json({"deleted": datasets.delete(find_dataset_id(datasets, args.dataset)).id})
    return 0


def cmd_export(args: argparse.Namespace, datasets: Any) -> None:
    from tqdm import tqdm

    from lake import ids
    from lake.export import export

    version = args.version
    if ids.canonical(version) is None:  # a dataset name: its working version
        version = datasets.working(find_dataset_id(datasets, version)).id
    with tqdm(unit=" datapoints", disable=not sys.stderr.isatty(), file=sys.stderr) as bar:
        count = export(
            datasets,
            version,
            args.path,
            format=args.format,
            frozen=args.frozen,
            progress=lambda done: bar.update(done - bar.n),
        )
    print_json({"version": version, "datapoints": count, "path": args.path, "format": args.format})


def cmd_maintain(args: argparse.Namespace) -> int:
    from lake.maintenance import maintain
    from lake.uploads import prune_landing

    lake = _lake(args)
    for report in maintain(lake, retention_hours=args.retention_hours):
        print_json(report.__dict__)
    landing = prune_landing(lake, retention_hours=args.retention_hours)
    print_json({"landing": landing.__dict__})
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from api.settings import Settings
    from lake.keys import ApiKeys

    overrides = {
        k: v
        for k, v in (("lake", args.lake), ("host", args.host), ("port", args.port))
        if v is not None
    }
    settings = Settings(**overrides)
    retain_freed_memory()
    lake = Lake(settings.lake)
    keys = ApiKeys(lake)
    if not keys.list_keys():
        _, key = keys.create("default", name="first key")
        print(
            "shoal: this lake had no API key; created one for organization 'default' "
            f"(shown only now):\n\n    {key}\n",
            file=sys.stderr,
            flush=True,
        )
    app = create_app(settings, lake=lake)
    calm_garbage_collector()  # after the imports and the app are made: they stay as they are
    uvicorn.run(app, host=settings.host, port=settings.port)
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from lake.keys import ApiKeys

    keys = ApiKeys(_lake(args))
    if args.action == "create":
        record, key = keys.create(args.org, name=args.name)
        print_json({**record.to_dict(), "key": key})
    elif args.action == "list":
        for record in keys.list_keys(organization_id=args.org):
            print_json(record.to_dict())
    else:
        print_json(keys.revoke(args.key_id).to_dict())
    return 0


def remote_options(sub: argparse.ArgumentParser, *, required: bool = False) -> None:
    sub.add_argument(
        "--endpoint",
        default=os.environ.get("SHOAL_ENDPOINT") if required else None,
        help="a Shoal server URL: run against it instead of an embedded lake"
        + (" (default $SHOAL_ENDPOINT)" if required else ""),
    )
    sub.add_argument(
        "--api-key", default=None, help="the server's API key (default $SHOAL_API_KEY)"
    )


def cmd_upload(args: argparse.Namespace) -> int:
    from api import remote

    if not args.endpoint:
        raise LakeError("no server: give --endpoint or set SHOAL_ENDPOINT (or use shoal ingest)")
    return remote.upload(args)


def cmd_status(args: argparse.Namespace) -> int:
    from api import remote

    if not args.endpoint:
        raise LakeError("no server: give --endpoint or set SHOAL_ENDPOINT")
    return remote.status(args)


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
    remote_options(select)
    select.set_defaults(func=cmd_select)

    sql = commands.add_parser("sql", help="run one read-only SQL statement")
    lake_option(sql)
    sql.add_argument("statement", help="a single SELECT statement")
    sql.add_argument("--org", default=None, help="only this organization's rows")
    sql.add_argument("--format", choices=FORMATS, default="ndjson", help="output format")
    remote_options(sql)
    sql.set_defaults(func=cmd_sql)

    delete = commands.add_parser("delete", help="delete rows by filter (with cascades)")
    query_options(delete, tables=("datapoints", "predictions", "groundtruths"))
    delete.add_argument(
        "--filters", required=True, help='JSON list of filters; "[]" deletes every row'
    )
    delete.set_defaults(func=cmd_delete)

    _dataset_commands(commands, lake_option)
    from api import cli_miners  # it uses this module's helpers

    cli_miners.add_commands(commands, lake_option, remote_options)

    maintain = commands.add_parser(
        "maintain",
        help="compact, checkpoint and vacuum the tables; delete upload files no upload reads",
    )
    lake_option(maintain)
    maintain.add_argument(
        "--retention-hours",
        type=float,
        default=24.0,
        help="keep files removed less than this long ago, for running readers, and upload files"
        " written less than this long ago (default 24)",
    )
    maintain.set_defaults(func=cmd_maintain)

    upload = commands.add_parser("upload", help="send NDJSON files to a server")
    upload.add_argument("files", nargs="+", metavar="FILE", help="NDJSON files (plain, gzip, bz2)")
    upload.add_argument("--wait", action="store_true", help="wait for each upload to end")
    upload.add_argument("--timeout", type=float, default=None, help="seconds to wait at most")
    upload.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    remote_options(upload, required=True)
    upload.set_defaults(func=cmd_upload)

    status = commands.add_parser("status", help="an upload's status on a server")
    status.add_argument("upload_id")
    remote_options(status, required=True)
    status.set_defaults(func=cmd_status)

    serve = commands.add_parser("serve", help="run the HTTP server on a lake")
    lake_option(serve)
    serve.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8000)")
    serve.set_defaults(func=cmd_serve)

    keys = commands.add_parser("keys", help="the server's API keys")
    key_actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = key_actions.add_parser("create", help="a new key (printed once)")
    create.add_argument("--org", required=True, help="the organization the key acts for")
    create.add_argument("--name", default="", help="a label for the key")
    listing = key_actions.add_parser("list", help="keys (never the keys themselves)")
    listing.add_argument("--org", default=None)
    revoke = key_actions.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    for sub in (create, listing, revoke):
        lake_option(sub)
        sub.set_defaults(func=cmd_keys)
    return parser


def _dataset_commands(commands: Any, lake_option: Any) -> None:
    datasets = commands.add_parser("datasets", help="versioned datasets")
    actions = datasets.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, text: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = actions.add_parser(name, help=text)
        lake_option(sub)
        sub.add_argument("--org", default=None, help="the organization (default: all / default)")
        remote_options(sub)
        sub.set_defaults(func=cmd_datasets)
        return sub

    action("list", "every dataset, one JSON object per line")
    action("create", "create a dataset").add_argument("name")
    for name, text in (
        ("add", "add datapoints to the working version"),
        ("remove", "remove datapoints from the working version"),
    ):
        sub = action(name, text)
        sub.add_argument("dataset", help="dataset id or name")
        sub.add_argument("ids", nargs="*", help="datapoint ids")
        sub.add_argument("--ids-file", help="a file with one datapoint id per line")
        sub.add_argument("--filters", default=None, help="the datapoints a select would return")
    commit = action("commit", "commit the working version")
    commit.add_argument("dataset", help="dataset id or name")
    commit.add_argument("-m", "--message", default=None)
    action("history", "versions, newest first").add_argument("dataset", help="dataset id or name")
    checkout = action("checkout", "start a new working version from a committed one")
    checkout.add_argument("dataset", help="dataset id or name")
    checkout.add_argument("version", help="committed version id")
    diff = action("diff", "datapoints added and removed between two versions")
    diff.add_argument("version1")
    diff.add_argument("version2")
    export = action("export", "export a version as Parquet tables or ingestion NDJSON")
    export.add_argument("version", help="version id (or a dataset id/name: its working version)")
    export.add_argument("path", help="a folder (parquet) or a file (ndjson)")
    export.add_argument("--format", choices=("parquet", "ndjson"), default="parquet")
    export.add_argument("--frozen", action="store_true", help="rows as they were at the commit")
    action("delete", "delete a dataset and its versions").add_argument("dataset")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for path in getattr(args, "files", []):
        if not os.path.isfile(path):
            print(f"shoal: error: no such file: {path}", file=sys.stderr)
            return 2
    from sdk import ShoalError

    try:
        return int(args.func(args))
    except (LakeError, ShoalError) as exc:
        print(f"shoal: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
