"""Datasets on a local and an S3 lake: versions, commit, checkout, diff, live and frozen reads."""

from __future__ import annotations

from typing import Any

import pytest

from lake import InputError, Lake, NotFoundError
from lake.datasets import Datasets
from lake.query import delete, select

CLS = "CLASSIFICATION"


def records(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "type": "IMAGE",
            "metadata": {"uri": f"s3://b/{i}.jpg"},
            "tags": {"n": str(i)},
            "groundtruths": [{"task_type": CLS, "class_name": "cat"}],
        }
        for i in range(start, start + n)
    ]


@pytest.fixture
def points(lake: Lake, ingest: Any) -> list[str]:
    assert ingest(records(6)).status == "SUCCEEDED"
    return [r["id"] for r in select(lake, "datapoints", columns=["id"]).to_pylist()]


def member_ids(datasets: Datasets, version: str) -> list[str]:
    return datasets.members(version).to_pylist()


def test_create_add_remove_commit_history(lake: Lake, points: list[str]) -> None:
    datasets = Datasets(lake)
    dataset = datasets.create("cats")
    assert [d.id for d in datasets.list_datasets()] == [dataset.id]
    assert datasets.get_by_name("cats").id == dataset.id
    working = datasets.working(dataset.id)
    assert (working.committed, working.dirty) == (False, False)

    assert datasets.add(dataset.id, points[:4]) == 4
    assert datasets.add(dataset.id, [points[0].upper(), points[4]]) == 1  # known ones are skipped
    assert datasets.working(dataset.id).dirty
    assert datasets.remove(dataset.id, [points[1], points[5]]) == 1  # not a member: ignored
    assert member_ids(datasets, working.id) == sorted([points[0], points[2], points[3], points[4]])

    first = datasets.commit(dataset.id, "first")
    assert (first.id, first.committed, first.dirty, first.message) == (
        working.id,
        True,
        False,
        "first",
    )
    new_working = datasets.working(dataset.id)
    assert new_working.parent == first.id and not new_working.dirty
    assert member_ids(datasets, new_working.id) == member_ids(datasets, first.id)

    datasets.remove(dataset.id, [points[0]])
    second = datasets.commit(dataset.id, "second")
    history = datasets.versions(dataset.id)
    assert [v.id for v in history] == [datasets.working(dataset.id).id, second.id, first.id]
    assert [v.committed for v in history] == [False, True, True]
    assert len(member_ids(datasets, first.id)) == 4 and len(member_ids(datasets, second.id)) == 3


def test_checkout_discards_the_working_version(lake: Lake, points: list[str]) -> None:
    datasets = Datasets(lake)
    dataset = datasets.create("d")
    datasets.add(dataset.id, points[:2])
    first = datasets.commit(dataset.id, "two")
    datasets.add(dataset.id, points[2:5])
    dirty = datasets.working(dataset.id)
    assert datasets.checkout(dataset.id, first.id).id == first.id
    working = datasets.working(dataset.id)
    assert working.id != dirty.id and working.parent == first.id and not working.dirty
    assert member_ids(datasets, working.id) == sorted(points[:2])
    with pytest.raises(NotFoundError):
        datasets.version(dirty.id)  # the discarded version is gone
    assert [v.id for v in datasets.versions(dataset.id)] == [working.id, first.id]
    other = datasets.create("other")
    with pytest.raises(InputError, match="is not a version of dataset"):
        datasets.checkout(other.id, first.id)
    with pytest.raises(InputError, match="is the working version"):
        datasets.checkout(dataset.id, working.id)


def test_errors_apply_nothing(lake: Lake, points: list[str]) -> None:
    datasets = Datasets(lake)
    dataset = datasets.create("d")
    state = lake.state()
    unknown = "01a2019a-be43-7000-8000-000000000000"
    with pytest.raises(NotFoundError, match=f"1 datapoint id\\(s\\) not found: {unknown}"):
        datasets.add(dataset.id, [points[0], unknown])
    with pytest.raises(InputError, match="must be UUIDs, got 'nope'"):
        datasets.add(dataset.id, [points[0], "nope"])
    with pytest.raises(NotFoundError, match=r"dataset .* not found"):
        datasets.add(unknown, [points[0]])
    with pytest.raises(InputError, match="dataset id must be a UUID"):
        datasets.get("x")
    with pytest.raises(InputError, match="non-empty display name"):
        datasets.create(" ")
    assert lake.state().seq == state.seq
    assert member_ids(datasets, datasets.working(dataset.id).id) == []


