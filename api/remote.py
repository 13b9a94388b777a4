"""The client side of the ``shoal`` command line: the same commands against a server (SDK).

Used when ``--endpoint`` is given (or ``SHOAL_ENDPOINT`` is set for ``upload`` / ``status``);
the key comes from ``--api-key`` or ``SHOAL_API_KEY``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import sdk


def client(args: argparse.Namespace) -> sdk.Client:
    return sdk.Client(args.endpoint, args.api_key)


def _print(value: Any) -> None:
    sys.stdout.write(json.dumps(value, default=str) + "\n")
    sys.stdout.flush()


def upload(args: argparse.Namespace) -> int:
    with client(args) as c:
        return _upload(args, c)


def _upload(args: argparse.Namespace, c: sdk.Client) -> int:
    failed = False
    for path in args.files:
        handle = sdk.upload_to_lake(path, client=c, progress=not args.quiet and sys.stderr.isatty())
        if not args.wait:
            _print({"id": handle.id, "status": "RUNNING", "file": path})
            continue
        try:
            execution = handle.wait(args.timeout)
        except sdk.UploadFailed as exc:
            execution = handle.execution or {"id": handle.id, "status": exc.status}
            failed = True
        _print({**execution, "file": path})
    return 1 if failed else 0


def status(args: argparse.Namespace) -> int:
    with client(args) as c:
        upload = sdk.Upload(args.upload_id, c)
        upload.status()
    _print(upload.execution)
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
            _print(dataset.row)
    elif action == "create":
        _print(sdk.Dataset.create(args.name, client=c).row)
    elif action == "add":
        _print({"added": find(args.dataset).add(ids())})
    elif action == "remove":
        _print({"removed": find(args.dataset).remove(ids())})
    elif action == "commit":
        _print({"committed": find(args.dataset).commit(args.message)})
    elif action == "history":
        for version in find(args.dataset).history():
            _print(version)
    elif action == "checkout":
        _print({"checked_out": find(args.dataset).checkout(args.version)})
    elif action == "diff":
        _print(c.request("GET", f"/api/dataset/diff/{args.version1}/{args.version2}"))
    elif action == "delete":
        dataset = find(args.dataset)
        dataset.delete()
        _print({"deleted": dataset.id})
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
        _print({"miner_id": sdk.Miner.create(config, client=c).id})
        return 0
    if action == "list":
        for found in sdk.list_miners(client=c):
            _print(found.config)
        return 0
    miner = sdk.Miner.get(args.miner, client=c)
    if action == "show":
        _print(miner.config)
    elif action == "status":
        _print({k: v for k, v in miner.task().items() if k != "result"})
    elif action == "results":
        if args.add_to_dataset:
            added = miner.add_results_to(_find_dataset(args.add_to_dataset, c))
            _print({"dataset": args.add_to_dataset, "added": added})
        else:
            sys.stdout.write("".join(f"{i}\n" for i in miner.results()))
    elif action == "reset":
        miner.reset()
        _print(miner.task())
    elif action == "delete":
        miner.delete()
        _print({"deleted": miner.id})
    else:  # run
        miner.run()
        if not args.wait:
            _print(miner.task())
            return 0
        try:
            miner.wait(args.timeout, progress=sys.stderr.isatty())
        except sdk.MinerFailed:
            _print({k: v for k, v in miner.task().items() if k != "result"})
            return 1
        _print({k: v for k, v in miner.task().items() if k != "result"})
    return 0


def _find_dataset(name_or_id: str, c: sdk.Client) -> sdk.Dataset | str:
    try:
        return sdk.Dataset.get(name_or_id, client=c)
    except (sdk.NotFound, sdk.BadRequest):
        return name_or_id  # a name: found, or created, by add_results_to
