"""The miners' vector algorithms against brute-force versions and hand-built data."""

from __future__ import annotations

import numpy as np
import pytest

from lake.miners.vectors import (
    RunCancelled,
    VectorPool,
    activation_scores,
    k_center_greedy,
    kmeans_pp_seeding,
    nearest_distances,
    smallest,
)


def pool_of(rows: np.ndarray | list[list[float]], **kwargs: object) -> VectorPool:
    array = np.asarray(rows, dtype=np.float32)
    return VectorPool.from_arrays([array], dim=array.shape[1], **kwargs)  # type: ignore[arg-type]


def brute_k_center(points: np.ndarray, size: int, first: int) -> list[int]:
    picked = [first]
    best = ((points - points[first]) ** 2).sum(axis=1)
    while len(picked) < size:
        choice = int(np.argmax(best))
        picked.append(choice)
        best = np.minimum(best, ((points - points[choice]) ** 2).sum(axis=1))
    return picked


def test_pool_stores_float16_blocks_and_gathers_rows_in_any_order() -> None:
    rows = np.arange(40_000 * 3, dtype=np.float32).reshape(-1, 3) / 1000
    pool = VectorPool.from_arrays([rows[:25_000], rows[25_000:]], dim=3)
    assert len(pool) == 40_000 and all(b.dtype == np.float16 for b in pool.blocks)
    assert [len(b) for b in pool.blocks] == [16_384, 8_616, 15_000]  # at most 16,384 rows
    index = np.array([39_999, 0, 16_384, 25_001])
    expected = rows[index].astype(np.float16).astype(np.float32)
    assert np.array_equal(pool.rows(index), expected)
    assert np.allclose(pool.sqnorms[index], (expected**2).sum(axis=1), rtol=1e-6)


def test_pool_refuses_values_float16_cannot_hold() -> None:
    with pytest.raises(ValueError, match="not finite"):
        pool_of([[1e6, 0.0]])


def test_k_center_greedy_equals_the_brute_force_algorithm() -> None:
    rng = np.random.default_rng(7)
    points = rng.normal(size=(3_000, 16)).astype(np.float16).astype(np.float32)
    pool = pool_of(points)
    # a small batch exercises both the lazy search and the folds
    picked = k_center_greedy(pool, 60, rng=np.random.default_rng(3), batch=8)
    first = int(np.random.default_rng(3).integers(len(points)))
    assert picked == brute_k_center(points.astype(np.float64), 60, first)


def test_coreset_picks_the_spread_out_points_away_from_the_reference() -> None:
    # a dense cluster at the origin (the reference) and four outliers
    rng = np.random.default_rng(0)
    cluster = rng.normal(scale=0.01, size=(200, 2))
    outliers = np.array([[10.0, 0.0], [-10.0, 0.0], [0.0, 5.0], [0.0, -2.0]])
    pool = pool_of(np.vstack([cluster, outliers]))
    reference = pool_of([[0.0, 0.0]])
    picked = k_center_greedy(pool, 3, reference=reference, rng=rng)
    assert picked[0] in (200, 201)  # ±10 are equally far from the origin
    assert set(picked) == {200, 201, 202}


def test_k_center_greedy_stops_when_every_point_is_a_centre() -> None:
    pool = pool_of([[1.0, 1.0]] * 5 + [[2.0, 2.0]])
    picked = k_center_greedy(pool, 4, rng=np.random.default_rng(0))
    assert len(picked) == 2 and 5 in picked  # two distinct places, then nothing is farther


def test_nearest_distances_match_brute_force() -> None:
    rng = np.random.default_rng(1)
    points = rng.normal(size=(2_000, 8)).astype(np.float16).astype(np.float32)
    refs = rng.normal(size=(1_500, 8)).astype(np.float16).astype(np.float32)
    got = nearest_distances(pool_of(points), pool_of(refs))
    want = ((points[:, None, :] - refs[None, :, :]) ** 2).sum(axis=2).min(axis=1)
    assert np.allclose(got, want, atol=1e-3)


def test_cosine_pools_rank_by_angle_not_length() -> None:
    pool = pool_of([[100.0, 1.0], [0.1, 0.1], [0.0, 3.0]], normalize=True)
    reference = pool_of([[1.0, 0.0]], normalize=True)
    distances = nearest_distances(pool, reference)
    assert list(smallest(distances, 3)) == [0, 1, 2]  # long but aligned comes first


def test_kmeans_pp_seeding_starts_at_the_largest_norm_and_covers_the_clusters() -> None:
    rng = np.random.default_rng(2)
    centres = np.array([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0], [60.0, 60.0]])
    points = np.vstack([c + rng.normal(scale=0.1, size=(100, 2)) for c in centres])
    pool = pool_of(points)
    picked = kmeans_pp_seeding(pool, 4, rng=np.random.default_rng(5), batch=2)
    assert picked[0] == int(np.argmax((points.astype(np.float16).astype(np.float32) ** 2).sum(1)))
    assert sorted(p // 100 for p in picked) == [0, 1, 2, 3]  # one seed per cluster
    assert picked == kmeans_pp_seeding(pool, 4, rng=np.random.default_rng(5), batch=2)
    other = kmeans_pp_seeding(pool, 4, rng=np.random.default_rng(6), batch=2)
    assert other[0] == picked[0] and sorted(p // 100 for p in other) == [0, 1, 2, 3]


def test_kmeans_pp_seeding_never_picks_a_copy_of_a_pick() -> None:
    pool = pool_of([[3.0, 0.0]] * 50 + [[0.0, 1.0]] * 50 + [[1.0, 1.0]])
    picked = kmeans_pp_seeding(pool, 10, rng=np.random.default_rng(0))
    assert len(picked) == 3  # three distinct places: then every weight is zero
    assert {p // 50 for p in picked} == {0, 1, 2}


def test_activation_scores_and_the_reference_scale() -> None:
    pool = pool_of([[1.0, 1.0], [0.1, 0.2], [4.0, 0.0], [0.0, 0.0]])
    assert list(smallest(activation_scores(pool), 2)) == [3, 1]
    # relative to a reference that is large on the first dimension only
    reference = pool_of([[100.0, 1.0]])
    scores = activation_scores(pool, reference=reference)
    assert list(smallest(scores, 4)) == [3, 2, 1, 0]


def test_smallest_breaks_ties_by_index() -> None:
    values = np.array([2.0, 1.0, 1.0, 0.5, 1.0, 3.0])
    assert list(smallest(values, 3)) == [3, 1, 2]
    assert list(smallest(values, 10)) == [3, 1, 2, 4, 0, 5]
    assert list(smallest(np.array([]), 2)) == []


def test_a_cancelled_run_stops() -> None:
    pool = pool_of(np.random.default_rng(0).normal(size=(500, 4)))
    with pytest.raises(RunCancelled):
        k_center_greedy(pool, 100, rng=np.random.default_rng(0), cancelled=lambda: True)
    with pytest.raises(RunCancelled):
        kmeans_pp_seeding(pool, 100, rng=np.random.default_rng(0), cancelled=lambda: True)
