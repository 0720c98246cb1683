"""Blocking Majordomo client for the CLI and scripts: no event loop, fast to import."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import zmq

from plantd.client import errors
from plantd.client.exchange import Exchange, MmiListing, decode_mmi
from plantd.client.failover import PROBE_EVERY, BrokerDied, Brokers
from plantd.client.reply import (
    DEFAULT_ENDPOINT,
    call_body,
    decode_document,
    probe,
    timeout_error,
)
from plantd.client.secure import Handshake, resolve, secure_socket
from plantd.config import parse_endpoints
from plantd.security.caller import acting_principal

if TYPE_CHECKING:
    from plantd.protocol.mmi import BrokerStatus, ServiceEntry, WorkerEntry
    from plantd.security.settings import ClientSecurity


class SyncClient:
    """Blocking client with the same methods as :class:`plantd.client.Client`.

    One request at a time; the socket is replaced after a timeout so a late reply is never
    taken for the next request's. Several brokers fail over as in :class:`Client`.
    """

    def __init__(
        self,
        endpoint: str | Sequence[str] = DEFAULT_ENDPOINT,
        *,
        timeout: float = 5.0,
        retries: int = 0,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        check_reachable: bool = True,
        security: ClientSecurity | None = None,
    ) -> None:
        self.brokers = Brokers(parse_endpoints(endpoint, "endpoint"))
        self._sock_endpoint = ""
        self.timeout = timeout
        self.retries = retries
        self._ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket[bytes] | None = None
        self._check = check_reachable
        #: None: the process default (plantd.security.settings), resolved on first use
        self.security = security
        self._handshake: Handshake | None = None

    @property
    def endpoint(self) -> str:
        """The broker in use."""
        return self.brokers.current

    @property
    def endpoints(self) -> tuple[str, ...]:
        return self.brokers.endpoints

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._handshake is not None:
            self._handshake.close()
            self._handshake = None
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def _socket(self) -> zmq.Socket[bytes]:
        endpoint, wait = self.brokers.pick(time.monotonic())
        if self._sock is not None and endpoint != self._sock_endpoint:
            self.close()  # failed over: a new socket to the new broker
        if self._sock is None:
            if self._check:
                endpoint = self._first_reachable()
            elif wait > 0:
                time.sleep(wait)
            self.security = resolve(self.security)
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            self._handshake = secure_socket(sock, self.security, endpoint)
            self._sock, self._sock_endpoint = sock, endpoint
        return self._sock

    def _first_reachable(self) -> str:
        """Fail in a millisecond, not after the whole timeout, when no broker runs: probe
        each broker once, the first that accepts is used."""
        reasons = []
        for _ in self.brokers.endpoints:
            endpoint, _wait = self.brokers.pick(time.monotonic())
            reason = probe(endpoint)
            if reason is None:
                self._check = False
                return endpoint
            reasons.append(reason)
            self.brokers.failed(endpoint, time.monotonic(), reason)
        raise errors.BrokerUnreachable("; ".join(reasons))

    def _wait(self, sock: zmq.Socket[bytes], ms: int) -> bool:
        """Wait up to ``ms`` for a reply; while the handshake is undecided, also for its
        verdict (a refused key raises AuthenticationFailed at once)."""
        watch = self._handshake
        if watch is None:
            return bool(sock.poll(ms, zmq.POLLIN))
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(watch.monitor, zmq.POLLIN)
        deadline = time.monotonic() + ms / 1000
        while True:
            ready = dict(poller.poll(max(0, int((deadline - time.monotonic()) * 1000))))
            if watch.monitor in ready:
                try:
                    if watch.check():
                        self._handshake = None
                        return bool(sock.poll(max(0, int((deadline - time.monotonic()) * 1000))))
                except errors.AuthenticationFailed:
                    self._handshake = None
                    raise
            if sock in ready:
                return True
            if time.monotonic() >= deadline:
                return False

    def stream(
        self, service: str | bytes, *body: bytes, timeout: float | None = None
    ) -> Iterator[list[bytes]]:
        """Yield each reply part's body: the PARTIALs, then the FINAL."""
        ex = Exchange(
            service,
            body,
            timeout=self.timeout if timeout is None else timeout,
            retries=self.retries,
            failovers=len(self.brokers.endpoints) - 1,
            acting_for=acting_principal(),
        )
        brokers = self.brokers
        error: BaseException | None = None
        try:
            while True:
                sock = self._socket()
                endpoint = self._sock_endpoint
                try:
                    sock.send_multipart(ex.request)
                    ex.sent(time.monotonic())
                    while True:
                        left = ex.time_left(time.monotonic())
                        if left <= 0:
                            raise TimeoutError
                        if brokers.several and left > PROBE_EVERY:
                            if not self._wait(sock, int(PROBE_EVERY * 1000)):
                                reason = probe(endpoint)
                                if reason is not None:
                                    raise BrokerDied(reason)
                                continue
                        elif not self._wait(sock, int(left * 1000)):
                            raise TimeoutError
                        frames = sock.recv_multipart()
                        brokers.succeeded(endpoint)
                        reply = ex.received_frames(frames, time.monotonic())
                        if reply is None:
                            continue
                        yield reply.body
                        if reply.final:
                            return
                except (TimeoutError, BrokerDied) as exc:
                    self.close()
                    reason = exc.reason if isinstance(exc, BrokerDied) else probe(endpoint)
                    if brokers.several:
                        brokers.failed(endpoint, time.monotonic(), reason or "no reply in time")
                        if ex.failover():
                            continue
                    if not ex.timed_out():
                        raise timeout_error(endpoint, ex.service, ex.timeout, reason) from None
                except BaseException:
                    self.close()  # an abandoned stream leaves replies behind: drop the socket
                    raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            ex.finished(error)

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

    def _listing(self, listing: MmiListing, timeout: float | None) -> MmiListing:
        while listing.add(self.mmi(listing.name, *listing.body(), timeout=timeout)):
            pass
        return listing

    def mmi_all(self, name: str, *, timeout: float | None = None) -> dict[str, list[Any]]:
        """Every entry of a paged MMI listing (``mmi.workers``, ``mmi.services``), following
        the pages: ``{"workers": [...]}`` as one unpaged reply would be."""
        return self._listing(MmiListing(name), timeout).document()

    def services(self, *, timeout: float | None = None) -> list[ServiceEntry]:
        """Every service the broker knows (``mmi.services``, all pages), decoded."""
        return self._listing(MmiListing("mmi.services", typed=True), timeout).entries

    def workers(self, *, timeout: float | None = None) -> list[WorkerEntry]:
        """Every connected worker (``mmi.workers``, all pages), decoded."""
        return self._listing(MmiListing("mmi.workers", typed=True), timeout).entries

    def broker_status(self, *, timeout: float | None = None) -> BrokerStatus:
        """``mmi.broker``, decoded."""
        status: BrokerStatus = decode_mmi("decode_broker", self.mmi("mmi.broker", timeout=timeout))
        return status

    def mmi_service(self, service: str, *, timeout: float | None = None) -> str:
        reply = self.request("mmi.service", service.encode(), timeout=timeout)
        return reply[-1].decode() if reply else ""
