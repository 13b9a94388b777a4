"""The published ``dioptra`` 1.0.29 client, unchanged, against a Shoal server on a real socket."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apitools import live_server  # type: ignore[import-not-found]

from lake import Lake
from lake.keys import ApiKeys

CLS = "CLASSIFICATION"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    lake = Lake(str(tmp_path_factory.mktemp("dioptra-lake")))
    _, key = ApiKeys(lake).create("acme")
    with live_server(lake) as url:
        yield {"url": url, "key": key}


@pytest.fixture
def dioptra(server: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The client's modules, configured for the server (some read the endpoint at import)."""
    monkeypatch.setenv("DIOPTRA_API_KEY", server["key"])
    monkeypatch.setenv("DIOPTRA_APP_ENDPOINT", server["url"])
    monkeypatch.setenv("DIOPTRA_API_ENDPOINT", server["url"] + "/events")
    utils = importlib.import_module("dioptra.lake.utils")
    datasets = importlib.import_module("dioptra.lake.datasets")
    datasets = importlib.reload(datasets)  # DIOPTRA_APP_ENDPOINT is read at import time
    assert os.environ["DIOPTRA_APP_ENDPOINT"] == datasets.DIOPTRA_APP_ENDPOINT
    return utils, datasets


def records(prefix: str, n: int, *, nan: bool = True) -> list[dict[str, Any]]:
    """Records as a client builds them; ``nan``: with a NaN (json.dumps writes a bare NaN)."""
    return [
        {
            "metadata": {"uri": f"s3://b/{prefix}/{i}.jpg"},
            "type": "IMAGE",
            "tags": {"split": "val" if i % 2 else "train", "batch": prefix},
            "groundtruths": [{"task_type": CLS, "class_name": "cat" if i % 2 else "dog"}],
            "predictions": [
                {
                    "task_type": CLS,
                    "model_name": "m",
                    "class_names": ["cat", "dog"],
                    "logits": [float(i % 3), 0.5],
                    "embeddings": {"avgpool": [0.5, float("nan") if nan else 1.0]},
                }
            ],
        }
        for i in range(n)
    ]


def in_batch(prefix: str) -> list[dict[str, Any]]:
    return [
        {"left": "tags.name", "op": "=", "right": "batch"},
        {"left": "tags.value", "op": "=", "right": prefix},
    ]


def test_upload_wait_and_select(dioptra: Any) -> None:
    utils, _ = dioptra
    started = utils.upload_to_lake(records("up", 10))
    assert started["status"] == "RUNNING"
    done = utils.wait_for_upload(started)
    assert done["status"] == "SUCCEEDED" and done["output"]["datapoints_created"] == 10
    frame = utils.select_datapoints(filters=in_batch("up"), fields=["id", "metadata.uri", "tags.*"])
    assert len(frame) == 10 and set(frame.columns) == {"id", "uri", "tags"}
    limited = utils.select_datapoints(
        filters=in_batch("up"), limit=3, order_by="metadata.uri", desc=True
    )
    assert list(limited["metadata"].map(lambda m: m["uri"])) == [
        "s3://b/up/9.jpg",
        "s3://b/up/8.jpg",
        "s3://b/up/7.jpg",
    ]
    ids = list(frame["id"])
    predictions = utils.select_predictions(
        filters=[{"left": "datapoint", "op": "in", "right": ids}],
        fields=["*", "feature_vectors.*"],
    )
    assert len(predictions) == 10 and all(len(v) == 2 for v in predictions["feature_vectors"])
    groundtruths = utils.select_groundtruths(
        filters=[{"left": "class_name", "op": "=", "right": "cat"}]
    )
    assert len(groundtruths) == 5
    assert len(utils.select_bboxes(filters=[])) == 0


def test_disable_batching_and_stream_to_lake(dioptra: Any) -> None:
    utils, _ = dioptra
    utils.wait_for_upload(utils.upload_to_lake(records("single", 3), disable_batching=True))
    # stream_to_lake sends host: api.dioptra.ai; requests refuses NaN in its JSON bodies
    response = utils.stream_to_lake(records("stream", 4, nan=False))
    assert "errorMessage" not in response
    utils.wait_for_upload(response["id"])
    assert len(utils.select_datapoints(filters=in_batch("single"))) == 3
    assert len(utils.select_datapoints(filters=in_batch("stream"))) == 4


