"""The gRPC connection to an etcd cluster: one channel per endpoint, failover between them,
and every transport failure turned into :class:`plantd.state.errors.Unavailable`.

We use aetcd's generated etcd v3 stubs (``aetcd.rpc``) directly rather than its ``Client``:
the client takes one host, drops the response header of a txn (we need its revision) and
cannot set ``limit``/``revision``/``count_only`` on a range; the stubs are the whole etcd v3
API over ``grpc.aio``.

Requests carry ``hasleader=true`` metadata: a member that lost its leader (no quorum) refuses
at once instead of waiting, so a minority side answers ``unavailable`` promptly.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from aetcd import rpc

from plantd.state.errors import InvalidArgument, LimitExceeded, StateError, Unavailable

__all__ = ["EtcdConn", "parse_endpoints"]

_METADATA = (("hasleader", "true"),)

#: gRPC codes after which another endpoint may answer
_RETRY_ELSEWHERE = {rpc.StatusCode.UNAVAILABLE, rpc.StatusCode.DEADLINE_EXCEEDED}


def parse_endpoints(text: str) -> list[str]:
    """``http://host:port,...`` (the ``etcd_endpoints`` setting) -> ``["host:port", ...]``."""
    out = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        parts = urlsplit(item if "://" in item else f"http://{item}")
        if parts.scheme not in ("http", "") or not parts.hostname or parts.port is None:
            raise InvalidArgument(
                f"etcd_endpoints: {item!r} is not http://HOST:PORT (TLS is not supported yet)",
                field="etcd_endpoints",
            )
        out.append(f"{parts.hostname}:{parts.port}")
    if not out:
        raise InvalidArgument("etcd_endpoints is empty", field="etcd_endpoints")
    return out


class EtcdConn:
    """Stubs of the endpoint in use; a failed call moves to the next endpoint for the
    next call (the failed call itself is NOT retried: a write may have committed)."""

    def __init__(self, endpoints: Sequence[str], timeout: float) -> None:
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self._at = 0
        self._channels: dict[str, Any] = {}
        self.last_error: str | None = None
        self.failed_at: float | None = None

    @property
    def endpoint(self) -> str:
        return self.endpoints[self._at]

    def _channel(self) -> Any:
        ep = self.endpoint
        ch = self._channels.get(ep)
        if ch is None:
            ch = rpc.insecure_channel(
                ep,
                options=[
                    ("grpc.max_receive_message_length", 64 << 20),
                    ("grpc.max_send_message_length", 64 << 20),
                    ("grpc.keepalive_time_ms", 5000),
                    ("grpc.keepalive_timeout_ms", 2000),
                    ("grpc.initial_reconnect_backoff_ms", 200),
                    ("grpc.max_reconnect_backoff_ms", 1000),
                ],
            )
            self._channels[ep] = ch
        return ch

    def stub(self, kind: str) -> Any:
        return getattr(rpc, f"{kind}Stub")(self._channel())

    async def call(self, kind: str, method: str, request: Any, timeout: float | None = None) -> Any:
        """One unary call on the current endpoint; gRPC errors become StateErrors."""
        ep = self.endpoint
        try:
            reply = await getattr(self.stub(kind), method)(
                request, timeout=timeout or self.timeout, metadata=_METADATA
            )
        except rpc.AioRpcError as exc:
            raise self.failure(exc, ep, method) from None
        self.last_error = None
        self.failed_at = None
        return reply

    def failure(self, exc: Any, ep: str, what: str) -> StateError:
        """The StateError of a failed call; moves on to the next endpoint when it may help."""
        code, details = exc.code(), exc.details() or ""
        if "too many operations in txn" in details or "request is too large" in details:
            return StateError.from_dict(
                {"code": LimitExceeded.code, "error": f"etcd refused {what}: {details}"}
            )
        if code == rpc.StatusCode.INVALID_ARGUMENT:
            return InvalidArgument(f"etcd refused {what}: {details}")
        if code in _RETRY_ELSEWHERE or "leader" in details or "timed out" in details:
            self._at = (self._at + 1) % len(self.endpoints)
        reason = f"etcd {ep}: {code.name.lower()}: {details or 'no detail'}"
        self.last_error = reason
        self.failed_at = self.failed_at or time.monotonic()
        return Unavailable(
            f"state storage unavailable ({reason}); nothing was acknowledged, retry"
            " (with the same request_id for a write)",
            reason=reason,
        )

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for ch in channels:
            await ch.close()
