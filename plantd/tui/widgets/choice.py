"""The shape of every decision in the console: a title, a body, yes/no buttons (and extras).

The button focused first is always the one that changes nothing, so a stray Enter over SSH
never writes. Subclasses give the texts and key bindings (bound to ``yes``/``no``); an extra
button (``extra_buttons``) calls ``action_<its id>``.
"""

from __future__ import annotations

from typing import ClassVar

from rich.console import RenderableType
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static


class ChoiceDialog(ModalScreen[bool]):
    """Dismisses True for the ``yes`` button (or its key), False otherwise."""

    YES_LABEL: ClassVar[str] = "OK"
    NO_LABEL: ClassVar[str] = "Cancel"
    #: id of the button focused on open: "yes" or "no"; the harmless one
    SAFE: ClassVar[str] = "no"

    def dialog_title(self) -> str:
        raise NotImplementedError

    def dialog_body(self) -> RenderableType:
        raise NotImplementedError

    def danger(self) -> bool:
        return False

    def yes_variant(self) -> str:
        return "primary"

    def extra_buttons(self) -> list[tuple[str, str]]:
        """``(id, label)`` of buttons between yes and no; pressing one runs ``action_<id>``."""
        return []

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="danger" if self.danger() else ""):
            yield Label(self.dialog_title(), id="dialog-title")
            yield Static(self.dialog_body(), id="dialog-body")
            with Horizontal(id="dialog-buttons"):
                yield Button(self.YES_LABEL, id="yes", variant=self.yes_variant(), compact=True)  # type: ignore[arg-type]
                for button_id, label in self.extra_buttons():
                    yield Button(label, id=button_id, variant="warning", compact=True)
                yield Button(self.NO_LABEL, id="no", variant="default", compact=True)

    def on_mount(self) -> None:
        self.query_one(f"#{self.SAFE}", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id not in ("yes", "no"):
            getattr(self, f"action_{event.button.id}")()
            return
        self.dismiss(event.button.id == "yes")

    def action_yes(self) -> None:
        self.dismiss(True)

    def action_no(self) -> None:
        self.dismiss(False)
