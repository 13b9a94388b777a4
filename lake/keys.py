"""API keys: each belongs to one organization; the lake keeps only their SHA-256 hash.

A key is ``shoal_`` followed by 32 random URL-safe characters. :meth:`ApiKeys.create` returns
the key itself once; later it can only be listed by its id, name and first characters, and
revoked. :meth:`ApiKeys.organization` resolves a presented key (``None`` for unknown or revoked
ones), from a cache refreshed every ``cache_seconds`` so that a busy server does not read the
table on each request; a revocation takes effect within that delay.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lake import ids
from lake.errors import InputError, NotFoundError
from lake.lake import Lake
from lake.tables import SCHEMAS

KEY_PREFIX = "shoal_"


@dataclass(frozen=True)
class ApiKey:
    id: str
    organization_id: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "organization_id": self.organization_id,
            "name": self.name,
            "prefix": self.prefix,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    def __init__(self, lake: Lake, *, cache_seconds: float = 5.0) -> None:
        self.lake = lake
        self.cache_seconds = cache_seconds
        self._cache: dict[str, str] = {}
        self._cached_at = float("-inf")
        self._lock = threading.Lock()

    def create(self, organization_id: str, *, name: str = "") -> tuple[ApiKey, str]:
        """A new key for ``organization_id``: the record, and the key (shown only now)."""
        if not isinstance(organization_id, str) or not organization_id.strip():
            raise InputError("an API key needs an organization")
        key = KEY_PREFIX + secrets.token_urlsafe(24)
        record = ApiKey(ids.new_id(), organization_id.strip(), name, key[:10], datetime.now(UTC))
        row = {**record.to_dict(), "key_hash": hash_key(key)}
        row["created_at"] = record.created_at
        with self.lake.transaction() as txn:
            txn.append("api_keys", pa.Table.from_pylist([row], SCHEMAS["api_keys"]))
        self._cached_at = float("-inf")
        return record, key

    def list_keys(self, *, organization_id: str | None = None) -> list[ApiKey]:
        condition = None
        if organization_id is not None:
            condition = pc.field("organization_id") == organization_id
        rows = self.lake.read("api_keys", filter=condition).to_pylist()
        return sorted((_record(row) for row in rows), key=lambda k: k.created_at)

    def revoke(self, key_id: str) -> ApiKey:
        with self.lake.transaction() as txn:
            rows = self.lake.read("api_keys", state=txn.base, filter=pc.field("id") == key_id)
            if not rows.num_rows:
                raise NotFoundError(f"API key {key_id} not found")
            row = rows.to_pylist()[0]
            if row["revoked_at"] is None:
                row["revoked_at"] = datetime.now(UTC)
                txn.upsert("api_keys", pa.Table.from_pylist([row], SCHEMAS["api_keys"]))
        self._cached_at = float("-inf")
        return _record(row)

    def cache_is_fresh(self) -> bool:
        """Whether :meth:`organization` answers from memory (without reading the lake)."""
        return time.monotonic() - self._cached_at <= self.cache_seconds

    def organization(self, key: str | None) -> str | None:
        """The organization of a valid key; None for a missing, unknown or revoked one."""
        if not key:
            return None
        digest = hash_key(key)
        with self._lock:
            if time.monotonic() - self._cached_at > self.cache_seconds:
                rows = self.lake.read(
                    "api_keys", columns=["key_hash", "organization_id", "revoked_at"]
                ).to_pylist()
                self._cache = {
                    r["key_hash"]: r["organization_id"] for r in rows if r["revoked_at"] is None
                }
                self._cached_at = time.monotonic()
            cache = self._cache
        return cache.get(digest)


def _record(row: dict[str, Any]) -> ApiKey:
    return ApiKey(
        row["id"],
        row["organization_id"],
        row["name"],
        row["prefix"],
        row["created_at"],
        row["revoked_at"],
    )
