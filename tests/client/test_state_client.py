"""StateClient and SyncStateClient against a real broker + state daemon: typed results,
errors as the client's exceptions, paging, and a watch that resumes across a restart."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from plantd.client.errors import RequestRejected
from plantd.client.state import KeyValue, Page, StateClient, SyncStateClient, WatchEvent
from tests.support.state import Stack, make_stack, write_until_ok

pytestmark = pytest.mark.timeout(120)

SCOPE = "org.plantd.Client"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = make_stack(tmp_path_factory.mktemp("state-client") / "home")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def state(stack: Stack) -> Iterator[SyncStateClient]:
    with SyncStateClient.connect(stack.endpoint, timeout=5.0) as client:
        yield client


def test_set_get_delete_are_typed_and_errors_keep_their_codes(state: SyncStateClient) -> None:
    first = state.set("tc", "k", {"t": 1}, return_prev=True)
    assert first.prev is None and first.version == 1
    assert first.mod_revision == first.revision == first.create_revision
    second = state.set("tc", "k", 2, prev_revision=first.mod_revision, return_prev=True)
    assert second.prev is not None and second.prev.value == {"t": 1}
    assert second.prev.mod_revision == first.mod_revision

    kv = state.get("tc", "k")
    assert isinstance(kv, KeyValue)
    assert (kv.scope, kv.key, kv.value, kv.version) == ("tc", "k", 2, 2)
    assert kv.mod_revision == second.mod_revision and kv.revision >= kv.mod_revision
    assert kv.data["value"] == 2  # the reply as sent (what -o json prints)

    with pytest.raises(RequestRejected) as exc:
        state.set("tc", "k", 3, prev_revision=first.mod_revision)
    assert exc.value.code == "conflict"
    with pytest.raises(RequestRejected) as exc:
        state.set("tc", "k", 3, if_absent=True)
    assert exc.value.code == "conflict"

    gone = state.delete("tc", "k", prev_revision=kv.mod_revision)
    assert gone.prev_mod_revision == kv.mod_revision and gone.revision > kv.mod_revision
    with pytest.raises(RequestRejected) as exc:
        state.get("tc", "k")
    assert exc.value.code == "not_found"


def test_txn_scopes_paging_and_export(state: SyncStateClient) -> None:
    created = state.create_scope("tc-pages")
    assert created.created and created.revision > 0
    assert not state.create_scope("tc-pages").created
    ops = [{"op": "set", "key": f"k{i}", "value": i} for i in range(5)]
    txn = state.txn(ops, scope="tc-pages")
    assert txn.revision > created.revision and len(txn.results) == 5

    page = state.list_keys_page("tc-pages", limit=2)
    assert isinstance(page, Page)
    assert [kv.key for kv in page.items] == ["k0", "k1"]
    assert page.more and page.next == "k1" and page.total == 5
    rest = state.list_keys_page("tc-pages", after=page.next, limit=10)
    assert [kv.key for kv in rest.items] == ["k2", "k3", "k4"] and not rest.more
    every = list(state.list_keys("tc-pages", limit=2))  # three pages, followed
    assert [(kv.key, kv.value, kv.scope) for kv in every] == [
        (f"k{i}", i, "tc-pages") for i in range(5)
    ]
    assert all(kv.mod_revision == txn.revision for kv in every)
    assert [kv.value for kv in state.list_keys("tc-pages", values=False)] == [None] * 5

    scopes = {s.scope: s for s in state.list_scopes(prefix="tc-")}
    assert scopes["tc-pages"].keys == 5
    assert scopes["tc-pages"].create_revision == created.revision

    exported = list(state.export())
    assert exported[0].revision >= txn.revision
    merged = {k: v for p in exported for k, v in p.scopes.get("tc-pages", {}).items()}
    assert merged == {f"k{i}": i for i in range(5)}

    deleted = state.delete_scope("tc-pages")
    assert deleted.deleted_keys == 5
    with pytest.raises(RequestRejected) as exc:
        state.delete_scope("tc-pages")
    assert exc.value.code == "not_found"


def test_async_client_reads_and_writes_the_same_store(stack: Stack) -> None:
    async def main() -> tuple[int, list[str], int]:
        async with StateClient.connect(stack.endpoint, timeout=5.0) as state:
            written = await state.set("tc-async", "a", "x")
            await state.set("tc-async", "b", "y")
            keys = [kv.key async for kv in state.list_keys("tc-async", limit=1)]
            head = await state.watch_page()
            return written.mod_revision, keys, head.revision

    rev, keys, head = asyncio.run(main())
    assert keys == ["a", "b"] and head >= rev + 1
    with SyncStateClient.connect(stack.endpoint) as state:
        assert state.get("tc-async", "a").mod_revision == rev


def state_bus(stack: Stack) -> str:
    return stack.bus()[1]


def test_watch_resumes_across_a_state_daemon_restart(tmp_path: Path) -> None:
    """Every acknowledged write is seen exactly once, in order, by a watch that lives
    through a kill -9 of the state daemon and by a second watch resumed from the first
    one's revision (the writes in between included, nothing repeated)."""
    stack = make_stack(tmp_path / "home")
    try:
        deadline = time.monotonic() + 60
        start = write_until_ok(stack, SCOPE, 0, deadline)

        async def watch_through_restart() -> tuple[list[WatchEvent], list[int], int]:
            seen: list[WatchEvent] = []
            written: list[int] = []
            async with StateClient.connect(stack.endpoint, timeout=2.0) as state:
                watch = state.watch(start, bus=state_bus(stack), scope=SCOPE, key="k")

                async def collect() -> None:
                    async with contextlib.aclosing(watch.__aiter__()) as events:
                        async for ev in events:
                            seen.append(ev)
                            if len(seen) == 6:
                                return

                reader = asyncio.create_task(collect())
                await asyncio.sleep(0.5)
                for v in (1, 2, 3):
                    written.append(
                        await asyncio.to_thread(write_until_ok, stack, SCOPE, v, deadline)
                    )
                await asyncio.to_thread(stack.state.kill)  # kill -9 between writes
                await asyncio.to_thread(stack.start_state)
                for v in (4, 5, 6):
                    written.append(
                        await asyncio.to_thread(write_until_ok, stack, SCOPE, v, deadline)
                    )
                await asyncio.wait_for(reader, 30)
                return seen, written, watch.revision

        seen, written, resume = asyncio.run(watch_through_restart())
        assert [e.revision for e in seen] == written
        assert [e.value for e in seen] == [1, 2, 3, 4, 5, 6]
        assert resume == written[-1]

        # the writes made while nobody watches come from the history, once
        later = [write_until_ok(stack, SCOPE, v, deadline) for v in (7, 8)]
        with SyncStateClient.connect(stack.endpoint, timeout=2.0) as state:
            events = state.watch(resume, bus=state_bus(stack), scope=SCOPE, key="k")
            resumed = [next(events), next(events)]
            events.close()  # type: ignore[attr-defined]
        assert [e.revision for e in resumed] == later
        assert [e.value for e in resumed] == [7, 8]
    finally:
        stack.close()
