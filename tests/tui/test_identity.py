"""The console and identity: the header names the principal, a viewer's writes are disabled
with the reason, a denial's reason is shown, the State view shows who changed a key."""

from __future__ import annotations

from typing import Any

from plantd.tui.screens.state import StateView
from plantd.tui.source import Identity, KeyChange
from plantd.tui.widgets.connection import ConnectionBar
from plantd.tui.widgets.message import MessageDialog
from tests.tui.fakes import T0, FakeSource, make_app


async def _until(pilot: Any, predicate: Any) -> None:
    for _ in range(200):
        if predicate():
            return
        await pilot.pause(0.02)
    raise AssertionError("condition not reached")


async def test_viewer_header_and_disabled_writes() -> None:
    fake = FakeSource()
    fake.identity = Identity("vic", ("viewer",))
    app = make_app(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        bar = app.query_one(ConnectionBar)
        await _until(pilot, lambda: bar.who)
        assert bar.who == "vic (viewer)" and app.read_only and bar.read_only
        assert "vic (viewer)" in str(bar.render())
        await pilot.press("2", "e")  # edit: refused with the reason, nothing written
        await pilot.pause()
        assert fake.writes == []
        assert any("vic may only read" in str(n.message) for n in app._notifications)


async def test_operator_writes_and_denial_reason_shown() -> None:
    fake = FakeSource()
    fake.identity = Identity("alice", ("operator",))
    fake.refuse_writes = (
        "not authorized: rule 'recipes-frozen' refuses it: alice (operator) may not write"
    )
    app = make_app(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await _until(pilot, lambda: app.query_one(ConnectionBar).who)
        assert not app.read_only
        await pilot.press("2", "e", *"x", "enter", "y")
        await _until(pilot, lambda: isinstance(app.screen, MessageDialog))
        dialog = app.screen
        assert isinstance(dialog, MessageDialog) and dialog.title_text == "Not authorized"
        assert "rule 'recipes-frozen'" in str(dialog.body.renderables[0])  # type: ignore[attr-defined]


async def test_no_identity_service_keeps_the_header_and_history_off() -> None:
    fake = FakeSource()
    app = make_app(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2", "down")
        await pilot.pause()
        assert app.query_one(ConnectionBar).who == "" and not app.read_only
        assert fake.history_requests == []
        assert not app.query_one("#key-history").display


async def test_history_of_the_selected_key() -> None:
    fake = FakeSource()
    fake.identity = Identity("alice", ("operator",))
    fake.audit[("org.plantd.line1", "mode")] = [
        KeyChange(1, T0 - 60, "bob", "set", "ok", "manual", "auto", 41),
    ]
    app = make_app(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await _until(pilot, lambda: app.audit_available)
        await pilot.press("2", "down", "down")
        view = app.query_one(StateView)
        pane = view.query_one("#key-history")
        await _until(pilot, lambda: pane.display)
        text = str(pane.render())
        assert "Last:" in text and "bob" in text and '"manual" → "auto"' in text
        assert fake.history_requests[-1] == ("org.plantd.line1", "mode")
