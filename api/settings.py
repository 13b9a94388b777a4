"""The server's settings: ``SHOAL_*`` environment variables, or arguments to ``create_app``.

| Variable | Default | Meaning |
|---|---|---|
| ``SHOAL_LAKE`` | ``./shoal-data`` | the lake root (a folder or ``s3://bucket/prefix``) |
| ``SHOAL_HOST`` / ``SHOAL_PORT`` | ``127.0.0.1`` / ``8000`` | where ``shoal serve`` listens |
| ``SHOAL_MAX_BODY_MB`` | ``512`` | largest request body (uploads included) |
| ``SHOAL_MAX_LINE_MB`` | ``64`` | largest NDJSON line of an upload |
| ``SHOAL_URL_HOSTS`` | (none) | more hosts uploads are fetched from (see below) |
| ``SHOAL_MAX_URL_MB`` | ``16384`` | largest file fetched from a URL |
| ``SHOAL_JOB_WORKERS`` | ``1`` | uploads processed at the same time |
| ``SHOAL_BATCH_RECORDS`` | ``50000`` | records of an upload applied per commit |
| ``SHOAL_PARSE_WORKERS`` | ``2`` | batches of an upload parsed while one commits |
| ``SHOAL_PARSE_PROCESSES`` | ``true`` | batches of 48 MiB of text or more parsed in helpers |
| ``SHOAL_GROUP_QUEUE`` | ``64`` | small uploads waiting for a group commit before new ones wait |
| ``SHOAL_MINER_WORKERS`` | ``1`` | miner runs computed at the same time |
| ``SHOAL_KEY_CACHE_SECONDS`` | ``5`` | how long a revoked key may still be accepted |
| ``SHOAL_MAINTENANCE_HOURS`` | ``0`` (off) | run table maintenance every N hours |
| ``SHOAL_RETENTION_HOURS`` | ``24`` | maintenance keeps files replaced less than N hours ago |

``SHOAL_URL_HOSTS`` lists, comma separated, the hosts (``host``, ``host:port``, ``*.domain``)
that ``{"url"}`` ingestion may fetch from besides the lake's own object store (:mod:`api.fetch`).
S3 lakes take their endpoint and credentials from ``SHOAL_S3_ENDPOINT`` / ``AWS_*``.
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lake.groups import DEFAULT_MAX_QUEUED


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHOAL_", extra="ignore")

    lake: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    max_body_mb: float = Field(default=512, gt=0)
    max_line_mb: float = Field(default=64, gt=0)
    url_hosts: str = ""
    max_url_mb: float = Field(default=16384, gt=0)
    job_workers: int = Field(default=1, ge=1, le=32)
    batch_records: int = Field(default=50_000, ge=1, le=1_000_000)
    parse_workers: int = Field(default=2, ge=1, le=16)
    parse_processes: bool = True
    group_queue: int = Field(default=DEFAULT_MAX_QUEUED, ge=1, le=100_000)
    group_process: bool = True
    miner_workers: int = Field(default=1, ge=1, le=32)
    key_cache_seconds: float = Field(default=5.0, ge=0)
    maintenance_hours: float = Field(default=0, ge=0)
    retention_hours: float = Field(default=24, ge=0)

    @field_validator("url_hosts")
    @classmethod
    def _hosts(cls, value: str) -> str:
        from api.fetch import parse_hosts

        parse_hosts(value)  # a ValueError names the bad entry
        return value

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 2**20)

    @property
    def max_url_bytes(self) -> int:
        return int(self.max_url_mb * 2**20)

    @property
    def max_line_bytes(self) -> int:
        return int(self.max_line_mb * 2**20)