def test_errors_reach_the_client_as_messages(dioptra: Any) -> None:
    utils, _ = dioptra
    with pytest.raises(Exception, match="Api Error: filters\\[0\\]: unknown column 'nope'"):
        utils.select_datapoints(filters=[{"left": "nope", "op": "=", "right": 1}])
    with pytest.raises(Exception, match="Api Error: filters\\[0\\]: unknown operator"):
        utils.select_datapoints(filters=[{"left": "id", "op": "~", "right": 1}])


def test_deletes(dioptra: Any) -> None:
    utils, _ = dioptra
    utils.wait_for_upload(utils.upload_to_lake(records("del", 6)))
    ids = list(utils.select_datapoints(filters=in_batch("del"), fields=["id"])["id"])
    gone = utils.delete_predictions(filters=[{"left": "datapoint", "op": "=", "right": ids[0]}])
    assert len(gone) == 1 and gone[0]["datapoint"] == ids[0]
    gone = utils.delete_groundtruths(filters=[{"left": "datapoint", "op": "=", "right": ids[1]}])
    assert len(gone) == 1
    gone = utils.delete_datapoints(filters=[{"left": "id", "op": "in", "right": ids[2:4]}])
    assert sorted(d["id"] for d in gone) == sorted(ids[2:4])
    assert len(utils.select_datapoints(filters=in_batch("del"))) == 4


def test_datasets(dioptra: Any) -> None:
    utils, datasets = dioptra
    utils.wait_for_upload(utils.upload_to_lake(records("ds", 5)))
    ids = list(utils.select_datapoints(filters=in_batch("ds"), fields=["id"])["id"])
    dataset = datasets.Dataset()
    dataset.create("compat")
    assert dataset.dataset_id
    dataset.add_datapoints(ids)
    commit = dataset.commit("all five")
    dataset.remove_datapoints(ids[:2])
    assert len(dataset.download_datapoints()) == 3
    history = dataset.history()
    assert [v["committed"] for v in history] == [False, True]
    dataset.checkout(commit)
    assert len(dataset.download_datapoints()) == 5
    names = [d.dataset_name for d in datasets.list_datasets()]
    assert "compat" in names
    again = datasets.Dataset()
    again.get_from_name("compat")
    assert again.dataset_id == dataset.dataset_id
    again.get_from_uuid(dataset.dataset_id)
    missing = datasets.Dataset()
    with pytest.raises(ValueError):
        missing.get_from_uuid("01a2019a-be43-7000-8000-000000000000")
    dataset.delete()
    assert "compat" not in [d.dataset_name for d in datasets.list_datasets()]


