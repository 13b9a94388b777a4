"""Tenancy as a property: random sequences of operations by two organizations, through the
routes; after every step each one sees, counts and changes exactly its own rows."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from apitools import Api, make_api  # type: ignore[import-not-found]
from hypothesis import given, settings
from hypothesis import strategies as st

from lake import Lake

ORGS = ("acme", "other")
operations = st.lists(
    st.tuples(
        st.sampled_from(
            ["ingest", "update_other", "delete_own", "dataset_other", "sql", "miner", "select"]
        ),
        st.sampled_from(ORGS),
        st.integers(1, 4),
    ),
    min_size=1,
    max_size=10,
)


class World:
    """The server and what each organization should see."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.keys = {"acme": api.key, "other": api.other_key}
        self.uris: dict[str, set[str]] = {org: set() for org in ORGS}
        self.counter = 0

    def call(self, method: str, path: str, org: str, body: Any = None) -> Any:
        response = self.api.client.request(
            method, path, json=body, headers={"x-api-key": self.keys[org]}
        )
        return response

    def ids(self, org: str) -> dict[str, str]:
        rows = self.api.post(
            "/api/datapoints/select",
            {"selectColumns": ["id", "metadata.uri"], "filters": []},
            key=self.keys[org],
        )
        return {r["uri"]: r["id"] for r in rows}

    def check(self) -> None:
        for org in ORGS:
            seen = self.ids(org)
            assert set(seen) == self.uris[org], org
            count = self.api.post(
                "/api/sql", {"query": "SELECT count(*) AS n FROM datapoints"}, key=self.keys[org]
            )
            assert count == [{"n": len(self.uris[org])}]

    def step(self, op: str, org: str, n: int) -> None:
        other = ORGS[1 - ORGS.index(org)]
        if op == "ingest":
            records = []
            for _ in range(n):
                self.counter += 1
                uri = f"s3://{org}/{self.counter}.jpg"
                records.append({"type": "IMAGE", "metadata": {"uri": uri}, "tags": {"o": org}})
                self.uris[org].add(uri)
            execution = self.api.ingest(records, key=self.keys[org])
            assert execution["status"] == "SUCCEEDED"
        elif op == "update_other":
            theirs = list(self.ids(other).values())[:n]
            if theirs:
                records = [{"id": i, "metadata": {"uri": "s3://stolen"}} for i in theirs]
                execution = self.api.ingest(records, key=self.keys[org])
                assert execution["output"]["logs"] and all(
                    "not found" in line for line in execution["output"]["logs"]
                )
        elif op == "delete_own":
            deleted = self.api.post(
                "/api/datapoints/delete",
                {"filters": [], "limit": n, "orderBy": None, "desc": None, "offset": None},
                key=self.keys[org],
            )
            gone = {d["metadata"]["uri"] for d in deleted}
            assert gone <= self.uris[org]
            self.uris[org] -= gone
        elif op == "dataset_other":
            theirs = list(self.ids(other).values())[:n]
            dataset = self.api.post("/api/dataset", {"displayName": "d"}, key=self.keys[org])
            if theirs:
                response = self.call(
                    "POST", f"/api/dataset/{dataset['uuid']}/add", org, {"datapointIds": theirs}
                )
                assert response.status_code == 404
            listed = self.api.get("/api/dataset", key=self.keys[other])
            assert dataset["uuid"] not in [d["uuid"] for d in listed]
        elif op == "sql":
            rows = self.api.post(
                "/api/sql",
                {"query": "SELECT metadata->>'$.uri' AS uri FROM datapoints"},
                key=self.keys[org],
            )
            assert {r["uri"] for r in rows} == self.uris[org]
        elif op == "miner":
            created = self.api.post(
                "/api/tasks/miners",
                {"display_name": "m", "strategy": "RANDOM", "size": 100, "select": {"filters": []}},
                key=self.keys[org],
            )
            self.api.post("/api/tasks/miner/run", created, key=self.keys[org])
            runner = self.api.client.app.state.services.miners  # type: ignore[attr-defined]
            done = runner.wait(created["miner_id"], organization_id=org, timeout=60)
            mine = set(self.ids(org).values())
            assert set(done.task.result or []) <= mine
            assert (
                self.call("GET", f"/api/tasks/miners/{created['miner_id']}", other).status_code
                == 404
            )
        else:  # select every table
            for table in ("datapoints", "predictions", "groundtruths", "bboxes"):
                rows = self.api.post(f"/api/{table}/select", {"filters": []}, key=self.keys[org])
                if table == "datapoints":
                    assert {r["metadata"]["uri"] for r in rows} == self.uris[org]


@settings(max_examples=12, deadline=None)
@given(operations)
def test_organizations_only_ever_touch_their_own_rows(steps: list[tuple[str, str, int]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        for api in make_api(Lake(str(Path(folder) / "lake"))):
            world = World(api)
            for op, org, n in steps:
                world.step(op, org, n)
                world.check()
