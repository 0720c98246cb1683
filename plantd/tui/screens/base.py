"""What every view shares: read-only handling of its write actions."""

from __future__ import annotations

from typing import Protocol

from textual.containers import Container

from plantd.tui.actions import ACTIONS, WRITE_ACTIONS


class ConsoleApp(Protocol):
    """The parts of the app a view relies on (keeps views testable and the import graph flat)."""

    read_only: bool


class View(Container):
    """A tab's content. Write actions are hidden and replaced by a refusal in read-only mode."""

    @property
    def read_only(self) -> bool:
        return bool(getattr(self.app, "read_only", False))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in WRITE_ACTIONS:
            return not self.read_only
        if action == "refuse":
            return self.read_only
        return True

    def action_refuse(self, action: str) -> None:
        """Say why a write key did nothing (read-only mode), rather than ignoring it."""
        desc = next((a.description for a in ACTIONS if a.action == action), action)
        why = getattr(self.app, "read_only_reason", "") or "the console runs --read-only"
        self.app.notify(
            f"{desc}: disabled, {why}.",
            title="Read-only",
            severity="warning",
        )

    def focus_main(self) -> None:
        """Put focus on the view's main widget (called when its tab is shown)."""
