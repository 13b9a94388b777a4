"""The client side of the ``shoal`` command line: the same commands against a server (SDK).

Used when ``--endpoint`` is given (or ``SHOAL_ENDPOINT`` is set for ``upload`` / ``status``);
the key comes from ``--api-key`` or ``SHOAL_API_KEY``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import sdk
from api.cli import print_json


def client(args: argparse.Namespace) -> sdk.Client:
    return sdk.Client(args.endpoint, args.api_key)


def upload(args: argparse.Namespace) -> int:
    with client(args) as c:
        return _upload(args, c)


def _upload(args: argparse.Namespace, c: sdk.Client) -> int:
    failed = False
    for path in args.files:
        handle = sdk.upload_to_lake(path, client=c, progress=not args.quiet and sys.stderr.isatty())
        if not args.wait:
            print_json({"id": handle.id, "status": "RUNNING", "file": path})
            continue
        try:
            execution = handle.wait(args.timeout)
        except sdk.UploadFailed as exc:
            execution = handle.execution or {"id": handle.id, "status": exc.status}
            failed = True
        print_json({**execution, "file": path})
    return 1 if failed else 0


def status(args: argparse.Namespace) -> int:
    with client(args) as c:
        upload = sdk.Upload(args.upload_id, c)
        upload.status()
    print_json(upload.execution)
    return 0


def select(args: argparse.Namespace, filters: Any) -> int:
    selector = {
        "datapoints": sdk.select_datapoints,
        "predictions": sdk.select_predictions,
        "groundtruths": sdk.select_groundtruths,
        "bboxes": sdk.select_bboxes,
    }[args.table]
    with client(args) as c:
        frame = selector(
            filters,
            columns=args.columns,
            order_by=args.order_by,
            desc=args.desc,
            limit=args.limit,
            offset=args.offset,
            client=c,
        )
    _write(frame, args.format)
    return 0


def sql(args: argparse.Namespace) -> int:
    with client(args) as c:
        _write(sdk.sql(args.statement, client=c), args.format)
    return 0


def _write(frame: Any, fmt: str) -> None:
    out = sys.stdout.buffer
    if fmt == "ndjson":
        frame.write_ndjson(out)
    elif fmt == "json":
        frame.write_json(out)
    elif fmt == "csv":
        frame.write_csv(out)
    else:
        frame.write_parquet(out)
    out.flush()


def _ids(args: argparse.Namespace, c: sdk.Client, filters: Any) -> list[str]:
    values: list[str] = list(args.ids)
    if args.ids_file:
        with open(args.ids_file) as lines:
            values += [line.strip() for line in lines if line.strip()]
    if filters is not None:
        values += sdk.select_datapoints(filters, columns=["id"], client=c)["id"].to_list()
    if not values:
        raise sdk.ConfigError("give datapoint ids, --ids-file or --filters")
    return values


def datasets(args: argparse.Namespace, filters: Any) -> int:
    with client(args) as c:
        return _datasets(args, c, filters)


def _datasets(args: argparse.Namespace, c: sdk.Client, filters: Any) -> int:
    action = args.action

    def ids() -> list[str]:
        return _ids(args, c, filters)

    def find(name_or_id: str) -> sdk.Dataset:
        try:
            return sdk.Dataset.get(name_or_id, client=c)
        except (sdk.NotFound, sdk.BadRequest):
            return sdk.Dataset.get_by_name(name_or_id, client=c)

    if action == "list":
        for dataset in sdk.list_datasets(client=c):
            print_json(dataset.row)
    elif action == "create":
        print_json(sdk.Dataset.create(args.name, client=c).row)
    elif action == "add":
        print_json({"added": find(args.dataset).add(ids())})
    elif action == "remove":
        print_json({"removed": find(args.dataset).remove(ids())})
    elif action == "commit":
        print_json({"committed": find(args.dataset).commit(args.message)})
    elif action == "history":
        for version in find(args.dataset).history():
            print_json(version)
    elif action == "checkout":
        print_json({"checked_out": find(args.dataset).checkout(args.version)})
    elif action == "diff":
        print_json(c.request("GET", f"/api/dataset/diff/{args.version1}/{args.version2}"))
    elif action == "delete":
        dataset = find(args.dataset)
        dataset.delete()
        print_json({"deleted": dataset.id})
    else:
        raise sdk.ConfigError(f"'datasets {action}' runs on an embedded lake only (use --lake)")
    return 0


def miners(args: argparse.Namespace, config: dict[str, Any] | None) -> int:
    with client(args) as c:
        return _miners(args, c, config)


def _miners(args: argparse.Namespace, c: sdk.Client, config: dict[str, Any] | None) -> int:
    action = args.action
    if action == "create":
        assert config is not None
        print_json({"miner_id": sdk.Miner.create(config, client=c).id})
        return 0
    if action == "list":
        for found in sdk.list_miners(client=c):
            print_json(found.config)
        return 0
    miner = sdk.Miner.get(args.miner, client=c)
    if action == "show":
        print_json(miner.config)
    elif action == "status":
        print_json(_without_result(miner.task()))
    elif action == "results":
        if args.add_to_dataset:
            added = miner.add_results_to(_find_dataset(args.add_to_dataset, c))
            print_json({"dataset": args.add_to_dataset, "added": added})
        else:
            sys.stdout.write("".join(f"{i}\n" for i in miner.results()))
    elif action == "reset":
        miner.reset()
        print_json(miner.task())
    elif action == "delete":
        miner.delete()
        print_json({"deleted": miner.id})
    else:  # run
        miner.run()
        if not args.wait:
            print_json(miner.task())
            return 0
        try:
            miner.wait(args.timeout, progress=sys.stderr.isatty())
        except sdk.MinerFailed:
            print_json(_without_result(miner.task()))
            return 1
        print_json(_without_result(miner.task()))
    return 0


def _without_result(task: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in task.items() if k != "result"}


def _find_dataset(name_or_id: str, c: sdk.Client) -> sdk.Dataset | str:
    try:
        return sdk.Dataset.get(name_or_id, client=c)
    except (sdk.NotFound, sdk.BadRequest):
        return name_or_id  # a name: found, or created, by add_results_to
