"""What every route depends on: the running services, and the caller's organization."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from api.settings import Settings
from api.waiters import Waiters
from lake import JobRunner, Lake, Uploads
from lake.group_process import GroupProcess
from lake.groups import GroupCommitter
from lake.keys import ApiKeys
from lake.miners import MinerRunner


@dataclass
class Services:
    settings: Settings
    lake: Lake
    keys: ApiKeys
    uploads: Uploads
    runner: JobRunner
    group: GroupCommitter | GroupProcess
    miners: MinerRunner
    waiters: Waiters


async def services(request: Request) -> Services:
    return _services(request)


def _services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


async def organization(request: Request, x_api_key: Annotated[str | None, Header()] = None) -> str:
    """The organization of the request's ``x-api-key``; 401 without a valid one.

    Async, like :func:`services`: FastAPI runs a plain ``def`` dependency in a worker thread,
    a hop per request; the keys are read from the lake (in a thread) only when the cache is old.
    """
    keys = _services(request).keys
    if keys.cache_is_fresh():
        org = keys.organization(x_api_key)
    else:
        org = await run_in_threadpool(keys.organization, x_api_key)
    if org is None:
        raise HTTPException(status_code=401, detail="Unauthorized: a valid x-api-key is required")
    return org


Org = Annotated[str, Depends(organization)]
Svc = Annotated[Services, Depends(services)]
