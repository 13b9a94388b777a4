"""Miners on a local and an S3 lake: each strategy on hand-built data, the run lifecycle, errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from lake import InputError, Lake, NotFoundError
from lake.miners import MinerConfig, MinerRunner, Miners, TaskStatus

CLS = "CLASSIFICATION"
POOL = [
    {"left": "tags.name", "op": "=", "right": "split"},
    {"left": "tags.value", "op": "=", "right": "pool"},
]
TRAIN = [
    {"left": "tags.name", "op": "=", "right": "split"},
    {"left": "tags.value", "op": "=", "right": "train"},
]
# 2-d embeddings: pool points 0-7 (all on the x axis but 2 and 7), train points 8-9 at the origin
POSITIONS = [
    [0.5, 0.0],
    [1.0, 0.0],
    [0.0, 5.0],
    [3.0, 0.0],
    [6.0, 0.0],
    [9.0, 0.0],
    [-4.0, 0.0],
    [0.0, 0.2],
    [0.0, 0.0],
    [0.1, 0.0],
]
# gradient embeddings: three tight clusters (BADGE must seed each once)
GRADS = [[10.0, 0.0]] * 3 + [[0.0, 10.0]] * 2 + [[-7.0, -7.0]] * 3 + [[1.0, 1.0]] * 2


def record(i: int) -> dict[str, Any]:
    return {
        "type": "IMAGE",
        "metadata": {"uri": f"s3://bucket/{i}.jpg"},
        "tags": {"n": str(i), "split": "pool" if i < 8 else "train"},
        "predictions": [
            {
                "task_type": CLS,
                "model_name": "m",
                "class_names": ["a", "b", "c"],
                "logits": [float(i), 0.0, 0.0],  # entropy falls as i grows
                "metrics": {"weighted_entropy": float((i * 3) % 5)},
                "embeddings": {"layer": POSITIONS[i]},
                "grad_embeddings": GRADS[i],
            },
            {
                "task_type": CLS,
                "model_name": "mc",
                "class_names": ["a", "b"],
                # MC-dropout samples: their spread (variance) grows with i
                "logits": [[0.0, 0.0], [float(i), -float(i)]],
            },
        ],
    }


@pytest.fixture
def points(lake: Lake, ingest: Any) -> list[str]:
    """Datapoint ids by index 0-9."""
    assert ingest([record(i) for i in range(10)]).status == "SUCCEEDED"
    by_n = {
        int(r["value"]): r["datapoint"] for r in lake.read("tags").to_pylist() if r["name"] == "n"
    }
    return [by_n[i] for i in range(10)]


@pytest.fixture
def runner(lake: Lake) -> Iterator[MinerRunner]:
    runner = MinerRunner(lake)
    yield runner
    runner.shutdown()


def config(**payload: Any) -> MinerConfig:
    return MinerConfig.parse({"display_name": "m", "select": {"filters": POOL}, **payload})


def mined(lake: Lake, runner: MinerRunner, **payload: Any) -> list[str]:
    miner = Miners(lake).create(config(**payload))
    runner.run(miner.id, organization_id=None)
    done = runner.wait(miner.id, organization_id=None, timeout=60)
    assert done.task.status is TaskStatus.SUCCESS, done.task.message
    assert done.task.result is not None
    return done.task.result


def failure(lake: Lake, runner: MinerRunner, **payload: Any) -> str:
    miner = Miners(lake).create(config(**payload))
    runner.run(miner.id, organization_id=None)
    done = runner.wait(miner.id, organization_id=None, timeout=60)
    assert done.task.status is TaskStatus.FAILURE and done.task.result is None
    assert done.task.message
    return done.task.message


def test_entropy_ranks_the_most_uncertain_first(
    lake: Lake, runner: MinerRunner, points: list[str]
) -> None:
    assert mined(lake, runner, strategy="ENTROPY", size=3, model_name="m") == points[:3]


def test_weighted_entropy_and_its_ui_spelling(
    lake: Lake, runner: MinerRunner, points: list[str]
) -> None:
    # weighted_entropy = (3i mod 5) over the pool 0..7: 4 (i=3), 3 (i=1, 6), 2 (i=4) ...
    expected = [points[3], *sorted([points[1], points[6]]), points[4]]
    assert mined(lake, runner, strategy="WEIGHTED ENTROPY", size=4, model_name="m") == expected
    assert mined(lake, runner, strategy="WEIGHTED_ENTROPY", size=4, model_name="m") == expected


def test_variance_ranks_the_widest_mc_dropout_spread_first(
    lake: Lake, runner: MinerRunner, points: list[str]
) -> None:
    assert mined(lake, runner, strategy="VARIANCE", size=2, model_name="mc") == [
        points[7],
        points[6],
    ]


def test_random_is_reproducible_and_seeded(
    lake: Lake, runner: MinerRunner, points: list[str]
) -> None:
    miner = Miners(lake).create(config(strategy="RANDOM", size=5))
    results = []
    for _ in range(2):
        runner.run(miner.id, organization_id=None)
        results.append(runner.wait(miner.id, organization_id=None, timeout=60).task.result)
    assert results[0] == results[1]
    assert results[0] is not None and len(set(results[0])) == 5
    assert set(results[0]) <= set(points[:8])
    seeded = [mined(lake, runner, strategy="RANDOM", size=8, seed=s) for s in (1, 1, 2)]
    assert seeded[0] == seeded[1] and sorted(seeded[0]) == sorted(points[:8])
    assert seeded[0] != seeded[2]  # 8! orders: two seeds agreeing is a 1-in-40,320 chance


def test_coreset_picks_spread_out_points_beyond_the_reference(
    lake: Lake, runner: MinerRunner, points: list[str]
) -> None:
    result = mined(
        lake,
        runner,
        strategy="CORESET",
        size=3,
        model_name="m:layer",
        select_reference={"filters": TRAIN},
    )
    # from the origin (9, 0) is farthest; then (0, 5) at 5; then (-4, 0) at 4, beating (6, 0),
    # now 3 from (9, 0), and (3, 0) at 2.9
    assert result == [points[5], points[2], points[6]]


def test_nearest_neighbors_are_the_closest_to_the_reference_and_not_it(
    lake: Lake, runner: MinerRunner, points: list[str]
) -> None:
    result = mined(
        lake,
        runner,
        strategy="NEAREST_NEIGHBORS",
        size=3,
        model_name="m:layer",
        metric="euclidean",
        select={"filters": []},  # the reference datapoints are in the pool: left out
        select_reference={"filters": TRAIN},
    )
    assert result == [points[7], points[0], points[1]]


def test_cosine_metric_ranks_by_angle(lake: Lake, runner: MinerRunner, points: list[str]) -> None:
    def nearest(metric: str) -> list[str]:
        return mined(
            lake,
            runner,
            strategy="NEAREST_NEIGHBORS",
            size=1,
            model_name="m:layer",
            metric=metric,
            select_reference={"filters": [{"left": "id", "op": "=", "right": points[7]}]},
            select={"filters": [{"left": "id", "op": "in", "right": [points[0], points[2]]}]},
        )

    # from (0, 0.2): (0.5, 0) is nearer, (0, 5) points the same way
    assert nearest("euclidean") == [points[0]]
    assert nearest("cosine") == [points[2]]


def test_activation_returns_the_least_activated(
    lake: Lake, runner: MinerRunner, points: list[str]
) -> None:
    result = mined(lake, runner, strategy="ACTIVATION", size=2, model_name="m:layer")
    assert result == [points[7], points[0]]  # mean |v|: 0.1, then 0.25, 0.5 ...


def test_badge_seeds_differ(lake: Lake, runner: MinerRunner, points: list[str]) -> None:
    result = mined(lake, runner, strategy="BADGE", size=3, model_name="m")
    clusters = {0: "x", 1: "x", 2: "x", 3: "y", 4: "y", 5: "z", 6: "z", 7: "z", 8: "w", 9: "w"}
    assert result[0] in points[:5]  # a largest norm (10, against 9.9 and 1.4)
    assert sorted(clusters[points.index(p)] for p in result) == ["x", "y", "z"]


def test_select_limit_and_order_are_honoured(
    lake: Lake, runner: MinerRunner, points: list[str]
) -> None:
    result = mined(
        lake,
        runner,
        strategy="ENTROPY",
        size=5,
        model_name="m",
        select={"filters": POOL, "limit": 3, "order_by": "metadata.uri", "desc": True},
    )
    # the pool's last three by uri (7, 6, 5), most uncertain (lowest i) first
    assert result == [points[5], points[6], points[7]]


def test_runs_that_cannot_work_fail_with_a_message(
    lake: Lake, runner: MinerRunner, points: list[str], ingest: Any
) -> None:
    message = failure(lake, runner, strategy="CORESET", size=2, model_name="nope:layer")
    assert "no EMBEDDINGS feature vectors of model 'nope:layer'" in message
    assert "'m:layer'" in message  # names the models that have vectors
    message = failure(lake, runner, strategy="ENTROPY", size=2, model_name="nope")
    assert message == "no predictions of model 'nope' among the 8 candidate datapoints"
    message = failure(
        lake,
        runner,
        strategy="RANDOM",
        size=2,
        select={"filters": [{"left": "tags.name", "op": "=", "right": "absent"}]},
    )
    assert "select matched no datapoints" in message
    message = failure(lake, runner, strategy="WEIGHTED_ENTROPY", size=2, model_name="mc")
    assert "has metrics.weighted_entropy" in message
    # one more pool datapoint whose embedding has three values
    odd = record(0) | {"tags": {"split": "pool"}}
    odd["predictions"][0]["embeddings"] = {"layer": [1.0, 2.0, 3.0]}
    assert ingest([odd]).status == "SUCCEEDED"
    message = failure(lake, runner, strategy="CORESET", size=2, model_name="m:layer")
    assert "differing lengths (2 and 3)" in message or "differing lengths (3 and 2)" in message


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"strategy": "SMART"}, "strategy must be one of RANDOM, ENTROPY"),
        ({"strategy": "RANDOM", "size": 0}, "size must be a whole number from 1"),
        ({"strategy": "RANDOM", "size": "5"}, "size must be a whole number"),
        ({"strategy": "CORESET", "size": 5}, "CORESET needs model_name"),
        (
            {"strategy": "CORESET", "size": 5, "model_name": "m", "metric": "manhattan"},
            "metric must be euclidean or cosine",
        ),
        (
            {"strategy": "NEAREST_NEIGHBORS", "size": 5, "model_name": "m"},
            "NEAREST_NEIGHBORS needs a reference set",
        ),
        (
            {
                "strategy": "NEAREST_NEIGHBORS",
                "size": 5,
                "model_name": "m",
                "select_reference": {"filters": None},
            },
            "NEAREST_NEIGHBORS needs a reference set",
        ),
        (
            {
                "strategy": "RANDOM",
                "size": 5,
                "select": {"filters": [{"left": "nam", "op": "=", "right": 1}]},
            },
            "select: filters[0]: unknown column 'nam'",
        ),
        (
            {"strategy": "RANDOM", "size": 5, "select": {"filters": [], "limit": -1}},
            "select: limit must not be negative",
        ),
        (
            {"strategy": "RANDOM", "size": 5, "select": {"filters": [], "where": 1}},
            "select: unknown key(s) where",
        ),
        (
            {"strategy": "ACTIVATION", "size": 5, "model_name": "m", "embeddings_field": "x"},
            "embeddings_field must be one of embeddings, logits, grad_embeddings",
        ),
    ],
)
def test_bad_configurations_are_refused_at_creation(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError) as caught:
        MinerConfig.parse({"display_name": "m", **payload})
    assert message in str(caught.value)


def test_lifecycle_reset_update_delete(lake: Lake, runner: MinerRunner, points: list[str]) -> None:
    miners = Miners(lake)
    miner = miners.create(config(strategy="ENTROPY", size=2, model_name="m"))
    assert miners.get(miner.id).task.status is TaskStatus.PENDING
    assert miners.get(miner.id).task.result is None
    runner.run(miner.id, organization_id=None)
    done = runner.wait(miner.id, organization_id=None, timeout=60)
    assert done.task.status is TaskStatus.SUCCESS
    assert done.task.started_at is not None and done.task.done_at is not None
    assert done.task.result == points[:2]

    reset = runner.reset(miner.id, organization_id=None)
    assert (reset.task.id, reset.task.status, reset.task.result) == (None, TaskStatus.PENDING, None)
    assert miners.get(miner.id).task.result is None

    updated = runner.update(
        miner.id, config(strategy="ENTROPY", size=1, model_name="m"), organization_id=None
    )
    assert updated.config.size == 1 and updated.created_at == miner.created_at
    runner.run(miner.id, organization_id=None)
    assert runner.wait(miner.id, organization_id=None, timeout=60).task.result == points[:1]

    assert [m.id for m in miners.list_miners()] == [miner.id]
    runner.delete(miner.id, organization_id=None)
    with pytest.raises(NotFoundError, match=f"miner {miner.id} not found"):
        miners.get(miner.id)
    with pytest.raises(NotFoundError):
        runner.run(miner.id, organization_id=None)
    with pytest.raises(NotFoundError, match="miner not-an-id not found"):
        miners.get("not-an-id")


def test_a_superseded_run_records_nothing(lake: Lake, points: list[str]) -> None:
    miners = Miners(lake)
    miner = miners.create(config(strategy="RANDOM", size=2))
    first = miners.request_run(miner.id)
    assert first.task.status is TaskStatus.PENDING and first.task.id is not None
    assert miners.start(miner.id, first.task.id) is not None
    second = miners.request_run(miner.id)
    assert miners.succeed(miner.id, first.task.id, [points[0]]) is None  # the old run
    assert miners.get(miner.id).task == second.task
    miners.reset(miner.id)
    assert second.task.id is not None
    assert miners.fail(miner.id, second.task.id, "late") is None
    assert miners.get(miner.id).task.id is None


def test_a_restarted_runner_resumes_queued_and_started_runs(lake: Lake, points: list[str]) -> None:
    miners = Miners(lake)
    queued = miners.create(config(strategy="ENTROPY", size=1, model_name="m"))
    started = miners.create(config(strategy="RANDOM", size=3))
    miners.request_run(queued.id)
    task = miners.request_run(started.id).task
    assert task.id is not None
    miners.start(started.id, task.id)  # as if the process died here
    runner = MinerRunner(lake)
    try:
        assert sorted(runner.start()) == sorted([queued.id, started.id])
        first = runner.wait(queued.id, organization_id=None, timeout=60)
        second = runner.wait(started.id, organization_id=None, timeout=60)
    finally:
        runner.shutdown()
    assert first.task.status is TaskStatus.SUCCESS and first.task.result == points[:1]
    assert second.task.status is TaskStatus.SUCCESS and second.task.id == task.id
    assert second.task.result is not None and len(second.task.result) == 3


def test_miners_belong_to_one_organization(
    lake: Lake, runner: MinerRunner, points: list[str], ingest: Any
) -> None:
    assert ingest([record(0)], org="other").status == "SUCCEEDED"
    ours = Miners(lake, organization_id="default")
    theirs = Miners(lake, organization_id="other")
    miner = ours.create(config(strategy="RANDOM", size=20, select={"filters": []}))
    assert theirs.list_miners() == []
    with pytest.raises(NotFoundError):
        theirs.get(miner.id)
    with pytest.raises(NotFoundError):
        runner.run(miner.id, organization_id="other")
    runner.run(miner.id, organization_id="default")
    result = runner.wait(miner.id, organization_id="default", timeout=60).task.result
    assert result is not None and sorted(result) == sorted(points)  # not the other org's one
