"""Fetching uploads by URL (``{"url"}`` / ``{"urls"}``) without becoming a request forgery tool.

The server reads a URL only when all of these hold, and says which one failed otherwise:

- the scheme is ``http`` or ``https`` and the URL carries no user name or password;
- the host is the lake's own object store (the S3 endpoint of an S3 lake, host and port; AWS's
  S3 hosts for a lake on AWS) or matches an entry of ``SHOAL_URL_HOSTS`` (``host``, ``host:port``
  or ``*.domain``; an entry without a port allows any port);
- no address the host resolves to is link-local (cloud metadata services live there),
  multicast or unspecified;
- the answer is a 2xx: redirects are not followed (a redirect could lead anywhere), and the
  body stays under ``SHOAL_MAX_URL_MB``.

Fetches ignore proxy settings of the environment. The host is resolved when checked and
again when fetched; a name whose addresses change between the two (DNS rebinding) is only
caught if the new address is refused too, so allow-list names you control.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import ipaddress
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urlsplit

import httpx2

from lake.errors import InputError
from lake.storage import LakeLocation

_DEFAULT_PORTS = {"http": 80, "https": 443}
_CHUNK = 1 << 20


@dataclass(frozen=True)
class _Host:
    pattern: str  # a host name, an address, or *.domain
    port: int | None  # None: any port

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.pattern.startswith("*."):
            return fnmatch.fnmatchcase(host, self.pattern)
        return host == self.pattern


def parse_hosts(entries: str | Sequence[str]) -> list[_Host]:
    """``host``, ``host:port``, ``[v6]:port`` or ``*.domain`` entries, comma separated."""
    if isinstance(entries, str):
        entries = entries.split(",")
    hosts: list[_Host] = []
    for raw in entries:
        entry = raw.strip().lower()
        if not entry:
            continue
        try:
            parts = urlsplit(f"//{entry}")
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"URL host entry {raw!r}: {exc}") from None
        host = parts.hostname
        if not host or parts.path or parts.username is not None:
            raise ValueError(f"URL host entry {raw!r} is not host, host:port or *.domain")
        hosts.append(_Host(host, port))
    return hosts


def store_hosts(location: LakeLocation) -> list[_Host]:
    """The hosts of the lake's own object store (none for a local lake)."""
    if location.scheme != "s3":
        return []
    endpoint = location.s3.endpoint_url
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        if not parts.hostname:
            return []
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 443)
        return [_Host(parts.hostname.lower(), port)]
    region = location.s3.region
    return [
        _Host(host, 443)
        for host in (
            "s3.amazonaws.com",
            "*.s3.amazonaws.com",
            f"s3.{region}.amazonaws.com",
            f"*.s3.{region}.amazonaws.com",
        )
    ]


def shown(url: str) -> str:
    """The URL without its query (presigned URLs carry their signature there)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url[:200]
    if not parts.scheme or not parts.netloc:
        return url[:200]
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{netloc}{parts.path}"[:200]


class UrlFetcher:
    """Checks and fetches the URLs an upload names (see the module's rules)."""

    def __init__(
        self,
        allowed: Sequence[_Host],
        *,
        max_bytes: int,
        timeout: float = 30.0,
        resolve: Any = socket.getaddrinfo,
    ) -> None:
        self.allowed = list(allowed)
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._resolve = resolve

    @classmethod
    def for_lake(
        cls, location: LakeLocation, hosts: str | Sequence[str], *, max_bytes: int
    ) -> UrlFetcher:
        return cls([*store_hosts(location), *parse_hosts(hosts)], max_bytes=max_bytes)

    def check(self, url: str) -> None:
        """Raise :class:`InputError` saying why ``url`` may not be fetched."""
        name = shown(url)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise InputError(f"cannot ingest {name!r}: not a valid URL ({exc})") from None
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise InputError(
                f"cannot ingest {name!r}: only http and https URLs are fetched "
                f"(got {scheme + '://' if scheme else 'no scheme'}); send the file to "
                "/api/ingestion/upload and ingest the url it answers"
            )
        if parts.username is not None or parts.password is not None:
            raise InputError(
                f"cannot ingest {name!r}: URLs with a user name or password are refused"
            )
        host = (parts.hostname or "").lower()
        if not host:
            raise InputError(f"cannot ingest {name!r}: the URL names no host")
        port = port or _DEFAULT_PORTS[scheme]
        if not any(entry.matches(host, port) for entry in self.allowed):
            raise InputError(
                f"cannot ingest {name!r}: host {host}:{port} is not allowed (the server fetches "
                "only from the lake's object store and the hosts listed in SHOAL_URL_HOSTS)"
            )
        try:
            addresses = {info[4][0] for info in self._resolve(host, port, type=socket.SOCK_STREAM)}
        except (OSError, UnicodeError) as exc:
            message = f"cannot ingest {name!r}: host {host} does not resolve ({exc})"
            raise InputError(message) from None
        for address in sorted(addresses):
            ip = ipaddress.ip_address(address.split("%", 1)[0])
            if ip.is_link_local or ip.is_multicast or ip.is_unspecified:
                raise InputError(
                    f"cannot ingest {name!r}: host {host} resolves to {ip}, a link-local, "
                    "multicast or unspecified address, which is never fetched"
                )

    @contextlib.contextmanager
    def __call__(self, url: str) -> Iterator[IO[bytes]]:
        """The body of ``url`` as a stream (what :class:`lake.Uploads` lands)."""
        self.check(url)
        name = shown(url)
        timeout = httpx2.Timeout(self.timeout)
        try:
            with (
                httpx2.Client(timeout=timeout, follow_redirects=False, trust_env=False) as http,
                http.stream("GET", url) as response,
            ):
                if response.is_redirect:
                    target = shown(response.headers.get("location", ""))
                    raise InputError(
                        f"fetching {name!r} failed: it answered {response.status_code}, a "
                        f"redirect to {target!r}, and redirects are not followed"
                    )
                if not response.is_success:
                    raise InputError(
                        f"fetching {name!r} failed: HTTP {response.status_code} "
                        f"{response.reason_phrase}".rstrip()
                    )
                length = response.headers.get("content-length")
                if length is not None and length.isdigit() and int(length) > self.max_bytes:
                    raise InputError(
                        f"fetching {name!r} failed: {int(length)} bytes is more than the "
                        f"{self.max_bytes} bytes allowed (SHOAL_MAX_URL_MB)"
                    )
                yield io.BufferedReader(_Body(response.iter_bytes(_CHUNK), name, self.max_bytes))
        except httpx2.HTTPError as exc:  # connecting, or the first bytes
            raise InputError(f"fetching {name!r} failed: {type(exc).__name__}: {exc}") from None


class _Body(io.RawIOBase):
    """A response body as a file: counts bytes, turns transport errors into InputError."""

    def __init__(self, chunks: Iterator[bytes], name: str, max_bytes: int) -> None:
        self._chunks = chunks
        self._name = name
        self._max = max_bytes
        self._buffer = memoryview(b"")
        self._total = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._buffer:
            try:
                chunk = next(self._chunks, None)
            except httpx2.HTTPError as exc:
                raise InputError(
                    f"fetching {self._name!r} failed after {self._total} bytes: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
            if chunk is None:
                return 0
            self._total += len(chunk)
            if self._total > self._max:
                raise InputError(
                    f"fetching {self._name!r} failed: more than the {self._max} bytes allowed "
                    "(SHOAL_MAX_URL_MB)"
                )
            self._buffer = memoryview(chunk)
        n = min(len(buffer), len(self._buffer))
        buffer[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n
