"""Confirmation of a state write: shows old -> new like caput, defaults to Cancel."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.binding import Binding

from plantd.tui.messages import WriteOp
from plantd.tui.model import format_value
from plantd.tui.widgets.choice import ChoiceDialog

TITLES = {
    "set": "Set value",
    "delete": "Delete key",
    "create-scope": "Create scope",
    "delete-scope": "Delete scope",
}


def describe(op: WriteOp, limit: int = 200) -> Table:
    """The Old/New table of a write (shared by the confirm and conflict dialogs)."""
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("Scope", op.scope)
    if op.key:
        table.add_row("Key", op.key)
    if op.kind == "set":
        old = (
            Text(format_value(op.old, limit))
            if op.has_old
            else Text("(new key)", style="italic dim")
        )
        if op.has_old and op.prev_revision is not None:
            old.append(f"  rev {op.prev_revision}", style="dim")
        table.add_row("Old", old)
        table.add_row("New", Text(format_value(op.new, limit), style="bold"))
    elif op.kind == "delete":
        old = Text(format_value(op.old, limit))
        if op.prev_revision is not None:
            old.append(f"  rev {op.prev_revision}", style="dim")
        table.add_row("Old", old)
        table.add_row("New", Text("(deleted)", style="bold red"))
    elif op.kind == "delete-scope":
        table.add_row("Old", Text(str(op.old or "scope")))
        table.add_row("New", Text("(scope and all its keys deleted)", style="bold red"))
    else:
        table.add_row("Old", Text("(does not exist)", style="italic dim"))
        table.add_row("New", Text("(empty scope)", style="bold"))
    return table


class ConfirmDialog(ChoiceDialog):
    """Returns True only on an explicit confirm (y or the Confirm button)."""

    BINDINGS = [
        Binding("y", "yes", "Confirm"),
        Binding("n,escape", "no", "Cancel"),
    ]
    YES_LABEL = "Confirm (y)"
    NO_LABEL = "Cancel (n)"

    def __init__(self, op: WriteOp) -> None:
        super().__init__()
        self.op = op

    def danger(self) -> bool:
        return self.op.kind in ("delete", "delete-scope")

    def yes_variant(self) -> str:
        return "error" if self.danger() else "warning"

    def dialog_title(self) -> str:
        return f"{TITLES.get(self.op.kind, self.op.kind)}?"

    def dialog_body(self) -> Table:
        return describe(self.op)
