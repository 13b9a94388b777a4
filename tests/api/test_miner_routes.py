"""The miner routes in-process: create, list, inspect, run, results, reset, delete, errors."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

from apitools import Api  # type: ignore[import-not-found]

CLS = "CLASSIFICATION"


def records(n: int) -> list[dict[str, Any]]:
    return [
        {
            "type": "IMAGE",
            "metadata": {"uri": f"s3://b/{i}.jpg"},
            "tags": {"n": str(i)},
            "predictions": [
                {
                    "task_type": CLS,
                    "model_name": "m",
                    "class_names": ["a", "b"],
                    "logits": [float(i), 0.0],
                    "embeddings": {"layer": [float(i), float(i % 3)]},
                }
            ],
        }
        for i in range(n)
    ]


def ids_by_uri(api: Api, key: str | None = None) -> dict[str, str]:
    rows = api.post(
        "/api/datapoints/select", {"selectColumns": ["id", "metadata.uri"], "filters": []}, key=key
    )
    return {r["uri"]: r["id"] for r in rows}


def finished(api: Api, miner_id: str, *, key: str | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        task: dict[str, Any] = api.get(f"/api/tasks/miners/inspect/{miner_id}", key=key)["task"]
        if task["status"] in ("SUCCESS", "FAILURE") or time.monotonic() > deadline:
            return task
        time.sleep(0.05)


ENTROPY = {
    "display_name": "uncertain",
    "strategy": "ENTROPY",
    "size": 3,
    "model_name": "m",
    "select": {"filters": []},
}


def test_create_inspect_run_results_reset_delete(api: Api) -> None:
    assert api.ingest(records(6))["status"] == "SUCCEEDED"
    uri = ids_by_uri(api)
    created = api.post("/api/tasks/miners", ENTROPY)
    miner_id = created["miner_id"]
    # never run: a PENDING task, never "task": null (the reference client would crash)
    never = api.get(f"/api/tasks/miners/inspect/{miner_id}")
    assert never["task"]["status"] == "PENDING" and never["task"]["result"] is None

    doc = api.get(f"/api/tasks/miners/{miner_id}")
    assert doc["_id"] == miner_id and doc["status"] == "pending"
    assert {k: doc[k] for k in ENTROPY} == ENTROPY
    listed = api.get("/api/tasks/miners")
    assert [(m["_id"], m["display_name"]) for m in listed] == [(miner_id, "uncertain")]

    started = api.post("/api/tasks/miner/run", {"miner_id": miner_id})
    assert started["task"]["status"] == "PENDING" and started["task"]["task_id"]
    task = finished(api, miner_id)
    assert task["status"] == "SUCCESS" and task["result_size"] == 3
    expected = [uri[f"s3://b/{i}.jpg"] for i in range(3)]  # logits (i, 0): i = 0 is uniform
    assert task["result"] == expected
    assert task["started_at"] <= task["done_at"]
    assert api.get(f"/api/tasks/miners/{miner_id}")["status"] == "done"
    assert api.get(f"/api/tasks/miners/results/{miner_id}") == expected
    response = api.client.get(
        f"/api/tasks/miners/results/{miner_id}", params={"as_csv": "true"}, headers=api.headers()
    )
    assert response.headers["content-type"].startswith("text/csv")
    assert list(csv.reader(io.StringIO(response.text))) == [["datapoint_id"]] + [
        [i] for i in expected
    ]

    # the results go into a dataset in one call
    dataset = api.post("/api/dataset", {"displayName": "to label"})
    api.post(f"/api/dataset/{dataset['uuid']}/add", {"datapointIds": task["result"]})
    members = api.client.get(f"/api/dataset/{dataset['uuid']}/datapoints", headers=api.headers())
    assert sorted(r["id"] for r in members.json()) == sorted(expected)

    reset = api.post("/api/tasks/miner/reset", {"miner_id": miner_id})
    assert reset["task"]["status"] == "PENDING" and reset["task"]["result"] is None
    assert api.get(f"/api/tasks/miners/results/{miner_id}") == []

    assert api.post("/api/tasks/miners/delete", {"miner_id": miner_id}) == {"deleted": miner_id}
    assert api.get("/api/tasks/miners") == []
    gone = api.client.get(f"/api/tasks/miners/inspect/{miner_id}", headers=api.headers())
    assert gone.status_code == 404
    assert gone.json() == {"error": {"message": f"miner {miner_id} not found"}}


def test_posting_an_id_replaces_the_configuration_and_drops_results(api: Api) -> None:
    assert api.ingest(records(4))["status"] == "SUCCEEDED"
    miner_id = api.post("/api/tasks/miners", ENTROPY)["miner_id"]
    api.post("/api/tasks/miner/run", {"miner_id": miner_id})
    assert finished(api, miner_id)["result_size"] == 3
    # the UI posts the document it fetched back, changed, with its _id
    fetched = api.get(f"/api/tasks/miners/{miner_id}")
    again = api.post("/api/tasks/miners", {**fetched, "size": 1, "duplication_factor": 2})
    assert again == {"miner_id": miner_id}
    doc = api.get(f"/api/tasks/miners/{miner_id}")
    assert doc["size"] == 1 and doc["task"]["status"] == "PENDING" and doc["status"] == "pending"
    assert doc["duplication_factor"] == 2  # a legacy key: kept and echoed
    assert doc["created_at"] == fetched["created_at"] and doc["updated_at"] > fetched["updated_at"]
    assert api.get("/api/tasks/miners") == [doc]
    api.post("/api/tasks/miner/run", {"miner_id": miner_id})
    assert finished(api, miner_id)["result_size"] == 1


def test_a_failed_run_says_why(api: Api) -> None:
    assert api.ingest(records(3))["status"] == "SUCCEEDED"
    miner_id = api.post(
        "/api/tasks/miners",
        {
            "display_name": "c",
            "strategy": "CORESET",
            "size": 2,
            "model_name": "m:other",
            "select": {"filters": []},
        },
    )["miner_id"]
    api.post("/api/tasks/miner/run", {"miner_id": miner_id})
    task = finished(api, miner_id)
    assert task["status"] == "FAILURE" and task["result"] is None
    assert task["message"].startswith("no EMBEDDINGS feature vectors of model 'm:other'")
    assert api.get(f"/api/tasks/miners/{miner_id}")["status"] == "error"


def test_bad_requests_get_clear_errors(api: Api) -> None:
    def post(path: str, body: Any) -> tuple[int, str]:
        response = api.client.post(path, json=body, headers=api.headers())
        return response.status_code, response.json()["error"]["message"]

    status, message = post("/api/tasks/miners", {**ENTROPY, "strategy": "MAGIC"})
    assert status == 400 and message.startswith("strategy must be one of RANDOM")
    status, message = post(
        "/api/tasks/miners", {**ENTROPY, "select": {"filters": [{"left": "x", "op": "="}]}}
    )
    assert status == 400 and message.startswith("select: filters[0]")
    status, message = post("/api/tasks/miners", [1, 2])
    assert status == 400
    status, message = post("/api/tasks/miner/run", {})
    assert status == 400 and "miner_id" in message
    status, message = post("/api/tasks/miner/run", {"miner_id": "0" * 24})  # an ObjectId
    assert (status, message) == (404, f"miner {'0' * 24} not found")
    status, message = post(
        "/api/tasks/miners", {**ENTROPY, "_id": "6a1e1ec1-5b3c-4a8b-9d1e-6f1f7f0a0a0a"}
    )
    assert status == 404
    assert api.get("/api/tasks/miners") == []  # nothing was created by any of these
    for path in ("/api/tasks/miners", "/api/tasks/miners/inspect/x"):
        assert api.client.get(path).status_code == 401


def test_organizations_never_see_each_others_miners(api: Api) -> None:
    assert api.ingest(records(3))["status"] == "SUCCEEDED"
    assert api.ingest(records(2), key=api.other_key)["status"] == "SUCCEEDED"
    ours = api.post("/api/tasks/miners", {**ENTROPY, "strategy": "RANDOM", "size": 10})
    assert api.get("/api/tasks/miners", key=api.other_key) == []
    for method, path, body in [
        ("get", f"/api/tasks/miners/{ours['miner_id']}", None),
        ("get", f"/api/tasks/miners/inspect/{ours['miner_id']}", None),
        ("post", "/api/tasks/miner/run", {"miner_id": ours["miner_id"]}),
        ("post", "/api/tasks/miner/reset", {"miner_id": ours["miner_id"]}),
        ("post", "/api/tasks/miners/delete", {"miner_id": ours["miner_id"]}),
    ]:
        response = getattr(api.client, method)(
            path, headers=api.headers(api.other_key), **({"json": body} if body else {})
        )
        assert response.status_code == 404, path
    api.post("/api/tasks/miner/run", {"miner_id": ours["miner_id"]})
    task = finished(api, ours["miner_id"])
    assert sorted(task["result"]) == sorted(ids_by_uri(api).values())  # our 3, not their 2
