"""What the async and the sync client share: request framing, reply checks, reachability."""

from __future__ import annotations

import json
import socket
from typing import Any
from urllib.parse import urlsplit

from plantd.client import errors
from plantd.protocol import mdp
from plantd.vocabulary import BROKER_ENDPOINT

DEFAULT_ENDPOINT = BROKER_ENDPOINT


def format_bytes(n: int) -> str:
    """A size for people: ``512 B``, ``768 KiB``, ``1 MiB``, ``1.4 MiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            text = f"{value:.1f}".removesuffix(".0") if unit != "B" else str(int(value))
            return f"{text} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def as_bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def service_name(service: str | bytes) -> bytes:
    """Validate a service name before it goes on the wire (the broker would answer 400)."""
    name = as_bytes(service)
    if not name or len(name) > mdp.MAX_SERVICE_NAME:
        raise errors.ProtocolError(
            f"service name must be 1-{mdp.MAX_SERVICE_NAME} bytes, got {len(name)}"
        )
    return name


def call_body(operation: str, payload: Any) -> list[bytes]:
    """The plantd request convention: ``[operation, JSON]``."""
    return [operation.encode(), json.dumps(payload if payload is not None else {}).encode()]


def check_reply(frames: list[bytes], service: bytes) -> mdp.ClientReply | None:
    """Decode one reply; raise the broker's error if it carries one.

    Returns ``None`` for a reply that is not for ``service`` (never hand it to the caller).
    """
    try:
        reply = mdp.decode_client_reply(frames)
    except mdp.MalformedMessage as exc:
        raise errors.ProtocolError(f"malformed reply from broker: {exc}") from None
    if reply.service != service:
        return None
    err = mdp.decode_error(reply.body)
    if err is not None:
        raise errors.from_status(err.status, err.message)
    return reply


def decode_document(body: list[bytes]) -> Any:
    """JSON document of a reply (its last frame); raise RequestRejected on success=false."""
    if not body:
        return None
    try:
        doc = json.loads(body[-1])
    except ValueError as exc:
        raise errors.ProtocolError(f"reply is not JSON: {exc}") from None
    if isinstance(doc, dict) and doc.get("success") is False:
        raise errors.RequestRejected(
            str(doc.get("error", "request rejected")), str(doc.get("code", "rejected")), doc
        )
    return doc


def tcp_address(endpoint: str) -> tuple[str, int] | None:
    """Host and port of a ``tcp://`` endpoint, ``None`` for other transports."""
    parts = urlsplit(endpoint)
    if parts.scheme != "tcp" or parts.port is None:
        return None
    host = parts.hostname or "127.0.0.1"
    return ("127.0.0.1" if host == "*" else host), parts.port


def probe(endpoint: str, timeout: float = 0.5) -> str | None:
    """Why the broker endpoint cannot be reached, or ``None`` if something accepts there.

    ZeroMQ connects lazily and retries forever, so a dead broker looks like silence; a plain
    TCP connect tells "nobody listens" apart from "slow service" in well under a millisecond.
    """
    addr = tcp_address(endpoint)
    if addr is None:
        return None
    try:
        with socket.create_connection(addr, timeout=timeout):
            return None
    except OSError as exc:
        return f"broker unreachable at {endpoint}: {exc.strerror or exc}"


async def probe_async(endpoint: str, timeout: float = 0.5) -> str | None:
    """:func:`probe` on the event loop."""
    import asyncio

    addr = tcp_address(endpoint)
    if addr is None:
        return None
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(*addr), timeout)
    except (OSError, TimeoutError) as exc:
        return f"broker unreachable at {endpoint}: {getattr(exc, 'strerror', None) or exc}"
    writer.close()
    return None


def timeout_error(
    endpoint: str, service: bytes, timeout: float, reason: str | None
) -> errors.PlantdError:
    """The error for a request that got no reply: unreachable broker or silent service."""
    if reason is not None:
        return errors.BrokerUnreachable(reason)
    return errors.RequestTimeout(
        f"no reply from '{service.decode('utf-8', 'replace')}' within {timeout:g}s"
    )
