"""One miner run: the candidate pool, the scores or vectors, the strategy's picks.

1. The candidates are the datapoint ids of the miner's ``select`` (its filters, order, limit).
2. Score strategies rank the candidates' predictions of ``model_name`` by a metric; vector
   strategies read the candidates' feature vectors of ``model_name`` and of the strategy's
   vector type, streamed in batches into a float16 :class:`VectorPool`.
3. The result is at most ``size`` datapoint ids, most informative first.

Whatever keeps a run from producing a result (no candidates, no predictions or vectors of the
model, vectors of differing lengths) raises :class:`MiningError`, whose message becomes the
run's FAILURE message.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from lake.errors import LakeError, StorageError
from lake.lake import Lake, LakeState
from lake.miners import vectors
from lake.miners.config import SCORE_METRICS, MinerConfig, PoolQuery, Strategy
from lake.miners.vectors import Cancelled, Progress, VectorPool
from lake.query.select import Scope, matching_ids
from lake.tables import SCHEMAS

STREAM_ROWS = 16_384  # vectors read at a time


class MiningError(LakeError):
    """A miner run cannot produce a result; the message says why."""


def mine(
    lake: Lake,
    config: MinerConfig,
    *,
    organization_id: str | None,
    seed: int,
    state: LakeState | None = None,
    progress: Progress | None = None,
    cancelled: Cancelled | None = None,
) -> list[str]:
    """The datapoint ids ``config`` selects, most informative first."""
    scope = Scope(lake, state=state, organization_id=organization_id)
    candidates = _candidates(scope, config.select, "select")
    rng = np.random.default_rng(seed)
    strategy = config.strategy
    if strategy is Strategy.RANDOM:
        drawn = rng.choice(len(candidates), size=min(config.size, len(candidates)), replace=False)
        return candidates.gather(drawn).to_list()
    if strategy in SCORE_METRICS:
        return _by_score(scope, candidates, config, SCORE_METRICS[strategy])
    pool_ids, pool = _vectors(scope, candidates, config)
    reference_ids, reference = None, None
    if config.select_reference is not None:
        found = _candidates(scope, config.select_reference, "select_reference")
        reference_ids, reference = _vectors(scope, found, config, what="reference")
    picks: list[int] | np.ndarray
    if strategy is Strategy.CORESET:
        picks = vectors.k_center_greedy(
            pool, config.size, reference=reference, rng=rng, progress=progress, cancelled=cancelled
        )
    elif strategy is Strategy.BADGE:
        picks = vectors.kmeans_pp_seeding(
            pool, config.size, rng=rng, progress=progress, cancelled=cancelled
        )
    elif strategy is Strategy.ACTIVATION:
        picks = vectors.smallest(vectors.activation_scores(pool, reference=reference), config.size)
    else:  # NEAREST_NEIGHBORS
        assert reference is not None and reference_ids is not None
        distances = vectors.nearest_distances(pool, reference, cancelled=cancelled)
        # the reference datapoints themselves are not news: leave them out
        distances[pool_ids.is_in(reference_ids).to_numpy()] = np.inf
        picks = vectors.smallest(distances, config.size)
        picks = picks[np.isfinite(distances[picks])]
    return pool_ids.gather(np.asarray(picks, dtype=np.int64)).to_list()


def seed_of(miner_id: str) -> int:
    """A run's default seed: fixed per miner, so that runs repeat."""
    return uuid.UUID(miner_id).int % (2**63)


def _candidates(scope: Scope, query: PoolQuery, key: str) -> pl.Series:
    ids = matching_ids(query.selection(), scope)
    if ids.is_empty():
        raise MiningError(f"{key} matched no datapoints: the pool to mine is empty")
    return ids


def _by_score(scope: Scope, candidates: pl.Series, config: MinerConfig, metric: str) -> list[str]:
    frame = scope.scan("predictions")
    model = config.model_name
    if model is not None:
        frame = frame.filter(pl.col("model_name") == model)
    scored = (
        frame.join(candidates.alias("datapoint").to_frame().lazy(), on="datapoint", how="semi")
        .select(
            "datapoint",
            pl.col("metrics")
            .str.json_path_match(f"$.{metric}")
            .cast(pl.Float64, strict=False)
            .alias("score"),
        )
        .group_by("datapoint")
        .agg(pl.col("score").max())
        .collect()
    )
    of_model = f" of model {model!r}" if model is not None else ""
    if scored.is_empty():
        raise MiningError(
            f"no predictions{of_model} among the {len(candidates)} candidate datapoints"
        )
    if scored.get_column("score").null_count() == scored.height:
        raise MiningError(
            f"none of the predictions{of_model} of the {scored.height} candidate datapoints "
            f"has metrics.{metric}"
        )
    ranked = scored.sort(["score", "datapoint"], descending=[True, False], nulls_last=True).head(
        config.size
    )
    return ranked.get_column("datapoint").to_list()


