"""Snapshot of every view and dialog at 80x24 (SSH default) and 120x40.

Deterministic: FakeSource data, frozen clock, UTC, no animations, no cursor blink, one poll.
SVGs live in <repo>/snapshots/test_snapshots/ (see conftest). Update with
`pytest tests/tui --snapshot-update` and look at the changed SVGs before committing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from textual.pilot import Pilot

from plantd.tui.messages import OverviewData
from plantd.tui.source import BrokerReach, Identity, KeyChange, ServiceInfo, WorkerInfo
from tests.tui.fakes import T0, FakeSource, big_scope, make_app

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]
TREND = (80.0, 95.0, 110.0, 140.0, 120.0, 100.0, 130.0, 150.0, 125.0, 120.0)


async def _trend(pilot: Pilot[Any]) -> None:
    """Feed ten polls with a varying rate so the sparklines have a shape."""
    app = pilot.app
    fake: FakeSource = app.source  # type: ignore[attr-defined]
    for i, rate in enumerate(TREND):
        services = [
            ServiceInfo(s.name, s.workers, s.queue, rate=(s.rate or 0) * rate / 120.0)
            for s in fake.service_list
        ]
        app.post_message(OverviewData(services, None, None, 1000.0 + i))
    await pilot.pause()


async def _call_reply(pilot: Pilot[Any]) -> None:
    fake: FakeSource = pilot.app.source  # type: ignore[attr-defined]
    fake.replies[("org.plantd.State", "list-scopes")] = [
        [b'{"progress": 50}'],
        [b'{"success": true, "data": {"scopes": ["org.plantd.line1", "site"]}}'],
    ]
    await pilot.press("4")
    await pilot.click("#call-service")
    await pilot.press(*"org.plantd.State", "tab", *"list-scopes", "f9")
    await pilot.pause()


async def _conflict(pilot: Pilot[Any]) -> None:
    fake: FakeSource = pilot.app.source  # type: ignore[attr-defined]
    fake.concurrent_write = ("org.plantd.line1", "mode", "local")  # someone else wins
    await pilot.press("2", "down", "down", "e", *"manual", "enter", "y")
    await pilot.pause()


def _many_workers() -> FakeSource:
    """A real state daemon registers 32 workers: they fold into one row, problems first."""
    fake = FakeSource()
    fake.service_list = [
        ServiceInfo(s.name, 32, s.queue, rate=s.rate) if s.name == "org.plantd.State" else s
        for s in fake.service_list
    ]
    fake.worker_list = [
        *fake.worker_list,
        *(
            WorkerInfo(f"{i:08x}", "org.plantd.State", 0.1 + i / 100, "busy" if i < 3 else "idle")
            for i in range(31)
        ),
    ]
    return fake


def _big_plant() -> FakeSource:
    """A 100,000-key scope among 2,500 scopes: the table and the tree page (issue 10)."""
    fake = FakeSource()
    fake.state = {"plant.big": big_scope(100_000)}
    for i in range(2_499):
        fake.state[f"site.area{i // 100:02d}.unit{i % 100:03d}"] = {}
    return fake


async def _settled(pilot: Pilot[Any], *keys: str) -> None:
    """Press `keys` on the State tab and wait (bounded) until no row is still loading."""
    from plantd.tui.screens.state import StateView

    await pilot.press("2", *keys)
    table = pilot.app.query_one(StateView).table
    for _ in range(200):
        await pilot.pause(0.02)
        first, last = table.visible_rows
        last = min(last, table.row_count - 1)
        if table.row_count and all(table.source.row(i) for i in range(first, last + 1)):
            break
    await pilot.pause()


async def _big_top(pilot: Pilot[Any]) -> None:
    await _settled(pilot)


async def _big_end(pilot: Pilot[Any]) -> None:
    await _settled(pilot, "end")


async def _big_filtered(pilot: Pilot[Any]) -> None:
    await _settled(pilot, "slash", *"tag.05", "enter", "end")


def _viewer() -> FakeSource:
    """Logged in as a viewer, with an Identity service that has the audit of line1/mode."""
    fake = FakeSource()
    fake.identity = Identity("vic", ("viewer",))
    fake.audit[("org.plantd.line1", "mode")] = [
        KeyChange(1, T0 - 3600, "alice", "set", "ok", "manual", "auto", 40),
        KeyChange(2, T0 - 600, "bob", "set", "ok", "auto", "local", 41),
        KeyChange(3, T0 - 300, "alice", "txn", "ok", "local", "auto", 41),
        KeyChange(4, T0 - 60, "vic", "set", "denied:default-deny"),
    ]
    return fake


async def _viewer_history(pilot: Pilot[Any]) -> None:
    await pilot.press("2", "down", "down")
    for _ in range(100):  # bounded: until the history pane shows the audit
        await pilot.pause(0.02)
        if pilot.app.source.history_requests:  # type: ignore[attr-defined]
            break
    await pilot.pause()


def _disconnected() -> FakeSource:
    fake = FakeSource()
    fake.connected = False
    return fake


def _two_brokers() -> FakeSource:
    """Two brokers, the first one dead: the console is on the second."""
    fake = FakeSource()
    fake.endpoint = "tcp://10.0.0.1:9797,tcp://10.0.0.2:9797"
    fake.reach = [
        BrokerReach("tcp://10.0.0.1:9797", "down"),
        BrokerReach("tcp://10.0.0.2:9797", "up", current=True),
    ]
    return fake


Case = tuple[tuple[str, ...], Callable[[Pilot[Any]], Awaitable[None]] | None, dict[str, Any]]
CASES: dict[str, Case] = {
    "overview": ((), _trend, {}),
    "state": (("2",), None, {}),
    "logs": (("3",), None, {}),
    "call": ((), _call_reply, {}),
    "help": (("f1",), None, {}),
    "edit_dialog": (("2", "e"), None, {}),
    "confirm_dialog": (("2", "down", "d"), None, {}),
    "conflict_dialog": ((), _conflict, {}),
    "service_picker": (("3", "s"), None, {}),
    "disconnected": ((), None, {"source": _disconnected}),
    "two_brokers_one_down": ((), None, {"source": _two_brokers}),
    "overview_many_workers": ((), None, {"source": _many_workers}),
    "read_only_state": (("2",), None, {"read_only": True}),
    "viewer_state_history": ((), _viewer_history, {"source": _viewer}),
    "state_big": ((), _big_top, {"source": _big_plant}),
    "state_big_end": ((), _big_end, {"source": _big_plant}),
    "state_big_filtered": ((), _big_filtered, {"source": _big_plant}),
}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("case", list(CASES))
def test_snapshot(snap_compare: Any, case: str, size: tuple[int, int]) -> None:
    press, run_before, options = CASES[case]
    options = dict(options)
    source = options.pop("source", FakeSource)()
    app = make_app(source, **options)
    assert snap_compare(app, press=press, terminal_size=size, run_before=run_before)
