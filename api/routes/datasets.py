"""Datasets and their versions (reference §1.3 #13–#22, §5), plus diff and frozen reads."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.responses import StreamingResponse

from api import wire
from api.deps import Org, Svc
from lake.datasets import Datasets
from lake.errors import InputError, NotFoundError

router = APIRouter(prefix="/api/dataset", tags=["datasets"])


class CreateRequest(BaseModel):
    displayName: str = Field(..., min_length=1)


class CommitRequest(BaseModel):
    message: str | None = None


class MembersRequest(BaseModel):
    datapointIds: list[str]


def _datasets(svc: Svc, org: str) -> Datasets:
    return Datasets(svc.lake, organization_id=org)


@router.get("")
def list_datasets(org: Org, svc: Svc) -> list[dict[str, Any]]:
    return [wire.dataset(d) for d in _datasets(svc, org).list_datasets()]


@router.post("")
def create_dataset(request: CreateRequest, org: Org, svc: Svc) -> dict[str, Any]:
    return wire.dataset(_datasets(svc, org).create(request.displayName))


@router.get("/diff/{version1}/{version2}")
def diff(version1: str, version2: str, org: Org, svc: Svc) -> dict[str, Any]:
    datasets = _datasets(svc, org)
    result = datasets.diff(version1, version2)
    return {
        "added": result.added.to_pylist(),
        "removed": result.removed.to_pylist(),
        "version1": result.version1,
        "version2": result.version2,
        "dataset1": datasets.version(result.version1).dataset,
        "dataset2": datasets.version(result.version2).dataset,
    }


@router.get("/version/{version_id}")
def get_version(version_id: str, org: Org, svc: Svc) -> dict[str, Any]:
    return wire.version(_datasets(svc, org).version(version_id))


@router.get("/version/{version_id}/datapoints")
def version_datapoints(
    version_id: str, org: Org, svc: Svc, frozen: bool = False
) -> StreamingResponse:
    """The datapoints of any version: live, or ``?frozen=true`` as they were at its commit."""
    return wire.rows_response(_datasets(svc, org).select(version_id, frozen=frozen))


@router.get("/{dataset_id}")
def get_dataset(dataset_id: str, org: Org, svc: Svc) -> dict[str, Any]:
    """The dataset row; ``{}`` for an unknown id (the reference client then raises ValueError)."""
    try:
        return wire.dataset(_datasets(svc, org).get(dataset_id))
    except (NotFoundError, InputError):
        return {}


@router.post("/{dataset_id}/add")
def add(dataset_id: str, request: MembersRequest, org: Org, svc: Svc) -> dict[str, int]:
    return {"added": _datasets(svc, org).add(dataset_id, request.datapointIds)}


@router.post("/{dataset_id}/remove")
def remove(dataset_id: str, request: MembersRequest, org: Org, svc: Svc) -> dict[str, int]:
    return {"removed": _datasets(svc, org).remove(dataset_id, request.datapointIds)}


@router.post("/{dataset_id}/commit")
def commit(
    dataset_id: str, org: Org, svc: Svc, request: CommitRequest | None = None
) -> dict[str, Any]:
    message = request.message if request is not None else None
    return wire.version(_datasets(svc, org).commit(dataset_id, message))


@router.get("/{dataset_id}/versions")
def versions(dataset_id: str, org: Org, svc: Svc) -> list[dict[str, Any]]:
    return [wire.version(v) for v in _datasets(svc, org).versions(dataset_id)]


@router.get("/{dataset_id}/datapoints")
def working_datapoints(dataset_id: str, org: Org, svc: Svc) -> StreamingResponse:
    """The datapoints of the working (uncommitted) version, as the reference answers."""
    datasets = _datasets(svc, org)
    return wire.rows_response(datasets.select(datasets.working(dataset_id).id))


@router.post("/{dataset_id}/checkout/{version_id}")
def checkout(dataset_id: str, version_id: str, org: Org, svc: Svc) -> str:
    return _datasets(svc, org).checkout(dataset_id, version_id).id


@router.delete("/{dataset_id}")
def delete_dataset(dataset_id: str, org: Org, svc: Svc) -> dict[str, str]:
    return {"deleted": _datasets(svc, org).delete(dataset_id).id}
