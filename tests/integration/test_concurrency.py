"""Two server processes on one S3 lake, and clients writing through both at once: new records,
updates of the same datapoints, dataset commits and deletes. Every acknowledged write is there
afterwards, a datapoint never holds two groundtruths of one task type, no commit is lost."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from apitools import server_process  # type: ignore[import-not-found]
from conftest import s3_lake_uri, s3_options
from s3server import S3Server

import sdk
from lake import Lake
from lake.keys import ApiKeys

pytestmark = pytest.mark.s3
CLS = "CLASSIFICATION"
BASE = 60
ROUNDS = 6


def run_all(jobs: list[Callable[[], None]]) -> None:
    failures: list[BaseException] = []

    def guarded(job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as exc:  # reported below, with the others
            failures.append(exc)

    threads = [threading.Thread(target=guarded, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not failures, failures


def test_two_servers_and_concurrent_clients_lose_nothing(s3_server: S3Server) -> None:
    lake = Lake(s3_lake_uri(s3_server), s3=s3_options(s3_server))
    _, key = ApiKeys(lake).create("acme")
    with (
        server_process(lake, s3_server) as (_, url_a),
        server_process(lake, s3_server) as (_, url_b),
    ):
        a, b = sdk.Client(url_a, key), sdk.Client(url_b, key)
        base = [
            {"type": "IMAGE", "metadata": {"uri": f"s3://c/base/{i}.jpg"}, "tags": {"n": str(i)}}
            for i in range(BASE)
        ]
        sdk.upload_to_lake(base, client=a, progress=False, wait=True)
        rows = sdk.select_datapoints([], columns=["id", "metadata.uri"], client=a)
        ids = dict(zip(rows["uri"], rows["id"], strict=True))
        base_ids = [ids[f"s3://c/base/{i}.jpg"] for i in range(BASE)]
        doomed = base_ids[BASE - 10 :]  # deleted while the others update them
        written: dict[str, set[str]] = {i: set() for i in base_ids}
        new_uris: list[str] = []
        commits: list[tuple[str, str, int]] = []
        lock = threading.Lock()

        def add_new(client: sdk.Client, tag: str) -> Callable[[], None]:
            def job() -> None:
                for r in range(ROUNDS):
                    batch = [
                        {"type": "IMAGE", "metadata": {"uri": f"s3://c/{tag}/{r}/{i}.jpg"}}
                        for i in range(25)
                    ]
                    execution = sdk.upload_to_lake(batch, client=client, progress=False).wait(120)
                    assert execution["status"] == "SUCCEEDED"
                    with lock:
                        new_uris.extend(d["metadata"]["uri"] for d in batch)

            return job

        def relabel(client: sdk.Client, tag: str) -> Callable[[], None]:
            def job() -> None:
                for r in range(ROUNDS):
                    label = f"{tag}{r}"
                    batch = [
                        {"id": i, "groundtruths": [{"task_type": CLS, "class_name": label}]}
                        for i in base_ids[: BASE - 5]  # five of them are also deleted
                    ]
                    with lock:  # what might be stored: acknowledged or not, never another
                        for i in base_ids:
                            written[i].add(label)
                    upload = sdk.upload_to_lake(batch, client=client, progress=False)
                    assert upload.wait(120)["status"] == "SUCCEEDED"

            return job

        def commit_datasets(client: sdk.Client) -> Callable[[], None]:
            def job() -> None:
                dataset = sdk.Dataset.create("concurrent", client=client)
                for r in range(ROUNDS):
                    members = base_ids[: 10 + r]
                    dataset.add(members)
                    commits.append((dataset.id, dataset.commit(f"round {r}"), len(members)))

            return job

        def delete(client: sdk.Client) -> Callable[[], None]:
            def job() -> None:
                filters = [{"left": "id", "op": "in", "right": doomed}]
                deleted = sdk.delete_datapoints(filters, client=client)
                assert sorted(d["id"] for d in deleted) == sorted(doomed)

            return job

        run_all(
            [
                add_new(a, "a"),
                add_new(b, "b"),
                relabel(a, "x"),
                relabel(b, "y"),
                commit_datasets(a),
                commit_datasets(b),
                delete(b),
            ]
        )

        stored = sdk.select_datapoints([], columns=["id", "metadata.uri"], client=b)
        uris = stored["uri"].to_list()
        assert len(uris) == len(set(uris))  # nothing twice
        assert set(new_uris) <= set(uris)  # every acknowledged new record
        assert len(new_uris) == 2 * ROUNDS * 25
        assert not set(doomed) & set(stored["id"].to_list())  # the deletes held
        truths = sdk.select_groundtruths(
            [], columns=["datapoint", "task_type", "class_name"], client=a
        )
        per_point: dict[str, list[str]] = {}
        for row in truths.iter_rows(named=True):
            per_point.setdefault(row["datapoint"], []).append(row["class_name"])
        for i in base_ids[: BASE - 10]:
            labels = per_point.get(i, [])
            assert len(labels) == 1, (i, labels)  # one groundtruth per task type, always
            assert labels[0] in written[i]
        assert not set(per_point) - set(base_ids[: BASE - 10])  # none on deleted datapoints
        for dataset_id, version, size in commits:  # no commit was lost
            dataset = sdk.Dataset.get(dataset_id, client=a)
            assert version in [v["uuid"] for v in dataset.history()]
            assert len(dataset.read_version(version, frozen=True)) == size
        assert len(commits) == 2 * ROUNDS
        a.close()
        b.close()
