"""Pilot tests of the live behaviour: connection loss, logs under load, call, help, palette."""

from __future__ import annotations

import asyncio
import time

from textual.widgets import DataTable, OptionList

from plantd.tui.actions import ACTIONS
from plantd.tui.screens.logs import LogsView
from plantd.tui.source import LogRecord, WorkerInfo
from plantd.tui.widgets.connection import Banner, ConnectionBar
from plantd.tui.widgets.help import HelpScreen, help_table
from plantd.tui.widgets.logview import LogView
from tests.tui.fakes import T0, FakeSource, make_app


async def test_broker_loss_banner_and_reconnect(fake: FakeSource) -> None:
    app = make_app(fake, poll_interval=0.05)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.query_one(ConnectionBar).connected is True
        fake.connected = False
        for _ in range(50):  # bounded: a loaded CI machine may take a few polls
            await pilot.pause(0.1)
            if app.query_one(Banner).display:
                break
        assert app.query_one(Banner).display is True
        assert app.query_one(ConnectionBar).connected is False
        fake.state["org.plantd.line9"] = {}
        fake.connected = True
        for _ in range(80):  # first retry after BACKOFF[0] = 1 s
            await pilot.pause(0.1)
            view = app.query_one("StateView")
            if app.query_one(ConnectionBar).connected and "org.plantd.line9" in view.scopes:  # type: ignore[attr-defined]
                break
        await pilot.pause()
        assert app.query_one(Banner).display is False
        assert "org.plantd.line9" in app.query_one("StateView").scopes  # type: ignore[attr-defined]


def rec(i: int, level: str = "info", service: str = "svc", seq: int | None = None) -> LogRecord:
    return LogRecord(T0 + i, level, service, f"message {i}", "h", 1, "l", {}, seq)


async def test_logs_burst_is_coalesced_and_bounded() -> None:
    fake = FakeSource(logs=[])
    app = make_app(fake, log_capacity=1000)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3")
        await pilot.pause()
        view = app.query_one(LogView)
        refreshes = 0
        original = view.records_changed

        def counting(added: int, evicted: int) -> None:
            nonlocal refreshes
            refreshes += 1
            original(added, evicted)

        view.records_changed = counting  # type: ignore[method-assign]
        start = time.perf_counter()
        for i in range(5000):
            fake.push_log(rec(i, seq=i if i != 2500 else i + 7))
        await pilot.pause(0.3)
        elapsed = time.perf_counter() - start
        store = app.log_store
        assert store.received == 5000
        assert len(store.records) == 1000  # bounded
        assert store.missed == 7
        assert refreshes <= 15  # one render per flush tick, not per record
        assert elapsed < 5.0


async def test_tail_pauses_when_scrolled_up_and_counts_new() -> None:
    fake = FakeSource(logs=[rec(i) for i in range(100)])
    app = make_app(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3")
        await pilot.pause(0.2)
        view = app.query_one(LogView)
        assert view.following
        await pilot.press("pageup")
        await pilot.pause()
        assert not view.following
        for i in range(100, 110):
            fake.push_log(rec(i))
        await pilot.pause(0.2)
        assert view.new_count == 10
        status = str(app.query_one("#log-status").render())
        assert "10 new" in status
        await pilot.press("t")
        await pilot.pause()
        assert view.following and view.new_count == 0


async def test_log_filters() -> None:
    logs = [rec(0, "debug", "a"), rec(1, "info", "b"), rec(2, "error", "a", None)]
    app = make_app(FakeSource(logs=logs))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3")
        await pilot.pause(0.2)
        store = app.log_store
        assert len(store.view) == 3
        await pilot.press("l")  # >= info
        assert [r.service for r in store.view] == ["b", "a"]
        await pilot.press("s")
        await pilot.pause()
        picker = app.screen.query_one(OptionList)
        picker.highlighted = [o.id for o in picker._options].index("a")
        await pilot.press("enter")
        await pilot.pause()
        assert [r.msg for r in store.view] == ["message 2"]
        await pilot.press("escape")
        await pilot.press("slash", *"message 1", "enter")
        await pilot.pause()
        assert [r.msg for r in store.view] == ["message 1"]
        assert app.query_one(LogsView).store.filter.text == "message 1"


async def test_log_history_from_logger_service() -> None:
    fake = FakeSource(logs=[rec(100)])
    fake.history_logs = [rec(i) for i in range(5)]
    app = make_app(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3")
        await pilot.pause(0.2)
        await pilot.press("h")
        await pilot.pause(0.2)
        assert [r.msg for r in app.log_store.records][:2] == ["message 0", "message 1"]
        assert len(app.log_store.records) == 6


async def test_call_send_partials_and_resend(fake: FakeSource) -> None:
    fake.replies[("org.plantd.module.Echo", "echo")] = [[b'{"p":1}'], [b'{"p":2}'], [b"done"]]
    app = make_app(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4")
        await pilot.click("#call-service")
        await pilot.press(*"org.plantd.module.Echo", "tab", *"echo", "f9")
        await pilot.pause(0.2)
        assert fake.calls == [("org.plantd.module.Echo", "echo", b"{}")]
        status = str(app.query_one("#call-status").render())
        assert "2 PARTIAL + FINAL" in status
        await pilot.press("f8")
        await pilot.pause(0.2)
        assert len(fake.calls) == 2


async def test_overview_c_prefills_call(fake: FakeSource) -> None:
    app = make_app(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("down", "c")
        await pilot.pause()
        assert app.query_one("#call-service").value == "org.plantd.State"  # type: ignore[attr-defined]


async def test_help_and_palette_list_every_action(fake: FakeSource) -> None:
    table = help_table(read_only=False)
    descriptions = {str(cell) for cell in table.columns[1]._cells}
    for spec in ACTIONS:
        assert any(d.startswith(spec.description) for d in descriptions), spec
    app = make_app(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for spec in ACTIONS:
            if spec.action != "command_palette":
                assert any(spec.description in t for t in titles), spec


async def test_starts_fast(fake: FakeSource) -> None:
    start = time.perf_counter()
    app = make_app(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert time.perf_counter() - start < 1.5  # generous for a shared 2-core CI box


async def test_worker_crash_is_a_notification_not_a_traceback(fake: FakeSource) -> None:
    async def broken(**_: object) -> list[str]:
        raise RuntimeError("boom")

    fake.list_scopes_page = broken  # type: ignore[method-assign]
    app = make_app(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.1)
        await asyncio.sleep(0)
        assert any("boom" in n.message for n in app._notifications)
        assert app.is_running


async def test_overview_g_lists_each_worker_then_folds_again(fake: FakeSource) -> None:
    fake.worker_list = [
        *fake.worker_list,
        *(WorkerInfo(f"st{i}", "org.plantd.State", 0.2, "idle") for i in range(10)),
    ]
    app = make_app(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        table = app.query_one("#workers", DataTable)
        folded = table.row_count
        assert folded == 4  # expired, late, Logger, and one row for the 11 State workers
        await pilot.press("g")
        await pilot.pause()
        assert table.row_count == len(fake.worker_list) == 14
        await pilot.press("g")
        await pilot.pause()
        assert table.row_count == folded
