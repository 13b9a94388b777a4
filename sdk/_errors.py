"""Errors raised by the SDK. Every one derives from :class:`ShoalError`::

ShoalError
├── ConfigError        no endpoint or no API key configured
├── APIError           the server answered an error ({"error": {"message"}})
│   ├── BadRequest        400: a bad filter, record, value or statement
│   ├── Unauthorized      401: a missing, unknown or revoked API key
│   ├── NotFound          404: an unknown id
│   └── ServerError       5xx: the server or its storage failed (retried first)
├── ConnectionFailed   the server could not be reached (after retries)
├── UploadFailed       an upload ended FAILED, TIMED_OUT or ABORTED
└── MinerFailed        a miner run ended FAILURE (or REVOKED)
"""

from __future__ import annotations


class ShoalError(Exception):
    """Base class of every error the SDK raises."""


class ConfigError(ShoalError):
    """The client lacks an endpoint or an API key."""


class APIError(ShoalError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class BadRequest(APIError):
    pass


class Unauthorized(APIError):
    pass


class NotFound(APIError):
    pass


class ServerError(APIError):
    pass


class ConnectionFailed(ShoalError):
    pass


class UploadFailed(ShoalError):
    def __init__(self, upload_id: str, status: str, message: str) -> None:
        super().__init__(f"upload {upload_id} ended {status}: {message}")
        self.upload_id = upload_id
        self.status = status
        self.message = message


class MinerFailed(ShoalError):
    def __init__(self, miner_id: str, status: str, message: str) -> None:
        super().__init__(f"miner {miner_id} run ended {status}: {message}")
        self.miner_id = miner_id
        self.status = status
        self.message = message


def error_for(status: int, message: str) -> APIError:
    kind: type[APIError]
    if status == 400 or status == 413 or status == 422:
        kind = BadRequest
    elif status == 401:
        kind = Unauthorized
    elif status == 404:
        kind = NotFound
    elif status >= 500:
        kind = ServerError
    else:
        kind = APIError
    return kind(status, message)