def test_organizations_do_not_see_each_other(lake: Lake, ingest: Any) -> None:
    ingest(records(2), org="acme")
    acme_points = [r["id"] for r in select(lake, "datapoints", columns=["id"]).to_pylist()]
    acme, other = Datasets(lake, organization_id="acme"), Datasets(lake, organization_id="other")
    dataset = acme.create("mine")
    acme.add(dataset.id, acme_points)
    assert other.list_datasets() == []
    with pytest.raises(NotFoundError):
        other.get(dataset.id)
    other_set = other.create("theirs")
    with pytest.raises(NotFoundError, match="2 datapoint id"):
        other.add(other_set.id, acme_points)  # acme's datapoints do not exist for other


def test_diff_between_versions_of_two_datasets(lake: Lake, points: list[str]) -> None:
    datasets = Datasets(lake)
    a, b = datasets.create("a"), datasets.create("b")
    datasets.add(a.id, points[:3])
    datasets.add(b.id, points[2:5])
    va, vb = datasets.commit(a.id), datasets.commit(b.id)
    diff = datasets.diff(va.id, vb.id)
    assert diff.added.to_pylist() == sorted(points[3:5])
    assert diff.removed.to_pylist() == sorted(points[:2])
    assert datasets.diff(va.id, va.id).added.to_pylist() == []


def test_live_and_frozen_reads(lake: Lake, ingest: Any, points: list[str]) -> None:
    datasets = Datasets(lake)
    dataset = datasets.create("labels")
    datasets.add(dataset.id, points[:3])
    committed = datasets.commit(dataset.id, "v1")
    # relabel a member after the commit, add a prediction, and delete another member
    relabel = {"id": points[0], "groundtruths": [{"task_type": CLS, "class_name": "dog"}]}
    assert ingest([relabel]).status == "SUCCEEDED"
    delete(lake, "datapoints", filters=[{"left": "id", "op": "=", "right": points[2]}])

    def classes(frozen: bool) -> dict[str, list[str]]:
        rows = datasets.select(
            committed.id, frozen=frozen, columns=["id", "groundtruths.class_name"]
        ).to_pylist()
        return {r["id"]: [g["class_name"] for g in r["groundtruths"]] for r in rows}

    live = classes(False)
    assert live == {points[0]: ["dog"], points[1]: ["cat"]}  # the deleted member is gone
    frozen = classes(True)
    assert frozen == {points[0]: ["cat"], points[1]: ["cat"], points[2]: ["cat"]}
    gts = datasets.select(committed.id, "groundtruths", frozen=True, columns=["class_name"])
    assert sorted(r["class_name"] for r in gts.to_pylist()) == ["cat", "cat", "cat"]
    # the membership itself lost the deleted datapoint, in every version
    assert member_ids(datasets, committed.id) == sorted(points[:2])
    with pytest.raises(InputError, match="only committed versions read frozen"):
        datasets.select(datasets.working(dataset.id).id, frozen=True)


def test_delete_dataset(lake: Lake, points: list[str]) -> None:
    datasets = Datasets(lake)
    dataset = datasets.create("gone")
    datasets.add(dataset.id, points)
    version = datasets.commit(dataset.id)
    keep = datasets.create("kept")
    datasets.add(keep.id, points[:1])
    datasets.delete(dataset.id)
    assert [d.id for d in datasets.list_datasets()] == [keep.id]
    with pytest.raises(NotFoundError):
        datasets.version(version.id)
    assert lake.count("dataset_members") == 1
    assert lake.count("datapoints") == 6  # the datapoints stay
