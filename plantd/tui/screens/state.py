"""State: scope tree and key table, live from the state bus; every write goes through a confirm."""

from __future__ import annotations

from datetime import tzinfo
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, Label, Tree

from plantd.tui.actions import bindings_for
from plantd.tui.messages import ReloadRequested, ScopeSelected, WriteOp, WriteRequested
from plantd.tui.model import format_updated, format_value, parse_value
from plantd.tui.screens.base import View
from plantd.tui.source import KeyEntry, StateChange
from plantd.tui.widgets.edit import EditDialog, EditResult
from plantd.tui.widgets.tables import selected_key, sync_rows

SET_OPS = {"set", "put", "update", "create"}
DELETE_OPS = {"delete", "del", "remove"}


class StateView(View):
    BINDINGS = bindings_for("state")

    def __init__(self, tz: tzinfo | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.tz = tz
        self.scopes: list[str] = []
        self.scope: str | None = None
        self.keys: dict[str, KeyEntry] = {}
        self.filter_text = ""

    def compose(self) -> ComposeResult:
        with Horizontal():
            tree: Tree[str] = Tree("scopes", id="scopes")
            tree.show_root = False
            yield tree
            with Vertical(id="keys-pane"):
                yield Label("No scope selected", id="scope-title", classes="section")
                yield Input(
                    placeholder="filter keys/values (Esc clears)", id="key-filter", compact=True
                )
                yield DataTable(id="keys", cursor_type="row")

    def on_mount(self) -> None:
        table = self.query_one("#keys", DataTable)
        table.add_column("Key", key="key")
        table.add_column("Value", key="value")
        table.add_column("Rev", key="rev")
        table.add_column("Updated", key="updated")
        flt = self.query_one("#key-filter", Input)
        flt.cursor_blink = False
        flt.display = False

    def focus_main(self) -> None:
        target = "#keys" if self.scope else "#scopes"
        self.query_one(target).focus()

    # ------------------------------------------------------------------ data in

    def show_scopes(self, scopes: list[str]) -> None:
        self.scopes = sorted(set(scopes))
        tree = self.query_one("#scopes", Tree)
        tree.clear()
        nodes: dict[str, Any] = {}
        for scope in self.scopes:
            parent = tree.root
            parts = scope.split(".")
            for depth, part in enumerate(parts):
                prefix = ".".join(parts[: depth + 1])
                node = nodes.get(prefix)
                if node is None:
                    node = parent.add(part, data=None, expand=True)
                    nodes[prefix] = node
                parent = node
            parent.data = scope
        for prefix, node in nodes.items():
            if not node.children:
                node.allow_expand = False
            if node.data == self.scope:
                tree.move_cursor(node)
            if node.data is None and prefix not in self.scopes:
                node.label = Text(str(node.label), style="dim")
        if self.scope is not None and self.scope not in self.scopes:
            self.scope = None
            self.keys = {}
            self._render_keys()
        elif self.scope is None and self.scopes:
            self._select(self.scopes[0])

    def show_keys(self, scope: str, keys: list[KeyEntry]) -> None:
        if scope != self.scope:
            return
        self.keys = {k.key: k for k in keys}
        self._render_keys()

    def apply_change(self, change: StateChange) -> None:
        """A state-bus event: update the row in place (no reload, cursor stays)."""
        op = change.op.lower()
        if op == "create-scope" or (change.scope not in self.scopes and op != "delete-scope"):
            self.show_scopes([*self.scopes, change.scope])
        if op == "delete-scope":
            self.show_scopes([s for s in self.scopes if s != change.scope])
            return
        if change.scope != self.scope or not change.key:
            return
        if op in DELETE_OPS:
            self.keys.pop(change.key, None)
        elif op in SET_OPS:
            old = self.keys.get(change.key)
            self.keys[change.key] = KeyEntry(
                key=change.key,
                value=change.value,
                mod_revision=change.revision,
                create_revision=old.create_revision if old else change.revision,
                version=(old.version + 1) if old else 1,
                updated=change.ts or (old.updated if old else ""),
            )
        self._render_keys()

    def _render_keys(self) -> None:
        title = self.query_one("#scope-title", Label)
        table = self.query_one("#keys", DataTable)
        if self.scope is None:
            title.update("No scope selected")
            table.clear()
            return
        needle = self.filter_text.lower()
        rows: dict[str, tuple[object, ...]] = {}
        for key in sorted(self.keys):
            entry = self.keys[key]
            value = format_value(entry.value, 40)
            if needle and needle not in key.lower() and needle not in value.lower():
                continue
            rows[key] = (
                key,
                value,
                Text(str(entry.mod_revision), justify="right"),
                format_updated(entry.updated, self.tz),
            )
        shown = f"{len(rows)}/{len(self.keys)}" if needle else str(len(self.keys))
        suffix = f"  filter: {self.filter_text!r}" if needle else ""
        title.update(f"{self.scope} — {shown} keys{suffix}")
        sync_rows(table, rows)

    def _select(self, scope: str) -> None:
        if scope == self.scope:
            return
        self.scope = scope
        self.keys = {}
        self._render_keys()
        self.post_message(ScopeSelected(scope))

    # ------------------------------------------------------------------ events

    @on(Tree.NodeSelected, "#scopes")
    @on(Tree.NodeHighlighted, "#scopes")
    def _scope_chosen(self, event: Tree.NodeSelected[str] | Tree.NodeHighlighted[str]) -> None:
        if event.node.data:
            self._select(event.node.data)

    @on(Input.Changed, "#key-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value
        self._render_keys()

    @on(Input.Submitted, "#key-filter")
    def _filter_done(self) -> None:
        self.query_one("#keys", DataTable).focus()

    # ------------------------------------------------------------------ actions

    def _entry(self) -> KeyEntry | None:
        key = selected_key(self.query_one("#keys", DataTable))
        return self.keys.get(key) if key else None

    def action_filter(self) -> None:
        flt = self.query_one("#key-filter", Input)
        flt.display = True
        flt.focus()

    def action_clear_filter(self) -> None:
        flt = self.query_one("#key-filter", Input)
        flt.value = ""
        flt.display = False
        self.filter_text = ""
        self._render_keys()
        self.query_one("#keys", DataTable).focus()

    def action_reload(self) -> None:
        self.post_message(ReloadRequested("scopes"))
        if self.scope:
            self.post_message(ReloadRequested("keys", self.scope))

    def action_copy_value(self) -> None:
        entry = self._entry()
        if entry is None:
            self.app.notify("No key selected", severity="warning")
            return
        text = entry.value if isinstance(entry.value, str) else format_value(entry.value)
        self.app.copy_to_clipboard(text)
        self.app.notify(f"Copied {entry.key} ({len(text)} chars) via OSC 52", title="Copy")

    def action_edit(self) -> None:
        entry = self._entry()
        if self.scope is None or entry is None:
            self.app.notify("Select a key to edit", severity="warning")
            return
        scope = self.scope

        def done(result: EditResult | None) -> None:
            if result is not None:
                self.post_message(
                    WriteRequested(
                        WriteOp(
                            "set",
                            scope,
                            entry.key,
                            old=entry.value,
                            new=parse_value(result.value),
                            has_old=True,
                            prev_revision=entry.mod_revision,
                        )
                    )
                )

        self.app.push_screen(
            EditDialog(
                f"Edit {scope}/{entry.key}",
                name=entry.key,
                name_editable=False,
                value=format_value(entry.value),
            ),
            done,
        )

    def action_new_key(self) -> None:
        if self.scope is None:
            self.app.notify("Select a scope first", severity="warning")
            return
        scope = self.scope

        def done(result: EditResult | None) -> None:
            if result is None:
                return
            old = self.keys.get(result.name)
            self.post_message(
                WriteRequested(
                    WriteOp(
                        "set",
                        scope,
                        result.name,
                        old=old.value if old else None,
                        new=parse_value(result.value),
                        has_old=old is not None,
                        prev_revision=old.mod_revision if old else None,
                    )
                )
            )

        self.app.push_screen(EditDialog(f"Set a key in {scope}"), done)

    def action_delete_key(self) -> None:
        entry = self._entry()
        if self.scope is None or entry is None:
            self.app.notify("Select a key to delete", severity="warning")
            return
        self.post_message(
            WriteRequested(
                WriteOp(
                    "delete",
                    self.scope,
                    entry.key,
                    old=entry.value,
                    has_old=True,
                    prev_revision=entry.mod_revision,
                )
            )
        )

    def action_create_scope(self) -> None:
        def done(result: EditResult | None) -> None:
            if result is not None:
                self.post_message(WriteRequested(WriteOp("create-scope", result.name)))

        self.app.push_screen(
            EditDialog("Create scope", name_label="Scope", value=None, hint=""), done
        )

    def action_delete_scope(self) -> None:
        if self.scope is None:
            self.app.notify("Select a scope to delete", severity="warning")
            return
        self.post_message(
            WriteRequested(
                WriteOp(
                    "delete-scope",
                    self.scope,
                    old=f"{len(self.keys)} keys",
                    has_old=True,
                )
            )
        )
