"""Miners: the reference client's miner classes, plus a handle that waits with a progress bar.

Building a strategy class creates the miner on the server, as the reference client does;
nothing runs until :meth:`Miner.run`. :meth:`Miner.wait` follows the run and returns the
datapoint ids, most informative first, which :meth:`Miner.add_results_to` puts in a dataset::

    miner = CoresetMiner("to label", 500, select_filters=pool, model_name="resnet:avgpool")
    miner.run()
    ids = miner.wait(timeout=600)
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from tqdm import tqdm

from sdk._client import Client, default_client
from sdk._datasets import Dataset
from sdk._errors import MinerFailed

RUNNING = frozenset({"PENDING", "RECEIVED", "STARTED", "RETRY"})


class Miner:
    """A miner on the server. The strategy classes below create one; :meth:`get` finds one."""

    strategy: ClassVar[str | None] = None

    def __init__(self, doc: dict[str, Any], client: Client) -> None:
        self.id: str = doc["_id"]
        self.name: str = doc.get("display_name", "")
        self.config = doc
        self.client = client

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, id={self.id!r})"

    @classmethod
    def get(cls, miner_id: str, *, client: Client | None = None) -> Miner:
        client = client or default_client()
        return Miner(client.request("GET", f"/api/tasks/miners/{miner_id}"), client)

    @classmethod
    def create(cls, config: dict[str, Any], *, client: Client | None = None) -> Miner:
        """A miner from a configuration of reference §6.2 (``strategy``, ``size`` ...)."""
        client = client or default_client()
        answer = client.request("POST", "/api/tasks/miners", json=config)
        return cls.get(answer["miner_id"], client=client)

    # -- running ----------------------------------------------------------------------------
    def run(self) -> Miner:
        """Queue a run; it replaces the results of any earlier one."""
        self.client.request("POST", "/api/tasks/miner/run", json={"miner_id": self.id})
        return self

    def reset(self) -> None:
        """Drop the results (and cancel a run in progress)."""
        self.client.request("POST", "/api/tasks/miner/reset", json={"miner_id": self.id})

    def delete(self) -> None:
        self.client.request("POST", "/api/tasks/miners/delete", json={"miner_id": self.id})

    # -- following --------------------------------------------------------------------------
    def task(self) -> dict[str, Any]:
        """The latest run: ``status`` (PENDING, STARTED, SUCCESS, FAILURE), ``result`` ..."""
        answer = self.client.request("GET", f"/api/tasks/miners/inspect/{self.id}")
        task: dict[str, Any] = answer["task"]
        return task

    def status(self) -> str:
        return str(self.task()["status"])

    def results(self) -> list[str]:
        """The latest run's datapoint ids as they are now (empty until a run succeeded)."""
        ids: list[str] = self.client.request("GET", f"/api/tasks/miners/results/{self.id}")
        return ids

    def wait(
        self, timeout: float | None = 3600, *, poll: float = 0.2, progress: bool = True
    ) -> list[str]:
        """Wait for the run to end; return its datapoint ids, most informative first.

        Raises :class:`MinerFailed` (with the server's reason) when it failed, and
        ``TimeoutError`` after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = poll
        with tqdm(desc=f"mining {self.name}", unit="pick", disable=not progress) as bar:
            while True:
                task = self.task()
                status = task["status"]
                if task.get("progress"):
                    bar.total = task["progress"]["total"]
                    bar.n = task["progress"]["done"]
                    bar.refresh()
                if status not in RUNNING:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"miner {self.id} still {status} after {timeout} s")
                time.sleep(delay)
                delay = min(delay * 1.5, 5.0)
        if status != "SUCCESS":
            raise MinerFailed(self.id, status, task.get("message") or status)
        return list(task.get("result") or [])

    def add_results_to(self, dataset: Dataset | str) -> int:
        """Add the latest results to a dataset's working version (a Dataset or its name:
        created if missing); return how many were new members."""
        if isinstance(dataset, str):
            dataset = Dataset.get_or_create(dataset, client=self.client)
        return dataset.add(self.results())

    # -- the reference client's names ---------------------------------------------------------
    def get_status(self) -> str:
        return self.status()

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = self.client.request("GET", f"/api/tasks/miners/{self.id}")
        return config

    def get_results(self, timeout: float | None = 3600) -> list[str]:
        return self.wait(timeout, progress=False)

    # -- building the strategy classes ----------------------------------------------------------
    def _common(
        self, display_name: str, size: int, model_name: str | None, select: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "display_name": display_name,
            "strategy": self.strategy,
            "size": size,
            "model_name": model_name,
            "select": select,
        }

    def _create(self, client: Client | None, **config: Any) -> None:
        client = client or default_client()
        config = {k: v for k, v in config.items() if v is not None or k in ("model_name",)}
        answer = client.request("POST", "/api/tasks/miners", json=config)
        Miner.__init__(
            self, client.request("GET", f"/api/tasks/miners/{answer['miner_id']}"), client
        )


def _select(filters: Any, limit: Any, order_by: Any, desc: Any) -> dict[str, Any]:
    query: dict[str, Any] = {"filters": filters}
    for key, value in (("limit", limit), ("order_by", order_by), ("desc", desc)):
        if value is not None:
            query[key] = value
    return query


def _reference(filters: Any, limit: Any, order_by: Any, desc: Any) -> dict[str, Any] | None:
    return None if filters is None else _select(filters, limit, order_by, desc)


class _PoolMiner(Miner):
    """Random draws and per-prediction scores: the reference's (filters, limit, order, desc,
    model_name) argument order."""

    def __init__(
        self,
        display_name: str,
        size: int,
        select_filters: list[Any] | None,
        select_limit: int | None = None,
        select_order_by: str | None = None,
        select_desc: bool | None = None,
        model_name: str | None = None,
        *,
        seed: int | None = None,
        client: Client | None = None,
    ) -> None:
        select = _select(select_filters, select_limit, select_order_by, select_desc)
        self._create(client, **self._common(display_name, size, model_name, select), seed=seed)


class _ModelMiner(Miner):
    """Entropy scores: the reference's (filters, model_name, limit, order, desc) order."""

    def __init__(
        self,
        display_name: str,
        size: int,
        select_filters: list[Any] | None,
        model_name: str | None = None,
        select_limit: int | None = None,
        select_order_by: str | None = None,
        select_desc: bool | None = None,
        *,
        client: Client | None = None,
    ) -> None:
        select = _select(select_filters, select_limit, select_order_by, select_desc)
        self._create(client, **self._common(display_name, size, model_name, select))


