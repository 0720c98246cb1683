"""Pilot tests of every state write path: confirm, cancel, conflict, read-only refusal."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console
from textual.widgets import Static

from plantd.tui.app import PlantApp
from plantd.tui.screens.state import StateView
from plantd.tui.widgets.confirm import ConfirmDialog
from plantd.tui.widgets.conflict import ConflictDialog
from plantd.tui.widgets.edit import EditDialog
from plantd.tui.widgets.virtualtable import VirtualTable
from tests.tui.fakes import FakeSource, make_app


def body_text(screen: Any) -> str:
    """Plain text of a dialog body as the operator reads it (rich renderables included)."""
    console = Console(width=70, file=io.StringIO(), color_system=None)
    with console.capture() as capture:
        console.print(screen.query_one("#dialog-body", Static).content)
    return capture.get()


def messages(app: PlantApp) -> list[str]:
    return [f"{n.title}: {n.message}" for n in app._notifications]


async def open_state(pilot: Any) -> None:
    await pilot.press("2")
    await pilot.pause()


async def test_edit_confirm_writes_with_prev_revision(fake: FakeSource) -> None:
    app = make_app(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_state(pilot)
        await pilot.press("down", "down", "down", "e")  # enabled, limits, mode, setpoint
        assert isinstance(app.screen, EditDialog)
        await pilot.press(*"13.0", "enter")
        assert isinstance(app.screen, ConfirmDialog)
        op = app.screen.op
        assert (op.key, op.old, op.new, op.prev_revision) == ("setpoint", 12.5, 13.0, 42)
        await pilot.press("y")
        await pilot.pause()
        assert fake.writes == [("set", "org.plantd.line1", "setpoint", 13.0, 42)]
        assert fake.state["org.plantd.line1"]["setpoint"].value == 13.0
        await pilot.pause()
        table = app.query_one("#keys", VirtualTable)
        assert table.get_cell("setpoint", "value") == "13.0"
        assert any("State set" in m for m in messages(app))


async def test_cancel_writes_nothing(fake: FakeSource) -> None:
    app = make_app(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_state(pilot)
        await pilot.press("e", *"false", "enter")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("enter")  # focus starts on Cancel: a stray Enter never writes
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmDialog)
        await pilot.press("d", "n")  # delete, then cancel with n
        await pilot.press("e", "escape")  # edit dialog cancelled with Esc
        await pilot.pause()
        assert fake.writes == []


async def test_conflict_is_shown_not_overwritten(fake: FakeSource) -> None:
    app = make_app(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_state(pilot)
        fake.concurrent_write = ("org.plantd.line1", "enabled", False)  # someone else wins
        await pilot.press("e", *"null", "enter", "y")
        await pilot.pause()
        assert isinstance(app.screen, ConflictDialog)
        assert fake.writes == [("set", "org.plantd.line1", "enabled", None, 17)]
        assert fake.state["org.plantd.line1"]["enabled"].value is False  # theirs kept
        # the value that won (with its revision) is shown next to the one not written
        assert app.screen.current is not None
        assert (app.screen.current.value, app.screen.current.mod_revision) == (False, 101)
        body = body_text(app.screen)
        assert "Now (won)" in body and "false" in body and "rev 101" in body
        assert "Yours" in body and "null" in body and "not written" in body
        table = app.query_one("#keys", VirtualTable)
        assert table.get_cell("enabled", "value") == "true"  # nothing reloaded behind the dialog
        await pilot.press("enter")  # Reload has the focus
        await pilot.pause()
        await pilot.pause()
        assert not isinstance(app.screen, ConflictDialog)
        assert table.get_cell("enabled", "value") == "false"
        assert table.get_cell("enabled", "rev").plain == "101"


async def test_conflict_apply_mine_writes_on_top_after_a_confirm(fake: FakeSource) -> None:
    app = make_app(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_state(pilot)
        fake.concurrent_write = ("org.plantd.line1", "enabled", False)  # someone else wins
        await pilot.press("e", *"null", "enter", "y")
        await pilot.pause()
        assert isinstance(app.screen, ConflictDialog)
        await pilot.press("a")
        await pilot.pause()
        # the same write, now against what won: confirmed like any other write
        assert isinstance(app.screen, ConfirmDialog)
        op = app.screen.op
        assert (op.old, op.new, op.prev_revision) == (False, None, 101)
        await pilot.press("y")
        await pilot.pause()
        await pilot.pause()
        assert fake.writes[-1] == ("set", "org.plantd.line1", "enabled", None, 101)
        assert fake.state["org.plantd.line1"]["enabled"].value is None


async def test_conflict_close_keeps_table_and_reports_deleted_key(fake: FakeSource) -> None:
    app = make_app(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_state(pilot)
        await pilot.press("e", *"false", "enter")
        del fake.state["org.plantd.line1"]["enabled"]  # someone deleted it meanwhile
        await pilot.press("y")
        await pilot.pause()
        assert isinstance(app.screen, ConflictDialog)
        assert app.screen.current is None and app.screen.current_known
        assert "(key deleted)" in body_text(app.screen)
        # applying mine on top of a deletion means: create it, only if still absent
        assert app.screen.on_top() is not None and app.screen.on_top().prev_revision == 0
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, ConflictDialog)
        assert fake.writes == [("set", "org.plantd.line1", "enabled", False, 17)]


async def test_delete_key_and_scope_lifecycle(fake: FakeSource) -> None:
    app = make_app(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_state(pilot)
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmDialog)
        assert app.screen.op.kind == "delete"
        await pilot.press("y")
        await pilot.pause()
        assert "enabled" not in fake.state["org.plantd.line1"]
        await pilot.press("a", *"org.plantd.line3", "enter")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("y")
        await pilot.pause()
        assert "org.plantd.line3" in fake.state
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmDialog)
        assert app.screen.op.kind == "delete-scope"
        await pilot.press("y")
        await pilot.pause()
        assert ("delete-scope", "org.plantd.line1") in fake.writes


async def test_new_key_without_revision(fake: FakeSource) -> None:
    app = make_app(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_state(pilot)
        await pilot.press("n", *"speed", "enter", *'"fast"', "enter")
        assert isinstance(app.screen, ConfirmDialog)
        assert not app.screen.op.has_old
        await pilot.press("y")
        await pilot.pause()
        assert fake.writes == [("set", "org.plantd.line1", "speed", "fast", None)]


async def test_read_only_refuses_every_write(fake: FakeSource) -> None:
    app = make_app(fake, read_only=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_state(pilot)
        for key in ("e", "n", "d", "a", "x"):
            await pilot.press(key)
            await pilot.pause()
            assert not isinstance(app.screen, EditDialog | ConfirmDialog), key
        assert fake.writes == []
        refusals = [m for m in messages(app) if m.startswith("Read-only")]
        assert len(refusals) == 5
        # the palette marks write actions too
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "State: Edit value (read-only: disabled)" in titles
        # and the Call view refuses operations that may write
        await pilot.press("4")
        await pilot.click("#call-service")
        await pilot.press(*"org.plantd.State", "tab", *"state-set", "f9")
        await pilot.pause()
        assert fake.calls == []


async def test_state_bus_change_applies_in_place(fake: FakeSource) -> None:
    from plantd.tui.source import StateChange

    app = make_app(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_state(pilot)
        table = app.query_one("#keys", VirtualTable)
        table.move_cursor(row=2)
        fake.push_state(StateChange("org.plantd.line1", "setpoint", "set", 99, 150, ""))
        fake.push_state(StateChange("org.plantd.line1", "enabled", "delete", None, 151, ""))
        fake.push_state(StateChange("org.plantd.new", "", "create-scope"))
        await pilot.pause()
        await pilot.pause()
        assert table.get_cell("setpoint", "value") == "99"
        assert "enabled" not in app.query_one(StateView).keys
        assert "org.plantd.new" in app.query_one("StateView").scopes  # type: ignore[attr-defined]


async def test_copy_value_uses_osc52(fake: FakeSource) -> None:
    app = make_app(fake)
    copied: list[str] = []
    app.copy_to_clipboard = copied.append  # type: ignore[method-assign]
    async with app.run_test(size=(80, 24)) as pilot:
        await open_state(pilot)
        await pilot.press("down", "y")  # limits
        assert copied == ['{"hi":100,"lo":0}']
