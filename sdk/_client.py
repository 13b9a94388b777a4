"""The HTTP client: configuration, retries with backoff, and the one place errors are mapped."""

from __future__ import annotations

import os
import time
from typing import Any

import httpx2

from sdk._errors import ConfigError, ConnectionFailed, ServerError, error_for

_RETRY_STATUSES = frozenset({429, 502, 503, 504})


class Client:
    """A connection to a Shoal (or Dioptra-compatible) server.

    ``endpoint`` defaults to ``$SHOAL_ENDPOINT``, then ``$DIOPTRA_APP_ENDPOINT``; ``api_key`` to
    ``$SHOAL_API_KEY``, then ``$DIOPTRA_API_KEY``. ``http`` replaces the HTTP client (tests hand
    in FastAPI's ``TestClient`` to run the server in-process). Transient failures (connection
    errors, 429, 502–504) are retried ``retries`` times with exponential backoff.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        api_key: str | None = None,
        *,
        http: httpx2.Client | None = None,
        timeout: float = 120.0,
        retries: int = 4,
        backoff: float = 0.5,
    ) -> None:
        self.api_key = (
            api_key or os.environ.get("SHOAL_API_KEY") or os.environ.get("DIOPTRA_API_KEY")
        )
        if not self.api_key:
            raise ConfigError("no API key: pass api_key= or set SHOAL_API_KEY")
        if http is None:
            endpoint = (
                endpoint
                or os.environ.get("SHOAL_ENDPOINT")
                or os.environ.get("DIOPTRA_APP_ENDPOINT")
            )
            if not endpoint:
                raise ConfigError("no endpoint: pass endpoint= or set SHOAL_ENDPOINT")
            http = httpx2.Client(base_url=endpoint.rstrip("/"), timeout=timeout)
        self.http = http
        self.retries = retries
        self.backoff = backoff

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request; return the decoded JSON body (None for an empty one)."""
        headers = {"x-api-key": str(self.api_key), **kwargs.pop("headers", {})}
        delay = self.backoff
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self.http.request(method, path, headers=headers, **kwargs)
            except httpx2.TransportError as exc:
                if last:
                    raise ConnectionFailed(f"{method} {path}: {exc}") from exc
            else:
                if response.status_code < 400:
                    return response.json() if response.content else None
                error = error_for(response.status_code, _message(response))
                if last or response.status_code not in _RETRY_STATUSES:
                    raise error
            _rewind(kwargs)
            time.sleep(delay)
            delay = min(delay * 2, 30)
        raise ServerError(599, "unreachable")  # the loop always returns or raises

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _message(response: httpx2.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return str(error.get("message", error))
        return str(error)
    return str(body)


def _rewind(kwargs: dict[str, Any]) -> None:
    """Files being uploaded start again from the beginning on a retry."""
    for value in (kwargs.get("files") or {}).values():
        handle = value[1] if isinstance(value, tuple) else value
        if hasattr(handle, "seek"):
            handle.seek(0)


_default: Client | None = None
_default_config: tuple[str | None, str | None] | None = None


def default_client() -> Client:
    """The client the module-level functions use when given none: built from the environment
    and reused while ``SHOAL_ENDPOINT`` / ``SHOAL_API_KEY`` (or the DIOPTRA names) stay the same."""
    global _default, _default_config
    config = (
        os.environ.get("SHOAL_ENDPOINT") or os.environ.get("DIOPTRA_APP_ENDPOINT"),
        os.environ.get("SHOAL_API_KEY") or os.environ.get("DIOPTRA_API_KEY"),
    )
    if _default is None or config != _default_config:
        if _default is not None:
            _default.close()
        _default, _default_config = Client(*config), config
    return _default
