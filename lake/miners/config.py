"""A miner's configuration: the create payload of reference §6.2, checked and normalised.

Every problem is an :class:`InputError` naming the key (``select.filters[0]: unknown column
...``), raised when the miner is created, not when it runs. Keys this engine does not use (the
web UI's legacy ``duplication_factor`` ...) are kept and echoed back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from lake.errors import InputError, QueryError
from lake.query.select import Selection


class Strategy(StrEnum):
    RANDOM = "RANDOM"
    ENTROPY = "ENTROPY"
    WEIGHTED_ENTROPY = "WEIGHTED_ENTROPY"
    VARIANCE = "VARIANCE"
    ACTIVATION = "ACTIVATION"
    CORESET = "CORESET"
    NEAREST_NEIGHBORS = "NEAREST_NEIGHBORS"
    BADGE = "BADGE"


#: Strategies that rank by a prediction metric, and the metric (``predictions.metrics``).
SCORE_METRICS = {
    Strategy.ENTROPY: "entropy",
    Strategy.WEIGHTED_ENTROPY: "weighted_entropy",
    Strategy.VARIANCE: "variance",
}
#: Strategies that work on feature vectors.
VECTOR_STRATEGIES = frozenset(
    {Strategy.ACTIVATION, Strategy.CORESET, Strategy.NEAREST_NEIGHBORS, Strategy.BADGE}
)
#: ``embeddings_field`` → the feature vectors' ``type``.
VECTOR_TYPES = {
    "embeddings": "EMBEDDINGS",
    "logits": "LOGITS",
    "grad_embeddings": "GRAD_EMBEDDINGS",
}
METRICS = ("euclidean", "cosine")
MAX_SIZE = 1_000_000

_KNOWN = {
    "display_name",
    "strategy",
    "size",
    "model_name",
    "embeddings_field",
    "metric",
    "select",
    "select_reference",
    "skip_caching",
    "evaluation_period",
    "seed",
}

# keys of a miner document that a client may post back: they are the server's, not config
_DOCUMENT = {
    "_id",
    "miner_id",
    "organization_id",
    "user_id",
    "status",
    "task",
    "created_at",
    "updated_at",
}


@dataclass(frozen=True)
class PoolQuery:
    """A datapoint select (``filters``, ``limit``, ``order_by``, ``desc``): a miner's pool."""

    filters: list[Any] | None
    limit: int | None = None
    order_by: str | None = None
    desc: bool | None = None

    @classmethod
    def parse(cls, value: object, key: str) -> PoolQuery:
        if not isinstance(value, dict):
            raise InputError(f"{key} must be an object with filters, limit, order_by, desc")
        unknown = sorted(set(value) - {"filters", "limit", "order_by", "desc"})
        if unknown:
            raise InputError(
                f"{key}: unknown key(s) {', '.join(unknown)} "
                "(known: filters, limit, order_by, desc)"
            )
        query = cls(
            value.get("filters"), value.get("limit"), value.get("order_by"), value.get("desc")
        )
        if query.desc is not None and not isinstance(query.desc, bool):
            raise InputError(f"{key}.desc must be true, false or null, got {query.desc!r}")
        try:
            query.selection()
        except QueryError as exc:
            raise InputError(f"{key}: {exc}") from None
        return query

    def selection(self) -> Selection:
        return Selection.parse(
            "datapoints",
            filters=self.filters,
            columns=["id"],
            order_by=self.order_by,
            desc=bool(self.desc),
            limit=self.limit,
        )

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"filters": self.filters}
        for key in ("limit", "order_by", "desc"):
            if getattr(self, key) is not None:
                doc[key] = getattr(self, key)
        return doc


