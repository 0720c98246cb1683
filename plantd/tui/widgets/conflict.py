"""A compare-and-set conflict: the value that won next to the operator's, and a reload offer.

The operator must see what they would have overwritten before deciding anything, so the dialog
shows the key as it is now (fetched after the conflict) right above the value they meant to
write. It never writes: Reload asks the app to fetch the keys again, Close leaves things as is,
Apply mine asks for the same write on top of the value that won (compare-and-set against its
revision), which goes through the usual confirm dialog.
"""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.binding import Binding

from plantd.tui.messages import WriteOp, WriteRequested
from plantd.tui.model import format_value
from plantd.tui.source import KeyEntry
from plantd.tui.widgets.choice import ChoiceDialog


def _rev(text: Text, revision: int | None) -> Text:
    if revision is not None:
        text.append(f"  rev {revision}", style="dim")
    return text


def describe_conflict(
    op: WriteOp,
    current: KeyEntry | None,
    current_known: bool,
    conflict_revision: int | None,
    limit: int = 200,
) -> Group:
    """Explanation plus a table: what you loaded, what won, what you wanted (not written)."""
    head = Text.assemble(
        (f"{op.target}", "bold"),
        " was changed by someone else after you loaded it.\n",
        ("Your value was NOT written.", "bold red"),
    )
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("Scope", op.scope)
    if op.key:
        table.add_row("Key", op.key)
    if op.has_old:
        table.add_row("You loaded", _rev(Text(format_value(op.old, limit)), op.prev_revision))
    else:
        table.add_row("You loaded", Text("(no such key)", style="italic dim"))
    if current is not None:
        won = _rev(
            Text(format_value(current.value, limit), style="bold yellow"), current.mod_revision
        )
    elif current_known:
        won = _rev(Text("(key deleted)", style="bold yellow"), conflict_revision)
    else:
        won = _rev(Text("(could not read the current value)", style="italic"), conflict_revision)
    table.add_row(Text("Now (won)", style="bold yellow"), won)
    mine = (
        Text(format_value(op.new, limit), style="bold")
        if op.kind == "set"
        else Text("(delete the key)", style="bold")
    )
    table.add_row("Yours", mine.append("  not written", style="red"))
    hint = Text(
        "Reload fetches the keys again. Apply mine: yours on top of the value that won,"
        " after a confirm.",
        style="dim",
    )
    return Group(head, Text(), table, Text(), hint)


class ConflictDialog(ChoiceDialog):
    """Returns True when the operator asks to reload the scope's keys."""

    BINDINGS = [
        Binding("r", "yes", "Reload"),
        Binding("a", "apply_mine", "Apply mine"),
        Binding("escape,c", "no", "Close"),
    ]
    YES_LABEL = "Reload (r)"
    NO_LABEL = "Close (Esc)"
    SAFE = "yes"  # reloading only reads: the safe default for a stray Enter

    def __init__(
        self,
        op: WriteOp,
        current: KeyEntry | None,
        *,
        current_known: bool,
        conflict_revision: int | None = None,
    ) -> None:
        super().__init__()
        self.op = op
        self.current = current
        self.current_known = current_known
        self.conflict_revision = conflict_revision

    def danger(self) -> bool:
        return True

    def dialog_title(self) -> str:
        return "Conflict — not written"

    def on_top(self) -> WriteOp | None:
        """The operator's write again, against what won; None when there is nothing to apply
        (the current value could not be read, or a delete whose key is already gone)."""
        op = self.op
        if not self.current_known or op.kind not in ("set", "delete"):
            return None
        if self.current is None:
            if op.kind == "delete":
                return None
            return WriteOp("set", op.scope, op.key, new=op.new, prev_revision=0)
        return WriteOp(
            op.kind,
            op.scope,
            op.key,
            old=self.current.value,
            new=op.new,
            has_old=True,
            prev_revision=self.current.mod_revision,
        )

    def extra_buttons(self) -> list[tuple[str, str]]:
        return [("apply_mine", "Apply mine (a)")] if self.on_top() is not None else []

    def action_apply_mine(self) -> None:
        op = self.on_top()
        if op is None:
            self.app.bell()
            return
        self.app.post_message(WriteRequested(op))
        self.dismiss(False)

    def dialog_body(self) -> Group:
        return describe_conflict(self.op, self.current, self.current_known, self.conflict_revision)
