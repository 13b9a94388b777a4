"""Pools of feature vectors and the selection algorithms that run over them.

A :class:`VectorPool` holds n vectors of one length as float16 blocks (half the memory of
float32; a million 512-d vectors take 1 GiB) with their squared norms. Every algorithm works
block by block in float32, so what it holds beyond the pool is a few blocks and a handful of
length-n arrays, never an n×n matrix or a float32 copy of the pool.

Distances are squared euclidean distances (the ranking of plain euclidean distance); a pool
built with ``normalize=True`` holds unit vectors, on which squared euclidean distance is
``2 - 2·cos``: the ranking of cosine distance.

* :func:`k_center_greedy` (CORESET): exact k-center greedy. Centres are folded into the
  minimum distances in batches of ``batch`` with one matrix product per block; between folds the
  next centre is found lazily: the stored minimum is an upper bound of the true one, so only
  the points whose bound could still win are compared with the centres picked since the fold.
* :func:`nearest_distances` (NEAREST_NEIGHBORS): each point's distance to its nearest reference.
* :func:`kmeans_pp_seeding` (BADGE): k-means++ (D²) seeding, exact by rejection: a point is
  drawn in proportion to its stored (upper-bound) distance and kept with probability
  true / stored.
* :func:`activation_scores` (ACTIVATION): mean absolute activation, optionally relative to the
  reference vectors' mean absolute activation per dimension.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

BLOCK_ROWS = 16_384  # rows converted to float32 at a time
_FLOAT16_MAX = float(np.finfo(np.float16).max)
Progress = Callable[[int, int], None]
Cancelled = Callable[[], bool]


class RunCancelled(Exception):
    """The run was reset, re-run or deleted while it worked; its result is not wanted."""


@dataclass
class VectorPool:
    """n vectors of one length, stored as float16 blocks, with float32 squared norms."""

    dim: int
    blocks: list[np.ndarray] = field(default_factory=list)
    sqnorms: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))
    _starts: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))

    @classmethod
    def from_arrays(
        cls, arrays: list[np.ndarray], *, dim: int, normalize: bool = False
    ) -> VectorPool:
        """A pool of the rows of ``arrays`` (each k×dim, any float type), in order."""
        pool = cls(dim)
        for array in arrays:
            pool.extend(array, normalize=normalize)
        return pool

    def extend(self, rows: np.ndarray, *, normalize: bool = False) -> None:
        for start in range(0, len(rows), BLOCK_ROWS):
            part = np.asarray(rows[start : start + BLOCK_ROWS], dtype=np.float32)
            if normalize:
                norms = np.linalg.norm(part, axis=1, keepdims=True)
                part = (part / np.where(norms > 0, norms, 1)).astype(np.float32)
            if not np.isfinite(part).all() or (len(part) and np.abs(part).max() > _FLOAT16_MAX):
                raise ValueError("vectors hold values that are not finite in float16")
            stored = part.astype(np.float16)
            as_float = stored.astype(np.float32)
            self.blocks.append(stored)
            self.sqnorms = np.concatenate([self.sqnorms, np.einsum("ij,ij->i", as_float, as_float)])
            self._starts = np.append(self._starts, self._starts[-1] + len(stored))

    def __len__(self) -> int:
        return int(self._starts[-1])

    def iter_blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, float32 block) for every block, in order."""
        for start, block in zip(self._starts, self.blocks, strict=False):
            yield int(start), block.astype(np.float32)

    def rows(self, index: np.ndarray) -> np.ndarray:
        """The float32 rows at ``index`` (any order)."""
        index = np.asarray(index, dtype=np.int64)
        out = np.empty((len(index), self.dim), dtype=np.float32)
        which = np.searchsorted(self._starts, index, side="right") - 1
        for b in np.unique(which):
            mask = which == b
            out[mask] = self.blocks[b][index[mask] - self._starts[b]]
        return out


