"""What every route depends on: the running services, and the caller's organization."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from api.settings import Settings
from lake import JobRunner, Lake, Uploads
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
    group: GroupCommitter
    miners: MinerRunner


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def organization(request: Request, x_api_key: Annotated[str | None, Header()] = None) -> str:
    """The organization of the request's ``x-api-key``; 401 without a valid one."""
    org = services(request).keys.organization(x_api_key)
    if org is None:
        raise HTTPException(status_code=401, detail="Unauthorized: a valid x-api-key is required")
    return org


Org = Annotated[str, Depends(organization)]
Svc = Annotated[Services, Depends(services)]