@dataclass(frozen=True)
class MinerConfig:
    display_name: str
    strategy: Strategy
    size: int
    select: PoolQuery
    model_name: str | None = None
    embeddings_field: str = "embeddings"
    metric: str = "euclidean"
    select_reference: PoolQuery | None = None
    skip_caching: bool = True
    evaluation_period: str | None = None
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, payload: object) -> MinerConfig:
        if not isinstance(payload, dict):
            raise InputError("a miner is configured by a JSON object (reference §6.2)")
        strategy = _strategy(payload.get("strategy"))
        embeddings_field = payload.get("embeddings_field") or "embeddings"
        if embeddings_field not in VECTOR_TYPES:
            raise InputError(
                f"embeddings_field must be one of {', '.join(VECTOR_TYPES)}, "
                f"got {embeddings_field!r}"
            )
        metric = payload.get("metric") or "euclidean"
        metric = "euclidean" if metric == "euclidian" else metric  # the client's docstring
        if metric not in METRICS:
            raise InputError(f"metric must be euclidean or cosine, got {metric!r}")
        model_name = payload.get("model_name")
        if model_name is not None and (not isinstance(model_name, str) or not model_name):
            raise InputError(f"model_name must be a non-empty string or null, got {model_name!r}")
        if strategy in VECTOR_STRATEGIES and model_name is None:
            raise InputError(
                f"{strategy} needs model_name: the feature vectors' model "
                "('model_name:layer_name' for the embeddings of one layer)"
            )
        reference = payload.get("select_reference")
        config = cls(
            display_name=_display_name(payload.get("display_name")),
            strategy=strategy,
            size=_size(payload.get("size")),
            select=PoolQuery.parse(payload.get("select", {"filters": None}), "select"),
            model_name=model_name,
            embeddings_field=embeddings_field,
            metric=metric,
            select_reference=_reference(reference),
            skip_caching=_flag(payload.get("skip_caching", True), "skip_caching"),
            evaluation_period=_optional_text(payload.get("evaluation_period"), "evaluation_period"),
            seed=_seed(payload.get("seed")),
            extra={k: v for k, v in payload.items() if k not in _KNOWN and k not in _DOCUMENT},
        )
        if strategy is Strategy.NEAREST_NEIGHBORS and config.select_reference is None:
            raise InputError(
                "NEAREST_NEIGHBORS needs a reference set: select_reference.filters "
                "(the datapoints to find neighbours of)"
            )
        return config

    @property
    def vector_type(self) -> str:
        if self.strategy is Strategy.BADGE:
            return "GRAD_EMBEDDINGS"
        return VECTOR_TYPES[self.embeddings_field]

    def to_doc(self) -> dict[str, Any]:
        """The configuration as the wire shows it (and as it is stored)."""
        doc: dict[str, Any] = {
            **self.extra,
            "display_name": self.display_name,
            "strategy": str(self.strategy),
            "size": self.size,
            "model_name": self.model_name,
            "select": self.select.to_doc(),
        }
        if self.strategy in VECTOR_STRATEGIES:
            doc["embeddings_field"] = self.embeddings_field
            doc["metric"] = self.metric
            doc["skip_caching"] = self.skip_caching
        if self.select_reference is not None:
            doc["select_reference"] = self.select_reference.to_doc()
        if self.evaluation_period is not None:
            doc["evaluation_period"] = self.evaluation_period
        if self.seed is not None:
            doc["seed"] = self.seed
        return doc


def _strategy(value: object) -> Strategy:
    names = ", ".join(s.value for s in Strategy)
    if not isinstance(value, str):
        raise InputError(f"strategy must be one of {names}, got {value!r}")
    # the web UI sends "WEIGHTED ENTROPY"; the client WEIGHTED_ENTROPY
    normal = "_".join(value.strip().upper().replace("-", " ").split())
    try:
        return Strategy(normal)
    except ValueError:
        raise InputError(f"strategy must be one of {names}, got {value!r}") from None


def _display_name(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"display_name must be a non-empty string, got {value!r}")
    return value


def _size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIZE:
        raise InputError(f"size must be a whole number from 1 to {MAX_SIZE}, got {value!r}")
    return value


def _reference(value: object) -> PoolQuery | None:
    if value is None:
        return None
    query = PoolQuery.parse(value, "select_reference")
    # the KNN client always sends select_reference, {"filters": null} when none was given
    return None if query.filters is None else query


def _flag(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{key} must be true or false, got {value!r}")
    return value


def _optional_text(value: object, key: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InputError(f"{key} must be a string or null, got {value!r}")
    return value


def _seed(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"seed must be a non-negative whole number, got {value!r}")
    return value