def squared_distances(
    rows: np.ndarray, row_sq: np.ndarray, centres: np.ndarray, centre_sq: np.ndarray
) -> np.ndarray:
    """rows × centres squared euclidean distances (float32, clipped at 0)."""
    product = rows @ centres.T
    product *= -2
    product += row_sq[:, None]
    product += centre_sq[None, :]
    return np.maximum(product, 0, out=product)


def nearest_distances(
    pool: VectorPool, reference: VectorPool, *, cancelled: Cancelled | None = None
) -> np.ndarray:
    """Each pool vector's squared distance to its nearest reference vector."""
    best = np.full(len(pool), np.inf, dtype=np.float32)
    for _, ref_block in reference.iter_blocks():
        _fold(pool, best, ref_block, cancelled=cancelled)
    return best


def _fold(
    pool: VectorPool,
    best: np.ndarray,
    centres: np.ndarray,
    *,
    cancelled: Cancelled | None = None,
) -> None:
    """best = min(best, distance to the nearest of ``centres``), block by block."""
    centre_sq = np.einsum("ij,ij->i", centres, centres)
    for step in range(0, len(centres), 1024):
        part, part_sq = centres[step : step + 1024], centre_sq[step : step + 1024]
        for start, block in pool.iter_blocks():
            if cancelled is not None and cancelled():
                raise RunCancelled
            end = start + len(block)
            near = squared_distances(block, pool.sqnorms[start:end], part, part_sq).min(axis=1)
            np.minimum(best[start:end], near, out=best[start:end])


class _Centres:
    """Minimum distances to the centres so far: folded ones exactly, recent ones lazily."""

    def __init__(self, pool: VectorPool, batch: int, cancelled: Cancelled | None) -> None:
        self.pool = pool
        self.batch = batch
        self.cancelled = cancelled
        self.folded = np.full(len(pool), np.inf, dtype=np.float32)  # exact for folded centres
        self.bound = self.folded.copy()  # upper bound of the true minimum, tightened lazily
        self.recent = np.empty((0, pool.dim), dtype=np.float32)
        self.recent_sq = np.empty(0, dtype=np.float32)
        self.any_folded = False

    def fold(self, centres: np.ndarray) -> None:
        _fold(self.pool, self.folded, centres, cancelled=self.cancelled)
        self.bound = self.folded.copy()
        self.any_folded = True

    def add(self, index: int) -> None:
        row = self.pool.rows(np.array([index]))
        self.recent = np.vstack([self.recent, row])
        self.recent_sq = np.append(self.recent_sq, self.pool.sqnorms[index])
        self.folded[index] = 0.0
        self.bound[index] = 0.0
        # the first centre is folded at once: bounds must be finite to prune anything
        if len(self.recent) >= self.batch or not self.any_folded:
            self.flush()

    def flush(self) -> None:
        """Fold the recent centres: every bound becomes exact."""
        if len(self.recent):
            recent, self.recent = self.recent, self.recent[:0]
            self.recent_sq = self.recent_sq[:0]
            self.fold(recent)

    def exact(self, index: np.ndarray) -> np.ndarray:
        """True minimum distances of ``index``; their bounds are tightened to them."""
        values = self.bound[index]
        if len(self.recent):
            near = squared_distances(
                self.pool.rows(index), self.pool.sqnorms[index], self.recent, self.recent_sq
            ).min(axis=1)
            values = np.minimum(values, near)
        self.bound[index] = values
        return values


