"""Blocking Majordomo client for the CLI and scripts: no event loop, fast to import."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import zmq

from plantd.client import errors
from plantd.client.reply import (
    DEFAULT_ENDPOINT,
    call_body,
    check_reply,
    decode_document,
    probe,
    service_name,
    unreachable_or_timeout,
)
from plantd.protocol import mdp

#: longest chain of pages an MMI listing follows (a broker gives at most 1000 entries each)
MAX_PAGES = 100_000


def page_body(after: str | None) -> tuple[bytes, ...]:
    """Request body of a paged MMI listing: nothing for the first page."""
    return () if after is None else (json.dumps({"after": after}).encode(),)


def next_cursor(doc: Any, after: str | None) -> str | None:
    """The cursor of the page after ``doc``, or ``None`` when ``doc`` was the last one (also
    for a broker that does not page, and for a cursor that would not move)."""
    if not isinstance(doc, dict) or not doc.get("more"):
        return None
    cursor = doc.get("next")
    return cursor if isinstance(cursor, str) and cursor != after else None


class SyncClient:
    """Blocking client with the same methods as :class:`plantd.client.Client`.

    One request at a time; the socket is replaced after a timeout so a late reply is never
    taken for the next request's.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        timeout: float = 5.0,
        retries: int = 0,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        check_reachable: bool = True,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.retries = retries
        self._ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket[bytes] | None = None
        self._check = check_reachable

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def _socket(self) -> zmq.Socket[bytes]:
        if self._sock is None:
            if self._check:
                # fail in a millisecond, not after the whole timeout, when no broker runs
                reason = probe(self.endpoint)
                if reason is not None:
                    raise errors.BrokerUnreachable(reason)
                self._check = False
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(self.endpoint)
            self._sock = sock
        return self._sock

    def stream(
        self, service: str | bytes, *body: bytes, timeout: float | None = None
    ) -> Iterator[list[bytes]]:
        """Yield each reply part's body: the PARTIALs, then the FINAL."""
        name = service_name(service)
        wait = self.timeout if timeout is None else timeout
        request = mdp.encode_request(name, list(body))
        for attempt in range(self.retries + 1):
            sock = self._socket()
            received = False
            try:
                sock.send_multipart(request)
                while True:
                    deadline = time.monotonic() + wait
                    reply = None
                    while reply is None:
                        left = deadline - time.monotonic()
                        if left <= 0 or not sock.poll(int(left * 1000), zmq.POLLIN):
                            raise TimeoutError
                        reply = check_reply(sock.recv_multipart(), name)
                    received = True
                    yield reply.body
                    if reply.final:
                        return
            except TimeoutError:
                self.close()
                if received or attempt >= self.retries:
                    raise unreachable_or_timeout(self.endpoint, name, wait) from None
            except BaseException:
                self.close()  # an abandoned stream leaves replies behind: drop the socket
                raise

    def request(
        self, service: str | bytes, *body: bytes, timeout: float | None = None
    ) -> list[bytes]:
        last: list[bytes] = []
        for part in self.stream(service, *body, timeout=timeout):
            last = part
        return last

    def call(
        self, service: str, operation: str, payload: Any = None, *, timeout: float | None = None
    ) -> Any:
        return decode_document(
            self.request(service, *call_body(operation, payload), timeout=timeout)
        )

    def mmi(self, name: str, *body: bytes, timeout: float | None = None) -> Any:
        return decode_document(self.request(name, *body, timeout=timeout))

    def mmi_all(self, name: str, *, timeout: float | None = None) -> dict[str, list[Any]]:
        """Every entry of a paged MMI listing (``mmi.workers``, ``mmi.services``), following
        the pages: ``{"workers": [...]}`` as one unpaged reply would be."""
        key = name.removeprefix("mmi.")
        entries: list[Any] = []
        after = None
        for _ in range(MAX_PAGES):
            doc = self.mmi(name, *page_body(after), timeout=timeout)
            entries.extend(doc.get(key, []) if isinstance(doc, dict) else [])
            after = next_cursor(doc, after)
            if after is None:
                break
        return {key: entries}

    def mmi_service(self, service: str, *, timeout: float | None = None) -> str:
        reply = self.request("mmi.service", service.encode(), timeout=timeout)
        return reply[-1].decode() if reply else ""
