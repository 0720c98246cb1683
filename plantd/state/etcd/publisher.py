"""The state bus feed on etcd: etcd's watch as the change history, and the publisher role.

Several state daemons serve one etcd prefix; exactly one of them publishes the changes on
the state bus: the holder of the leased key ``P m/publisher``. It tails an etcd watch of the
data keys from the last published revision, so every change (whichever daemon wrote it, and
TTL expiries that etcd itself deleted) is published once, in revision order, with no gap.

Fencing: the holder publishes only while its lease is surely alive by its own clock (the
last keep-alive was SENT less than ``ttl - margin`` ago; etcd cannot expire the lease
sooner), and records how far it published in ``P m/published`` with a txn that compares the
role key's create revision with its own (a deposed holder's record is refused). A new holder
takes over only after etcd expired the old lease, and resumes after the recorded revision.
The record lags the bus by at most ``RECORD_EVERY`` (a crash can leave up to that much to be
published again: subscribers drop a revision they already have, as plantd.client.state's
watch does). See docs/state.md ("Several state daemons on one etcd").
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
from aetcd import rpc

from plantd.state.errors import Compacted, StateError, Unavailable
from plantd.state.etcd import kv
from plantd.state.etcd.layout import prefix_end
from plantd.state.history import ChangeFeed, Event

if TYPE_CHECKING:
    from plantd.state.etcd.store import EtcdStore

__all__ = ["PublisherRole", "watch_changes"]

log = logging.getLogger("plantd.state.etcd")

#: how often the published revision is recorded while it moves
RECORD_EVERY = 0.5
#: a publish must happen this long before the holder's lease could expire
MARGIN = 0.5


async def watch_changes(
    store: EtcdStore, since: int, *, idle: float | None = None
) -> AsyncIterator[tuple[int, list[Event]]]:
    """``(revision, state events)`` of every change after ``since``, from etcd's history
    then live (an etcd watch of the data keys); Compacted if ``since`` is gone. Each read
    waits at most ``idle`` (default: the store's etcd timeout): Unavailable after that."""
    conn, lay = store.conn, store.layout
    call = conn.stub("Watch").Watch(metadata=(("hasleader", "true"),))
    wait = idle or conn.timeout
    try:
        create = rpc.WatchCreateRequest(
            key=lay.data, range_end=prefix_end(lay.data), start_revision=max(since, 1)
        )
        await call.write(rpc.WatchRequest(create_request=create))
        while True:
            try:
                resp = await asyncio.wait_for(call.read(), wait)
            except TimeoutError:
                raise Unavailable(
                    f"etcd watch from {conn.endpoint} sent nothing for {wait:g} s",
                    reason="watch timeout",
                ) from None
            except rpc.AioRpcError as exc:
                raise conn.failure(exc, conn.endpoint, "watch") from None
            if resp is grpc.aio.EOF:
                raise Unavailable(f"etcd watch stream from {conn.endpoint} ended")
            if resp.compact_revision:
                raise Compacted(
                    f"revision {since} is compacted", compact_revision=int(resp.compact_revision)
                )
            if resp.canceled:
                raise Unavailable(
                    f"etcd cancelled the watch: {resp.cancel_reason or 'no reason'}",
                    reason=resp.cancel_reason,
                )
            now = time.time()
            for rev, group in itertools.groupby(resp.events, key=lambda e: e.kv.mod_revision):
                if rev <= since:
                    continue
                yield int(rev), lay.translate(list(group), now)
    finally:
        call.cancel()


class PublisherRole:
    """Campaign for the publisher role; while held, feed every change to ``feed``."""

    def __init__(self, store: EtcdStore, feed: ChangeFeed, *, ttl: int) -> None:
        self.store = store
        self.feed = feed
        self.ttl = max(ttl, 2)
        self.identity = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.leading = False
        self.published = 0
        self.takeovers = 0
        self._valid_until = 0.0
        self._stopping = False
        self._lease = 0
        self._role_rev = 0

    async def stop(self) -> None:
        """Step down: revoke the lease so another daemon takes over at once."""
        self._stopping = True
        if self._lease:
            with contextlib.suppress(StateError):
                await self.store.conn.call(
                    "Lease", "LeaseRevoke", rpc.LeaseRevokeRequest(ID=self._lease), timeout=1.0
                )

    async def run(self) -> None:
        while not self._stopping:
            try:
                if await self._campaign():
                    await self._lead()
                else:
                    await asyncio.sleep(self.ttl / 4)
            except (StateError, rpc.AioRpcError) as exc:
                if self.leading:
                    log.warning("state publisher: stepping down: %s", exc)
                await asyncio.sleep(0.2)
            finally:
                self.leading = False

    async def _campaign(self) -> bool:
        conn, lay = self.store.conn, self.store.layout
        grant = await conn.call("Lease", "LeaseGrant", rpc.LeaseGrantRequest(TTL=self.ttl))
        sent = time.monotonic()
        r = await kv.txn(
            conn,
            [kv.cmp_create(lay.publisher, 0)],
            [kv.put(lay.publisher, self.identity.encode(), int(grant.ID))],
        )
        if not r.succeeded:
            with contextlib.suppress(StateError):
                await conn.call("Lease", "LeaseRevoke", rpc.LeaseRevokeRequest(ID=grant.ID))
            return False
        self._lease = int(grant.ID)
        self._valid_until = sent + self.ttl - MARGIN
        self._role_rev = int(r.header.revision)  # the role key's create revision
        return True

    async def _lead(self) -> None:
        conn, lay = self.store.conn, self.store.layout
        r = await kv.txn(conn, (), [kv.get(lay.published)])
        kvs = r.responses[0].response_range.kvs
        start = int(kvs[0].value) if kvs else await self.store.current_revision()
        self.published = start
        self.leading = True
        self.takeovers += 1
        log.info(
            "state publisher: role taken by %s, publishing after revision %d", self.identity, start
        )
        keep = asyncio.create_task(self._keep_alive())
        record = asyncio.create_task(self._record())
        try:
            await self._tail(start, keep, record)
        finally:
            keep.cancel()
            record.cancel()
            await asyncio.gather(keep, record, return_exceptions=True)

    async def _tail(self, start: int, *tasks: asyncio.Task[None]) -> None:
        async for rev, events in watch_changes(self.store, start, idle=3600.0):
            for t in tasks:
                if t.done():
                    t.result()  # a lost lease or role: raise it
            if time.monotonic() >= self._valid_until or self._stopping:
                raise Unavailable("publisher lease not confirmed in time: not publishing")
            await self.feed.publish(events)
            self.published = rev

    async def _keep_alive(self) -> None:
        conn = self.store.conn
        call = conn.stub("Lease").LeaseKeepAlive(metadata=(("hasleader", "true"),))
        try:
            while True:
                sent = time.monotonic()
                await call.write(rpc.LeaseKeepAliveRequest(ID=self._lease))
                resp = await asyncio.wait_for(call.read(), conn.timeout)
                if resp is grpc.aio.EOF or resp.TTL <= 0:
                    raise Unavailable("publisher lease expired")
                self._valid_until = sent + resp.TTL - MARGIN
                await asyncio.sleep(self.ttl / 4)
        except rpc.AioRpcError as exc:
            raise conn.failure(exc, conn.endpoint, "lease keep-alive") from None
        except TimeoutError:
            raise Unavailable("publisher lease keep-alive timed out") from None
        finally:
            call.cancel()

    async def _record(self) -> None:
        conn, lay = self.store.conn, self.store.layout
        recorded = -1
        while True:
            await asyncio.sleep(RECORD_EVERY)
            upto = self.published
            if upto == recorded:
                continue
            r = await kv.txn(
                conn,
                [kv.cmp_create(lay.publisher, self._role_rev)],
                [kv.put(lay.published, str(upto).encode())],
            )
            if not r.succeeded:
                raise Unavailable("publisher role lost (another daemon holds it)")
            recorded = upto