def _vectors(
    scope: Scope, datapoints: pl.Series, config: MinerConfig, *, what: str = "candidate"
) -> tuple[pl.Series, VectorPool]:
    """One vector per datapoint (the first by vector id), streamed into a pool."""
    kind = config.vector_type
    assert config.model_name is not None
    names = [config.model_name]
    if kind == "LOGITS" and ":" in config.model_name:
        names.append(config.model_name.split(":", 1)[0])  # logits belong to the model, not a layer
    files = scope.lake.fragments("feature_vectors", state=scope.state)
    for name in names:
        chosen = _chosen_rows(files, scope.organization_id, kind, name, datapoints)
        if chosen.height:
            pool = _read_pool(files, chosen, config, name)
            # hand the reading buffers back before the algorithm allocates its own
            pa.default_memory_pool().release_unused()
            return chosen.get_column("datapoint"), pool
    raise MiningError(
        f"no {kind} feature vectors of model {config.model_name!r} for the "
        f"{len(datapoints)} {what} datapoints; {_models_with(scope, kind)}"
    )


def _chosen_rows(
    files: list[ds.Fragment], org: str | None, kind: str, name: str, datapoints: pl.Series
) -> pl.DataFrame:
    """(file, row, datapoint) of the vectors to read: of ``kind`` and ``name``, of the given
    datapoints, the first by vector id for each datapoint; ordered by file and row.

    Only the small key columns are read here, one file at a time.
    """
    keys = ["id", "organization_id", "type", "model_name", "datapoint"]
    found = []
    for number, fragment in enumerate(files):
        schema = pa.schema([SCHEMAS["feature_vectors"].field(k) for k in keys])
        frame = pl.from_arrow(pa.Table.from_batches(list(_batches(fragment, keys)), schema))
        assert isinstance(frame, pl.DataFrame)
        condition = (pl.col("type") == kind) & (pl.col("model_name") == name)
        if org is not None:
            condition &= pl.col("organization_id") == org
        found.append(
            frame.with_row_index("row")
            .filter(condition)
            .select(pl.lit(number, pl.Int32).alias("file"), "row", "id", "datapoint")
        )
    if not found:
        return pl.DataFrame(schema={"file": pl.Int32, "row": pl.UInt32, "datapoint": pl.String})
    wanted = datapoints.alias("datapoint").to_frame()
    return (
        pl.concat(found)
        .join(wanted, on="datapoint", how="semi")
        .sort("id")
        .unique(subset="datapoint", keep="first", maintain_order=True)
        .sort("file", "row")
        .select("file", "row", "datapoint")
    )


def _read_pool(
    files: list[ds.Fragment], chosen: pl.DataFrame, config: MinerConfig, name: str
) -> VectorPool:
    """The chosen rows' vectors, read file by file in batches, into a float16 pool."""
    normalize = config.metric == "cosine" and config.strategy is not Strategy.ACTIVATION
    pool: VectorPool | None = None
    for (number,), rows in chosen.group_by("file", maintain_order=True):
        wanted = rows.get_column("row").to_numpy().astype(np.int64)
        start = 0
        for batch in _batches(files[int(number)], ["value"]):
            low, high = np.searchsorted(wanted, [start, start + batch.num_rows])
            start += batch.num_rows
            if low == high:
                continue
            values = batch.column(0).take(pa.array(wanted[low:high] - (start - batch.num_rows)))
            rows_array = _matrix(values, pool.dim if pool is not None else None, config, name)
            if pool is None:
                pool = VectorPool(rows_array.shape[1])
            try:
                pool.extend(rows_array, normalize=normalize)
            except ValueError as exc:
                raise MiningError(
                    f"the {config.vector_type} vectors of model {name!r}: {exc}"
                ) from None
    assert pool is not None and len(pool) == chosen.height
    return pool


def _matrix(values: pa.Array, dim: int | None, config: MinerConfig, name: str) -> np.ndarray:
    """A list<float> array as an n×dim matrix; vectors of another length are an error."""
    lengths = pc.list_value_length(values).to_numpy(zero_copy_only=False)
    dim = int(lengths[0]) if dim is None else dim
    if (lengths != dim).any():
        other = int(lengths[lengths != dim][0])
        raise MiningError(
            f"the {config.vector_type} vectors of model {name!r} have differing lengths "
            f"({dim} and {other}): a miner needs vectors of one length"
        )
    flat = pc.list_flatten(values)
    return flat.to_numpy(zero_copy_only=False).reshape(-1, dim)


def _batches(fragment: ds.Fragment, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """One file's columns, a batch at a time (storage failures as StorageError)."""
    try:
        yield from fragment.to_batches(columns=columns, batch_size=STREAM_ROWS)
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"reading the feature vectors failed: {exc}") from exc


def _models_with(scope: Scope, kind: str) -> str:
    names = (
        scope.scan("feature_vectors", where=pl.col("type") == kind)
        .select(pl.col("model_name").unique().sort())
        .head(20)
        .collect()
        .get_column("model_name")
        .to_list()
    )
    if not names:
        return f"the lake holds no {kind} vectors"
    return f"models with {kind} vectors: {', '.join(repr(n) for n in names)}"
