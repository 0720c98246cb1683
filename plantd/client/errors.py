"""Exceptions of the plantd client: one class per thing a caller handles differently."""

from __future__ import annotations

from typing import Any

from plantd.exitcodes import ExitCode


class PlantdError(Exception):
    """Base class of every error the client raises."""


class BrokerUnreachable(PlantdError):
    """Nothing accepts connections at the broker endpoint."""

    exit_code = ExitCode.UNREACHABLE


class RequestTimeout(PlantdError):
    """The broker is reachable but no reply arrived in time."""

    exit_code = ExitCode.TIMEOUT


class ProtocolError(PlantdError):
    """A malformed reply, or the broker rejected the message (status 400)."""


class MessageTooLarge(ProtocolError):
    """The broker refused a request over its size limit (status 413)."""

    exit_code = ExitCode.USAGE


class NotAuthorized(PlantdError):
    """The broker refused the request (status 403)."""

    exit_code = ExitCode.AUTH


class AuthenticationFailed(PlantdError):
    """The CURVE handshake failed: our key is not accepted ("authentication rejected by
    broker") or we hold the wrong broker key ("broker key mismatch")."""

    exit_code = ExitCode.AUTH


class RateLimited(PlantdError):
    """The broker refused the request: this principal is over its rate (status 429)."""

    exit_code = ExitCode.REJECTED


class UnknownService(PlantdError):
    """No worker has ever registered the service (status 404)."""

    exit_code = ExitCode.UNKNOWN_SERVICE


class ServiceUnavailable(PlantdError):
    """The service exists but no worker answered: none idle in time, queue full, or the
    worker died while serving the request (status 503/504)."""

    exit_code = ExitCode.UNKNOWN_SERVICE


class RequestRejected(PlantdError):
    """The service answered ``{"success": false, ...}``: it understood and said no."""

    def __init__(self, message: str, code: str = "rejected", doc: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.doc = doc or {}


def from_status(status: int, message: str) -> PlantdError:
    """Map a broker error reply (docs/protocol.md) to its exception."""
    if status == 404:
        return UnknownService(message)
    if status in (503, 504):
        return ServiceUnavailable(message)
    if status == 413:
        return MessageTooLarge(message)
    if status == 403:
        return NotAuthorized(message)
    if status == 429:
        return RateLimited(message)
    return ProtocolError(f"broker error {status}: {message}")