class RandomMiner(_PoolMiner):
    """``size`` candidates drawn at random (``seed`` makes the draw repeatable)."""

    strategy = "RANDOM"


class VarianceMiner(_PoolMiner):
    """The highest MC-dropout ``metrics.variance`` of ``model_name``'s predictions."""

    strategy = "VARIANCE"


class BadgeMiner(_PoolMiner):
    """k-means++ seeding over the gradient embeddings of ``model_name``."""

    strategy = "BADGE"


class EntropyMiner(_ModelMiner):
    """The candidates whose predictions of ``model_name`` have the highest entropy."""

    strategy = "ENTROPY"


class WeightedEntropyMiner(_ModelMiner):
    """The highest ``metrics.weighted_entropy`` (a value the records supply)."""

    strategy = "WEIGHTED_ENTROPY"


class _VectorMiner(Miner):
    """Strategies over the feature vectors of ``model_name`` (``model:layer`` for a layer)."""

    def __init__(
        self,
        display_name: str,
        size: int,
        select_filters: list[Any] | None,
        model_name: str | None = None,
        embeddings_field: str = "embeddings",
        metric: str = "euclidean",
        select_limit: int | None = None,
        select_order_by: str | None = None,
        select_desc: bool | None = None,
        select_reference_filters: list[Any] | None = None,
        select_reference_limit: int | None = None,
        select_reference_order_by: str | None = None,
        select_reference_desc: bool | None = None,
        skip_caching: bool = True,
        *,
        seed: int | None = None,
        client: Client | None = None,
    ) -> None:
        select = _select(select_filters, select_limit, select_order_by, select_desc)
        self._create(
            client,
            **self._common(display_name, size, model_name, select),
            embeddings_field=embeddings_field,
            metric=metric,
            select_reference=_reference(
                select_reference_filters,
                select_reference_limit,
                select_reference_order_by,
                select_reference_desc,
            ),
            skip_caching=skip_caching,
            seed=seed,
        )


class CoresetMiner(_VectorMiner):
    """k-center greedy: each pick the candidate farthest from the reference and earlier picks."""

    strategy = "CORESET"


class KNNMiner(_VectorMiner):
    """The candidates nearest to the reference set (``select_reference_filters``)."""

    strategy = "NEAREST_NEIGHBORS"


class ActivationMiner(_VectorMiner):
    """The least activated candidates (relative to the reference set's activation if given).

    The reference's argument order: no ``metric`` (activation measures no distance).
    """

    strategy = "ACTIVATION"

    def __init__(
        self,
        display_name: str,
        size: int,
        select_filters: list[Any] | None,
        model_name: str | None = None,
        embeddings_field: str = "embeddings",
        select_limit: int | None = None,
        select_order_by: str | None = None,
        select_desc: bool | None = None,
        select_reference_filters: list[Any] | None = None,
        select_reference_limit: int | None = None,
        select_reference_order_by: str | None = None,
        select_reference_desc: bool | None = None,
        skip_caching: bool = True,
        *,
        client: Client | None = None,
    ) -> None:
        super().__init__(
            display_name,
            size,
            select_filters,
            model_name,
            embeddings_field,
            "euclidean",
            select_limit,
            select_order_by,
            select_desc,
            select_reference_filters,
            select_reference_limit,
            select_reference_order_by,
            select_reference_desc,
            skip_caching,
            client=client,
        )


def list_miners(*, client: Client | None = None) -> list[Miner]:
    client = client or default_client()
    return [Miner(doc, client) for doc in client.request("GET", "/api/tasks/miners")]
