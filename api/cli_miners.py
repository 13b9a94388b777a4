"""``shoal miners ...``: create, list, run and read miners on an embedded lake or a server.

On an embedded lake ``run`` computes the miner here, with a progress bar, and stores its result
as the server would; with ``--endpoint`` every action goes through the server (SDK).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from api.cli import find_dataset_id, json_option, print_json
from lake import Lake, LakeError


def add_commands(
    commands: Any,
    lake_option: Callable[[argparse.ArgumentParser], None],
    remote_options: Callable[[argparse.ArgumentParser], None],
) -> None:
    miners = commands.add_parser("miners", help="active-learning miners")
    actions = miners.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, text: str, *, with_id: bool = True) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = actions.add_parser(name, help=text)
        lake_option(sub)
        sub.add_argument("--org", default=None, help="the organization (default: all / default)")
        remote_options(sub)
        if with_id:
            sub.add_argument("miner", help="miner id")
        sub.set_defaults(func=cmd_miners)
        return sub

    create = action("create", "create a miner (prints its id)", with_id=False)
    create.add_argument("--strategy", required=True, help="RANDOM, ENTROPY, CORESET, ...")
    create.add_argument("--size", type=int, required=True, help="datapoints to select")
    create.add_argument("--name", default=None, help="display name (default: the strategy)")
    create.add_argument("--model", default=None, help="model name ('model:layer' for vectors)")
    create.add_argument("--filters", default="[]", help="the candidate pool, as JSON filters")
    create.add_argument("--limit", type=int, default=None, help="at most this many candidates")
    create.add_argument("--order-by", default=None, help="the candidates' order for --limit")
    create.add_argument("--desc", action="store_true", default=None)
    create.add_argument("--reference-filters", default=None, help="the reference set (JSON)")
    create.add_argument(
        "--embeddings-field", default=None, choices=("embeddings", "logits", "grad_embeddings")
    )
    create.add_argument("--metric", default=None, choices=("euclidean", "cosine"))
    create.add_argument("--seed", type=int, default=None, help="random seed (RANDOM, CORESET)")
    action("list", "every miner, one JSON object per line", with_id=False)
    action("show", "a miner's configuration and latest run")
    run = action("run", "run a miner (here on an embedded lake; queued on a server)")
    run.add_argument("--wait", action="store_true", help="with --endpoint: wait for the result")
    run.add_argument("--timeout", type=float, default=3600, help="seconds to wait at most")
    action("status", "the latest run: status, times, message")
    results = action("results", "the latest run's datapoint ids, one per line")
    results.add_argument("--add-to-dataset", default=None, metavar="DATASET", help="add them")
    action("reset", "drop the results")
    action("delete", "delete the miner")


def config_from(args: argparse.Namespace) -> dict[str, Any]:
    """The create payload (reference §6.2) of ``shoal miners create``'s options."""
    config: dict[str, Any] = {
        "display_name": args.name or args.strategy,
        "strategy": args.strategy,
        "size": args.size,
        "model_name": args.model,
        "select": {"filters": json_option(args.filters)},
    }
    for key, value in (("limit", args.limit), ("order_by", args.order_by), ("desc", args.desc)):
        if value is not None:
            config["select"][key] = value
    if args.reference_filters is not None:
        config["select_reference"] = {
            "filters": json_option(args.reference_filters, "--reference-filters")
        }
    for key in ("embeddings_field", "metric", "seed"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    return config


def cmd_miners(args: argparse.Namespace) -> int:
    if args.endpoint:
        from api import remote

        return remote.miners(args, config_from(args) if args.action == "create" else None)
    from api import wire
    from lake.miners import MinerConfig, Miners, TaskStatus

    lake = Lake(args.lake)
    miners = Miners(lake, organization_id=args.org)
    action = args.action
    if action == "create":
        print_json({"miner_id": miners.create(MinerConfig.parse(config_from(args))).id})
    elif action == "list":
        for miner in miners.list_miners():
            print_json(wire.miner(miner))
    elif action == "show":
        print_json(wire.miner(miners.get(args.miner)))
    elif action == "status":
        print_json(wire.task(miners.get(args.miner), with_result=False))
    elif action == "results":
        ids = miners.get(args.miner).task.result or []
        if args.add_to_dataset:
            _add_to_dataset(lake, args, ids)
        else:
            sys.stdout.write("".join(f"{i}\n" for i in ids))
    elif action == "reset":
        print_json(wire.task(miners.reset(args.miner)))
    elif action == "delete":
        print_json({"deleted": miners.delete(args.miner).id})
    else:  # run
        done = _run_here(lake, args)
        print_json(wire.task(done, with_result=False))
        return 0 if done.task.status is TaskStatus.SUCCESS else 1
    return 0


def _run_here(lake: Lake, args: argparse.Namespace) -> Any:
    from lake.miners import MinerRunner

    runner = MinerRunner(lake)
    try:
        miner = runner.run(args.miner, organization_id=args.org)
        deadline = time.monotonic() + args.timeout
        with tqdm(desc=f"mining {miner.config.display_name}", unit="pick") as bar:
            while True:
                try:
                    return runner.wait(miner.id, organization_id=args.org, timeout=0.2)
                except TimeoutError:
                    if time.monotonic() > deadline:
                        message = f"miner {miner.id} still running after {args.timeout} s"
                        raise LakeError(message) from None
                    progress = runner.progress(miner)
                    if progress is not None:
                        bar.total, bar.n = progress[1], progress[0]
                        bar.refresh()
    finally:
        runner.shutdown(wait=False)


def _add_to_dataset(lake: Lake, args: argparse.Namespace, ids: list[str]) -> None:
    from lake.datasets import Datasets
    from lake.errors import NotFoundError

    datasets = Datasets(lake, organization_id=args.org)
    try:
        target = find_dataset_id(datasets, args.add_to_dataset)
    except NotFoundError:  # a name no dataset has yet
        target = datasets.create(args.add_to_dataset).id
    print_json({"dataset": target, "added": datasets.add(target, ids) if ids else 0})