def k_center_greedy(
    pool: VectorPool,
    size: int,
    *,
    reference: VectorPool | None = None,
    rng: np.random.Generator,
    batch: int = 256,
    progress: Progress | None = None,
    cancelled: Cancelled | None = None,
) -> list[int]:
    """Indices of ``size`` pool vectors, each the farthest from the centres before it.

    The reference vectors are the first centres; without them the first pick is random.
    """
    n = len(pool)
    size = min(size, n)
    centres = _Centres(pool, batch, cancelled)
    picked: list[int] = []
    if reference is not None and len(reference):
        for _, ref_block in reference.iter_blocks():
            centres.fold(ref_block)
    elif size:
        first = int(rng.integers(n))
        picked.append(first)
        centres.add(first)
    while len(picked) < size:
        if cancelled is not None and cancelled():
            raise RunCancelled
        width = min(n, 256)
        while True:
            top = np.argpartition(centres.bound, n - width)[n - width :]
            threshold = centres.bound[top].min()  # every other bound is at most this
            values = centres.exact(top)
            best = int(np.argmax(values))
            if values[best] >= threshold or width == n:
                break
            width = min(n, width * 2)
        choice = int(top[best])
        if values[best] <= 0:
            break  # every remaining point sits on a centre: nothing is farther
        picked.append(choice)
        centres.add(choice)
        if progress is not None:
            progress(len(picked), size)
    return picked


def kmeans_pp_seeding(
    pool: VectorPool,
    size: int,
    *,
    rng: np.random.Generator,
    batch: int = 256,
    progress: Progress | None = None,
    cancelled: Cancelled | None = None,
) -> list[int]:
    """Indices of ``size`` pool vectors by k-means++ seeding (BADGE).

    The first is the vector of largest norm (as BADGE does); each next one is drawn with
    probability proportional to its squared distance to the nearest pick so far.
    """
    n = len(pool)
    size = min(size, n)
    if not size:
        return []
    centres = _Centres(pool, batch, cancelled)
    first = int(np.argmax(pool.sqnorms))
    picked = [first]
    centres.add(first)
    cumulative, total = _cumulative(centres.folded)
    while len(picked) < size:
        if cancelled is not None and cancelled():
            raise RunCancelled
        if not len(centres.recent):
            cumulative, total = _cumulative(centres.folded)  # the weights changed at a fold
        if total <= 0:
            break  # every remaining vector equals a pick
        draws = np.minimum(np.searchsorted(cumulative, rng.random(32) * total, side="right"), n - 1)
        stored = centres.folded[draws]
        true = centres.exact(draws)
        accept = rng.random(len(draws)) * stored < true
        if not accept.any():
            centres.flush()  # the bounds are loose: tighten them all
            continue
        choice = int(draws[int(np.argmax(accept))])
        picked.append(choice)
        centres.add(choice)
        if progress is not None:
            progress(len(picked), size)
    return picked


def _cumulative(weights: np.ndarray) -> tuple[np.ndarray, float]:
    finite = np.where(np.isfinite(weights), weights, 0).astype(np.float64)
    cumulative = np.cumsum(finite)
    return cumulative, float(cumulative[-1]) if len(cumulative) else 0.0


def activation_scores(pool: VectorPool, *, reference: VectorPool | None = None) -> np.ndarray:
    """Mean absolute activation of each vector (relative to the reference's, if given)."""
    scale = np.ones(pool.dim, dtype=np.float32)
    if reference is not None and len(reference):
        total = np.zeros(pool.dim, dtype=np.float64)
        for _, block in reference.iter_blocks():
            total += np.abs(block).sum(axis=0)
        mean = (total / len(reference)).astype(np.float32)
        scale = np.where(mean > 0, 1 / np.maximum(mean, 1e-12), 1).astype(np.float32)
    scores = np.empty(len(pool), dtype=np.float32)
    for start, block in pool.iter_blocks():
        scores[start : start + len(block)] = (np.abs(block) * scale).mean(axis=1)
    return scores


def smallest(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` smallest values, smallest first (ties: lower index first)."""
    k = min(k, len(values))
    if k == 0:
        return np.empty(0, dtype=np.int64)
    if k < len(values):
        part = np.argpartition(values, k - 1)[:k]
        # include every value tied with the k-th so that ties break by index, then cut
        kth = values[part].max()
        part = np.flatnonzero(values <= kth)
    else:
        part = np.arange(len(values))
    order = np.lexsort((part, values[part]))
    return part[order][:k]
