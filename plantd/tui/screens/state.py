"""State: scope tree and key table, live from the state bus; every write goes through a confirm.

Both sides scale to a real plant: the key table is virtual (a `KeyWindow` of a few pages over a
scope of any size, the filter runs on the server) and the scope tree is built lazily (a node's
children become tree nodes when it is expanded; `list-scopes` is read page by page, the next
page when the operator reaches "… more scopes").
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from datetime import tzinfo
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, Label, Static, Tree
from textual.widgets.tree import TreeNode

from plantd.tui.actions import bindings_for
from plantd.tui.keywindow import KeyQuery, KeyWindow, PageResult, Step
from plantd.tui.messages import (
    HistoryLoaded,
    HistoryWanted,
    KeysFetched,
    KeysWanted,
    MoreScopesRequested,
    ReloadRequested,
    ScopesLoaded,
    WriteOp,
    WriteRequested,
)
from plantd.tui.model import format_updated, format_value, parse_value
from plantd.tui.screens.base import View
from plantd.tui.source import KeyEntry, StateChange
from plantd.tui.widgets.edit import EditDialog, EditResult
from plantd.tui.widgets.virtualtable import Column, VirtualTable

AUTO_EXPAND = 16  # a tree node with at most this many scopes below it opens by itself
KEY_COLUMNS = (  # at 80x24 "Updated" gives way first, then long values are cut
    Column("Key", "key", max_width=40),
    Column("Value", "value", flex=True),
    Column("Rev", "rev", justify="right"),
    Column("Updated", "updated", optional=True),
)


class KeyRows:
    """The `RowSource` of the key table: rows of the window, formatted for display."""

    def __init__(self, window: KeyWindow, tz: tzinfo | None) -> None:
        self.window = window
        self.tz = tz

    @property
    def row_count(self) -> int:
        return self.window.row_count

    def row(self, index: int) -> tuple[str, Sequence[Any]] | None:
        entry = self.window.entry(index)
        if entry is None:
            return None
        return entry.key, (
            entry.key,
            format_value(entry.value, 40),
            Text(str(entry.mod_revision), justify="right"),
            format_updated(entry.updated, self.tz),
        )

    def row_index(self, key: str) -> int | None:
        return self.window.index_of(key)


def tree_children(names: list[str], prefix: str) -> list[tuple[str, str, int, bool]]:
    """Direct children of a dotted prefix ("" = the root) in sorted `names`:
    (segment, full name, scopes below it, is itself a scope). O(children + log n) per child."""
    lo, hi = (
        (bisect_left(names, prefix + "."), bisect_left(names, prefix + "/"))
        if prefix
        else (
            0,
            len(names),
        )
    )
    out: dict[str, list[Any]] = {}
    i = lo
    while i < hi:
        name = names[i]
        segment = (name[len(prefix) + 1 :] if prefix else name).split(".", 1)[0]
        child = f"{prefix}.{segment}" if prefix else segment
        item = out.get(child)
        if item is None:
            below = bisect_left(names, child + "/", i, hi) - bisect_left(names, child + ".", i, hi)
            item = out[child] = [segment, child, below, False]
        if name == child:
            item[3] = True
            i += 1
        else:  # the first scope below `child`: skip its whole block
            i = bisect_left(names, child + "/", i, hi)
    return [tuple(v) for v in out.values()]


class StateView(View):
    BINDINGS = bindings_for("state")

    def __init__(self, tz: tzinfo | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.tz = tz
        self.scopes: list[str] = []
        self.scopes_next: str | None = None  # `after` of the next list-scopes page
        self.scopes_total: int | None = None
        self.scope: str | None = None
        self.window: KeyWindow | None = None
        self.filter_text = ""
        self.error = ""
        self._generation = 0
        self._issued: tuple[int, int, Step] | None = None  # (generation, version, step)
        self._scope_total: int | None = None  # unfiltered count, for "shown/all"
        self._expanded: set[str] = set()
        self._prefixes: dict[int, str] = {}  # tree node id -> dotted prefix
        self._more_node: int | None = None
        self._more_asked = False
        self._history_for: tuple[str, str] | None = None

    def compose(self) -> ComposeResult:
        with Horizontal():
            tree: Tree[str] = Tree("scopes", id="scopes")
            tree.show_root = False
            yield tree
            with Vertical(id="keys-pane"):
                yield Label("No scope selected", id="scope-title", classes="section")
                yield Input(
                    placeholder="key prefix, or a glob with * ? (Esc clears)",
                    id="key-filter",
                    compact=True,
                )
                yield VirtualTable(KEY_COLUMNS, id="keys")
                yield Static("", id="key-history")

    def on_mount(self) -> None:
        flt = self.query_one("#key-filter", Input)
        flt.cursor_blink = False
        flt.display = False
        self.query_one("#key-history").display = False
        self.watch(self.table, "cursor_row", self._cursor_moved, init=False)

    # ------------------------------------------------------------------ key history

    def _cursor_moved(self, _row: int) -> None:
        """Ask for the audit of the key under the cursor (when an Identity service runs)."""
        entry = self._entry()
        wanted = (self.scope, entry.key) if self.scope and entry else None
        if wanted == self._history_for or not getattr(self.app, "audit_available", False):
            return
        self._history_for = wanted
        if wanted is not None:
            self.post_message(HistoryWanted(*wanted))

    def show_history(self, event: HistoryLoaded) -> None:
        """Who changed the selected key, newest first (the audit trail)."""
        if (event.scope, event.key) != self._history_for:
            return  # the cursor moved on meanwhile
        pane = self.query_one("#key-history", Static)
        pane.display = True
        if event.error:
            pane.update(Text(f"History of {event.key}: {event.error}", style="dim"))
            return
        if not event.changes:
            pane.update(Text(f"{event.key}: no audited change", style="dim"))
            return
        text = Text()
        for i, change in enumerate(reversed(event.changes)):
            when = format_updated(change.ts, self.tz)[5:]  # MM-DD HH:MM:SS
            if i:
                text.append("\n")
            if i == 0:
                text.append("Last: ", style="bold")
            text.append(f"{when}  {change.principal}  {change.operation}  ")
            if change.outcome.startswith("denied"):
                rule = change.outcome.partition(":")[2]
                text.append(f"DENIED ({rule})", style="bold red")
                continue
            old = format_value(change.old, 16) if change.old is not None else "∅"
            new = format_value(change.new, 16) if change.new is not None else "∅"
            text.append(f"{old} → {new}")
            if change.revision:
                text.append(f"  rev {change.revision}", style="dim")
        pane.update(text)

    @property
    def table(self) -> VirtualTable:
        return self.query_one("#keys", VirtualTable)

    @property
    def keys(self) -> dict[str, KeyEntry]:
        """The keys held in memory (a few pages at most), by name."""
        return self.window.held() if self.window else {}

    def focus_main(self) -> None:
        target = "#keys" if self.scope else "#scopes"
        self.query_one(target).focus()

    # ------------------------------------------------------------------ scopes

    def show_scopes(
        self,
        scopes: list[str],
        *,
        more: bool = False,
        next_after: str | None = None,
        total: int | None = None,
        keep_line: bool = False,
    ) -> None:
        """The scope names known so far (sorted); `more`: the service has names after them.
        `keep_line`: the tree's cursor stays on its line (a page was appended under it)."""
        self.scopes = sorted(set(scopes))
        self.scopes_next = next_after if more else None
        self.scopes_total = total
        self._more_asked = False
        self._build_tree(keep_line)
        if self.scope is not None and self.scope not in self.scopes:
            beyond = self.scopes_next is not None and self.scope > self.scopes_next
            if not beyond:  # gone (not just on a page not read yet)
                self.scope = None
                self.window = None
                self.table.set_source(self._rows())
                self._render_title()
        elif self.scope is None and self.scopes:
            self._select(self.scopes[0])
            self._tree_cursor_to(self.scopes[0])

    def scopes_loaded(self, event: ScopesLoaded) -> None:
        page = event.page
        appended = event.after is not None
        names = [*self.scopes, *page.scopes] if appended else page.scopes
        self.show_scopes(
            names, more=page.more, next_after=page.next, total=page.total, keep_line=appended
        )

    def _build_tree(self, keep_line: bool = False) -> None:
        tree = self.query_one("#scopes", Tree)
        line = tree.cursor_line
        tree.clear()
        self._prefixes = {}
        self._populate(tree.root, "")
        self._more_node = None
        if self.scopes_next is not None:
            left = (self.scopes_total or 0) - len(self.scopes)
            label = f"… {left:,} more scopes" if left > 0 else "… more scopes"
            self._more_node = tree.root.add_leaf(Text(label, style="dim")).id
        if keep_line:
            tree.call_after_refresh(self._tree_cursor_to_line, line)
        elif self.scope is not None:
            self._tree_cursor_to(self.scope)

    def _tree_cursor_to_line(self, line: int) -> None:
        """Back to the line the cursor was on, or the last one if the tree got shorter (the
        new scopes went into a folded node)."""
        tree = self.query_one("#scopes", Tree)
        if tree.last_line >= 0:
            tree.move_cursor_to_line(max(0, min(line, tree.last_line)))

    def _tree_cursor_to(self, scope: str) -> None:
        """Put the tree's cursor on a scope once the tree has laid out its new lines."""
        node = self._find(scope)
        if node is not None:
            tree = self.query_one("#scopes", Tree)
            tree.call_after_refresh(tree.move_cursor, node, animate=False)

    def _populate(self, node: TreeNode[str], prefix: str) -> None:
        for segment, name, below, is_scope in tree_children(self.scopes, prefix):
            label = Text(segment, style="" if is_scope else "dim")
            opens = below and (below <= AUTO_EXPAND or name in self._expanded)
            if below and not opens:
                label.append(f" {below:,}", style="dim")
            child = node.add(label, data=name if is_scope else None, allow_expand=bool(below))
            self._prefixes[child.id] = name
            if opens:
                self._populate(child, name)
                child.expand()

    def _find(self, scope: str) -> TreeNode[str] | None:
        """The tree node of a scope, opening its ancestors (their children appear on demand)."""
        tree = self.query_one("#scopes", Tree)
        node: TreeNode[str] = tree.root
        parts = scope.split(".")
        for depth in range(len(parts)):
            prefix = ".".join(parts[: depth + 1])
            if node is not tree.root and not node.children and node.allow_expand:
                self._populate(node, self._prefixes[node.id])
                node.expand()
            match = next((c for c in node.children if self._prefixes.get(c.id) == prefix), None)
            if match is None:
                return None
            node = match
        return node

    @on(Tree.NodeExpanded, "#scopes")
    def _node_expanded(self, event: Tree.NodeExpanded[str]) -> None:
        prefix = self._prefixes.get(event.node.id)
        if prefix is None:
            return
        self._expanded.add(prefix)
        if not event.node.children:
            self._populate(event.node, prefix)

    @on(Tree.NodeCollapsed, "#scopes")
    def _node_collapsed(self, event: Tree.NodeCollapsed[str]) -> None:
        self._expanded.discard(self._prefixes.get(event.node.id, ""))

    @on(Tree.NodeSelected, "#scopes")
    @on(Tree.NodeHighlighted, "#scopes")
    def _scope_chosen(self, event: Tree.NodeSelected[str] | Tree.NodeHighlighted[str]) -> None:
        if event.node.id == self._more_node:
            if not self._more_asked and self.scopes_next is not None:
                self._more_asked = True
                self.post_message(MoreScopesRequested(self.scopes_next))
            return
        if event.node.data:
            self._select(event.node.data)

    # ------------------------------------------------------------------ keys

    def _rows(self) -> KeyRows | Any:
        from plantd.tui.widgets.virtualtable import EmptySource

        return KeyRows(self.window, self.tz) if self.window else EmptySource()

    def _select(self, scope: str) -> None:
        if scope == self.scope:
            return
        self.scope = scope
        self._scope_total = None
        self._open(KeyQuery.from_filter(scope, self.filter_text))

    def _open(self, query: KeyQuery) -> None:
        """A fresh window (new scope or filter) from its first page."""
        self._generation += 1
        self.window = KeyWindow(query, generation=self._generation)
        self.error = ""
        self.table.set_source(self._rows())
        self._render_title()
        self._fetch(0, self.table.visible_rows[1])

    def _fetch(self, first: int, last: int, to_end: bool = False) -> None:
        window = self.window
        if window is None:
            return
        step = window.need(first, last, to_end=to_end)
        if step is None:
            return
        issued = (window.generation, window.version, step)
        if issued == self._issued:
            return  # already asked for exactly this
        self._issued = issued
        self.post_message(KeysWanted(window.query, window.generation, step))

    @on(VirtualTable.RowsWanted, "#keys")
    def _rows_wanted(self, event: VirtualTable.RowsWanted) -> None:
        self._fetch(event.first, event.last, event.to_end)

    def keys_fetched(self, event: KeysFetched) -> None:
        window = self.window
        if window is None or event.query != window.query or event.generation != window.generation:
            return
        if event.result is None:
            self.error = event.error
            self._issued = None  # the same step may be asked again (scrolling retries it)
            self._render_title()
            return
        self.error = ""
        if isinstance(event.result, PageResult):
            window.apply_page(event.result, self.table.visible_rows[0])
        else:
            window.apply_walk(event.result)
        if not window.query.text and window.complete:
            self._scope_total = window.known_rows
        elif not window.query.text and window.total is not None:
            self._scope_total = window.total
        self._render_keys()

    def reload_keys(self) -> None:
        """After a write or a reconnect: fetch the held pages again, keep the cursor."""
        if self.window is None:
            return
        self.window.invalidate()
        self._fetch(*self.table.visible_rows)

    def apply_change(self, change: StateChange) -> None:
        """A state-bus event: update the row in place (no reload, cursor stays)."""
        op = change.op.lower()
        if op == "create-scope" or (
            change.scope not in self.scopes and op != "delete-scope" and self._listed(change.scope)
        ):
            self.show_scopes(
                [*self.scopes, change.scope],
                more=self.scopes_next is not None,
                next_after=self.scopes_next,
                total=self.scopes_total,
            )
        if op == "delete-scope":
            self.show_scopes(
                [s for s in self.scopes if s != change.scope],
                more=self.scopes_next is not None,
                next_after=self.scopes_next,
                total=self.scopes_total,
            )
            return
        if change.scope != self.scope or self.window is None:
            return
        if self.window.apply_change(change):
            self._render_keys()

    def _listed(self, scope: str) -> bool:
        """Would `scope` be on a page of list-scopes read so far?"""
        return self.scopes_next is None or scope <= self.scopes_next

    def _render_keys(self) -> None:
        self._render_title()
        self.table.rows_changed()

    def _render_title(self) -> None:
        title = self.query_one("#scope-title", Label)
        window = self.window
        if self.scope is None or window is None:
            title.update("No scope selected")
            return
        if self.error:
            title.update(f"{self.scope} — cannot list keys: {self.error}")
            return
        if not window.loaded_once:
            title.update(f"{self.scope} — loading…")
            return
        if window.complete:
            shown = f"{window.known_rows:,}"
        elif window.total is not None:
            shown = f"{window.total:,}"
        else:
            shown = f"{window.known_rows:,}+"
        query = window.query
        if not query.text:
            title.update(f"{self.scope} — {shown} keys")
            return
        of = f"/{self._scope_total:,}" if self._scope_total is not None else ""
        title.update(f"{self.scope} — {shown}{of} keys  {query.kind}: {query.text!r}")

    # ------------------------------------------------------------------ filter

    @on(Input.Changed, "#key-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        if event.value == self.filter_text:
            return
        self.filter_text = event.value
        if self.scope is not None:
            self._open(KeyQuery.from_filter(self.scope, self.filter_text))

    @on(Input.Submitted, "#key-filter")
    def _filter_done(self) -> None:
        self.table.focus()

    # ------------------------------------------------------------------ actions

    def _entry(self) -> KeyEntry | None:
        if self.window is None or not self.table.row_count:
            return None
        return self.window.entry(self.table.cursor_row)

    def _holds_all(self) -> bool:
        """Every key of the table is in memory (a small scope), so absent means absent."""
        window = self.window
        return bool(
            window
            and window.complete
            and all(slot.rows is not None and not slot.stale for slot in window.slots)
        )

    def action_filter(self) -> None:
        flt = self.query_one("#key-filter", Input)
        flt.display = True
        flt.focus()

    def action_clear_filter(self) -> None:
        flt = self.query_one("#key-filter", Input)
        flt.value = ""
        flt.display = False
        self.table.focus()

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
            op = WriteOp(
                "set",
                scope,
                result.name,
                old=old.value if old else None,
                new=parse_value(result.value),
                has_old=old is not None,
                prev_revision=old.mod_revision if old else None,
            )
            # a key not held may still exist on a page not loaded: the app reads it first
            self.post_message(WriteRequested(op, lookup=old is None and not self._holds_all()))

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
                    old=f"{self._scope_total:,} keys" if self._scope_total is not None else "",
                    has_old=True,
                )
            )
        )