def test_wrong_key(dioptra: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    utils, _ = dioptra
    monkeypatch.setenv("DIOPTRA_API_KEY", "shoal_wrong")
    with pytest.raises(Exception, match="Api Error: Unauthorized"):
        utils.select_datapoints(filters=[])


def test_client_sample_file(dioptra: Any) -> None:
    utils, _ = dioptra
    sample = Path(__file__).parents[1] / "data" / "sample.ndjson"
    import json

    lines = [json.loads(line) for line in sample.read_text().splitlines()]
    assert utils.wait_for_upload(utils.upload_to_lake(lines))["status"] == "SUCCEEDED"


def test_miners(dioptra: Any) -> None:
    utils, _ = dioptra
    # every miner module reads DIOPTRA_APP_ENDPOINT when it is imported
    names = [
        "base_miner",
        "entropy_miner",
        "weighted_entropy_miner",
        "variance_miner",
        "activation_miner",
        "coreset_miner",
        "knn_miner",
        "badge_miner",
        "random_miner",
    ]
    modules = {n: importlib.reload(importlib.import_module(f"dioptra.miners.{n}")) for n in names}
    miners = importlib.reload(importlib.import_module("dioptra.miners"))
    batch = [
        {
            "metadata": {"uri": f"s3://b/mine/{i}.jpg"},
            "type": "IMAGE",
            "tags": {"batch": "mine", "split": "train" if i < 2 else "pool"},
            "predictions": [
                {
                    "task_type": CLS,
                    "model_name": "net",
                    "class_names": ["cat", "dog"],
                    "logits": [float(i), 0.0],
                    "metrics": {"weighted_entropy": float(i % 3)},
                    "embeddings": {"avgpool": [float(i * i), 1.0]},
                    "grad_embeddings": [float(i // 4), float(i % 4 == 0)],
                },
                {
                    "task_type": CLS,
                    "model_name": "mc",
                    "class_names": ["cat", "dog"],
                    "logits": [[0.0, 0.0], [float(i), -float(i)]],  # MC-dropout samples
                },
            ],
        }
        for i in range(8)
    ]
    utils.wait_for_upload(utils.upload_to_lake(batch))
    frame = utils.select_datapoints(filters=in_batch("mine"), fields=["id", "metadata.uri"])
    by_index = {
        int(uri.split("/")[-1][:-4]): i for uri, i in zip(frame["uri"], frame["id"], strict=True)
    }
    pool = [{"left": "id", "op": "in", "right": [by_index[i] for i in range(2, 8)]}]

    entropy = modules["entropy_miner"].EntropyMiner(
        display_name="uncertain", size=2, select_filters=in_batch("mine"), model_name="net"
    )
    assert entropy.get_status() == "PENDING"  # never run: a task, not null
    entropy.run()
    assert entropy.get_results() == [by_index[0], by_index[1]]
    assert entropy.get_status() == "SUCCESS"
    assert entropy.get_config()["strategy"] == "ENTROPY"

    coreset = modules["coreset_miner"].CoresetMiner(
        display_name="spread",
        size=2,
        select_filters=in_batch("mine"),
        model_name="net:avgpool",
        select_reference_filters=[{"left": "id", "op": "=", "right": by_index[0]}],
    )
    coreset.run()
    assert coreset.get_results() == [by_index[7], by_index[5]]  # x = 49, then 25 (24 from 49)

    knn = modules["knn_miner"].KNNMiner(
        display_name="near",
        size=2,
        select_filters=in_batch("mine"),
        model_name="net:avgpool",
        select_reference_filters=[{"left": "id", "op": "=", "right": by_index[3]}],
    )
    knn.run()
    assert knn.get_results() == [by_index[2], by_index[4]]  # x = 9: 4 then 16, itself left out

    weighted = modules["weighted_entropy_miner"].WeightedEntropyMiner(
        display_name="weighted", size=1, select_filters=in_batch("mine"), model_name="net"
    )
    weighted.run()
    assert weighted.get_results() == [min(by_index[2], by_index[5])]  # 2 = 5 % 3: lower id wins
    variance = modules["variance_miner"].VarianceMiner(
        display_name="spread", size=2, select_filters=in_batch("mine"), model_name="mc"
    )
    variance.run()
    assert variance.get_results() == [by_index[7], by_index[6]]
    activation = modules["activation_miner"].ActivationMiner(
        display_name="quiet", size=2, select_filters=in_batch("mine"), model_name="net:avgpool"
    )
    activation.run()
    assert activation.get_results() == [by_index[0], by_index[1]]  # (0, 1), then (1, 1)
    badge = modules["badge_miner"].BadgeMiner(
        display_name="badge", size=4, select_filters=in_batch("mine"), model_name="net"
    )
    badge.run()
    seeds = badge.get_results()
    # gradients (0, 1), (0, 0) x3, (1, 1), (1, 0) x3: four places, one seed each
    places = {0: "a", 1: "b", 2: "b", 3: "b", 4: "c", 5: "d", 6: "d", 7: "d"}
    index_of = {v: k for k, v in by_index.items()}
    assert sorted(places[index_of[s]] for s in seeds) == ["a", "b", "c", "d"]

    rand = modules["random_miner"].RandomMiner(
        display_name="any", size=3, select_filters=pool, select_limit=5
    )
    rand.run()
    results = rand.get_results()
    first_five = sorted(by_index[i] for i in range(2, 8))[:5]  # select_limit, in id order
    assert len(set(results)) == 3 and set(results) <= set(first_five)
    rand.reset()
    assert rand.get_status() == "PENDING"

    listed = {m.miner_id: m.miner_name for m in miners.list_miners()}
    assert listed[entropy.miner_id] == "uncertain" and listed[rand.miner_id] == "any"
    for miner in (entropy, coreset, knn, rand, weighted, variance, activation, badge):
        miner.delete()
    assert [m for m in miners.list_miners() if m.miner_id in listed] == []
