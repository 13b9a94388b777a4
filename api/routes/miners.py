"""Miners (reference §1.3 #23–#30, §6): definitions, asynchronous runs, results."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Any

from fastapi import APIRouter, Body
from pydantic import BaseModel, Field
from starlette.responses import Response

from api import wire
from api.deps import Org, Svc
from lake.miners import MinerConfig, Miners

router = APIRouter(prefix="/api/tasks", tags=["miners"])


class MinerRef(BaseModel):
    miner_id: str = Field(..., min_length=1)


@router.get("/miners")
def list_miners(org: Org, svc: Svc) -> list[dict[str, Any]]:
    return [
        wire.miner(m, progress=svc.miners.progress(m))
        for m in Miners(svc.lake, organization_id=org).list_miners()
    ]


@router.post("/miners")
def create_miner(
    payload: Annotated[dict[str, Any], Body(description="reference §6.2")], org: Org, svc: Svc
) -> dict[str, str]:
    """Create a miner; with the ``_id`` of an existing one, replace its configuration (and
    drop its results), as the web UI does."""
    config = MinerConfig.parse(payload)
    existing = payload.get("_id") or payload.get("miner_id")
    if isinstance(existing, str) and existing:
        miner = svc.miners.update(existing, config, organization_id=org)
    else:
        miner = Miners(svc.lake, organization_id=org).create(config)
    return {"miner_id": miner.id}


@router.post("/miners/delete")
def delete_miner(request: MinerRef, org: Org, svc: Svc) -> dict[str, str]:
    return {"deleted": svc.miners.delete(request.miner_id, organization_id=org).id}


@router.get("/miners/inspect/{miner_id}")
def inspect(miner_id: str, org: Org, svc: Svc) -> dict[str, Any]:
    miner = Miners(svc.lake, organization_id=org).get(miner_id)
    return {"task": wire.task(miner, progress=svc.miners.progress(miner))}


@router.get("/miners/results/{miner_id}", response_model=None)
def results(miner_id: str, org: Org, svc: Svc, as_csv: bool = False) -> list[str] | Response:
    """The latest run's datapoint ids (empty before a successful run); ``?as_csv=true``: CSV."""
    ids = Miners(svc.lake, organization_id=org).get(miner_id).task.result or []
    if not as_csv:
        return ids
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["datapoint_id"])
    writer.writerows([i] for i in ids)
    return Response(
        text.getvalue(),
        media_type="text/csv",
        headers={"content-disposition": f'attachment; filename="miner-{miner_id}.csv"'},
    )


@router.get("/miners/{miner_id}")
def get_miner(miner_id: str, org: Org, svc: Svc) -> dict[str, Any]:
    miner = Miners(svc.lake, organization_id=org).get(miner_id)
    return wire.miner(miner, progress=svc.miners.progress(miner))


@router.post("/miner/run")
def run(request: MinerRef, org: Org, svc: Svc) -> dict[str, Any]:
    miner = svc.miners.run(request.miner_id, organization_id=org)
    return {"miner_id": miner.id, "task": wire.task(miner)}


@router.post("/miner/reset")
def reset(request: MinerRef, org: Org, svc: Svc) -> dict[str, Any]:
    miner = svc.miners.reset(request.miner_id, organization_id=org)
    return {"miner_id": miner.id, "task": wire.task(miner)}
