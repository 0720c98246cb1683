"""A table whose rows live elsewhere: it draws only the visible ones and asks for the rest.

`DataTable` holds every row (100,000 keys would be 100,000 rows of widgets' worth of work);
this one knows only a row count and a `RowSource` that answers for the rows held in memory.
A visible row the source cannot answer is drawn as a placeholder and the table posts
`RowsWanted` (once per change of what is visible): the view's worker fetches, the view calls
`rows_changed()`. It renders and posts messages; it never fetches anything itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

PLACEHOLDER = "…"
CELL_PADDING = 1
MIN_FLEX = 8  # a flex column is never cut below this


@dataclass(frozen=True, slots=True)
class Column:
    """`optional`: dropped when the row does not fit; `flex`: cut (with …) to fit."""

    label: str
    key: str
    justify: str = "left"  # "left" | "right"
    max_width: int | None = None
    optional: bool = False
    flex: bool = False


class RowSource(Protocol):
    """What the table reads: how many rows, and the cells of a row if it is held."""

    @property
    def row_count(self) -> int: ...
    def row(self, index: int) -> tuple[str, Sequence[Any]] | None: ...
    def row_index(self, key: str) -> int | None: ...


class EmptySource:
    row_count = 0

    def row(self, index: int) -> tuple[str, Sequence[Any]] | None:
        return None

    def row_index(self, key: str) -> int | None:
        return None


class VirtualTable(ScrollView, can_focus=True):
    """Row cursor, a header line, keyboard paging across rows that are not loaded yet."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor_up", "Up", show=False),
        Binding("down", "cursor_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home,ctrl+home", "first", "First row", show=False),
        Binding("end,ctrl+end", "last", "Last row", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "virtualtable--header",
        "virtualtable--cursor",
        "virtualtable--placeholder",
    }

    cursor_row: reactive[int] = reactive(0, always_update=True, init=False)

    class RowsWanted(Message):
        """Rows `first..last` (inclusive) are visible but not held; `to_end`: End was
        pressed (the table stays on the last row while the row count settles)."""

        def __init__(self, table: VirtualTable, first: int, last: int, to_end: bool) -> None:
            super().__init__()
            self.table = table
            self.first = first
            self.last = last
            self.to_end = to_end

        @property
        def control(self) -> VirtualTable:
            return self.table

    def __init__(self, columns: Sequence[Column], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.columns = list(columns)
        self.source: RowSource = EmptySource()
        self._wanted: tuple[int, int] | None = None
        self._at_end = False  # End was pressed: stay on the last row while the count settles
        self._widths: list[int] = []

    # ------------------------------------------------------------------ data in

    @property
    def row_count(self) -> int:
        return self.source.row_count

    def set_source(self, source: RowSource, *, cursor: int = 0) -> None:
        """Show another set of rows (a scope, a filter) from the top."""
        self.source = source
        self._at_end = False
        self.rows_changed()
        self.move_cursor(cursor)

    def rows_changed(self) -> None:
        """The source changed (a page arrived, a live update): redraw, keep the cursor."""
        count = self.row_count
        self.virtual_size = Size(self.size.width, count + 1)
        if self._at_end and count:
            self.cursor_row = count - 1
        elif self.cursor_row >= count:
            self.cursor_row = max(0, count - 1)
        self._wanted = None
        self.refresh()
        self.call_after_refresh(self._want_visible)

    # ------------------------------------------------------------------ reading

    @property
    def selected_key(self) -> str | None:
        row = self.source.row(self.cursor_row) if self.row_count else None
        return row[0] if row else None

    def get_cell(self, key: str, column: str) -> Any:
        """The cell of a held row (as a test or a copy action reads it); KeyError if not held."""
        index = self.source.row_index(key)
        row = None if index is None else self.source.row(index)
        if row is None:
            raise KeyError(key)
        return row[1][[c.key for c in self.columns].index(column)]

    @property
    def visible_rows(self) -> tuple[int, int]:
        """First and last row index on screen (the header takes one line)."""
        first = int(self.scroll_y)
        return first, first + max(0, self._body_height - 1)

    @property
    def _body_height(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def _want_visible(self) -> None:
        if not self.row_count:
            return
        first, last = self.visible_rows
        last = min(last, self.row_count - 1)
        if all(self.source.row(i) is not None for i in range(first, last + 1)):
            return
        wanted = (first, last)  # a cursor scrolled off screen (mouse wheel) is not fetched
        if wanted != self._wanted:
            self._wanted = wanted
            self.post_message(self.RowsWanted(self, *wanted, self._at_end))

    # ------------------------------------------------------------------ cursor

    def move_cursor(self, row: int) -> None:
        self.cursor_row = max(0, min(row, self.row_count - 1))

    def watch_cursor_row(self, old: int, new: int) -> None:
        self._scroll_to_cursor()
        self.refresh()
        self._want_visible()

    def _scroll_to_cursor(self) -> None:
        first, last = self.visible_rows
        if self.cursor_row < first:
            self._scroll_y(self.cursor_row)
        elif self.cursor_row > last:
            self._scroll_y(self.cursor_row - self._body_height + 1)

    def _scroll_y(self, y: float) -> None:
        self.scroll_to(y=y, animate=False, force=True, immediate=True)

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        self.call_after_refresh(self._want_visible)

    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(event.size.width, self.row_count + 1)
        # a pane appearing below (the key history) must not push the cursor off screen
        self.call_after_refresh(self._scroll_to_cursor)
        self.call_after_refresh(self._want_visible)

    def action_cursor_up(self) -> None:
        self._at_end = False
        self.move_cursor(self.cursor_row - 1)

    def action_cursor_down(self) -> None:
        self._at_end = False
        self.move_cursor(self.cursor_row + 1)

    def action_page_up(self) -> None:
        self._at_end = False
        height = self._body_height
        self._scroll_y(self.scroll_y - height)
        self.move_cursor(self.cursor_row - height)

    def action_page_down(self) -> None:
        self._at_end = False
        height = self._body_height
        self._scroll_y(self.scroll_y + height)
        self.move_cursor(self.cursor_row + height)

    def action_first(self) -> None:
        self._at_end = False
        self.move_cursor(0)

    def action_last(self) -> None:
        self._at_end = True
        self.move_cursor(self.row_count - 1)

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y < 1:
            return
        self._at_end = False
        self.move_cursor(int(self.scroll_y) + offset.y - 1)

    # ------------------------------------------------------------------ rendering

    def _cells(self, index: int) -> list[Text]:
        row = self.source.row(index)
        if row is None:
            return []
        out: list[Text] = []
        for column, value in zip(self.columns, row[1], strict=False):
            text = value.copy() if isinstance(value, Text) else Text(str(value))
            text.justify = column.justify  # type: ignore[assignment]
            out.append(text)
        return out

    def _layout(self) -> list[int]:
        """Column widths from the header and the rows on screen (like `DataTable`'s); on a
        narrow terminal optional columns go first (width 0), then flex columns are cut."""
        widths = [len(c.label) for c in self.columns]
        first, last = self.visible_rows
        for index in range(first, min(last, self.row_count - 1) + 1):
            for i, text in enumerate(self._cells(index)):
                widths[i] = max(widths[i], text.cell_len)
        widths = [
            min(w, c.max_width) if c.max_width else w
            for w, c in zip(widths, self.columns, strict=True)
        ]
        room = self.scrollable_content_region.width

        def used() -> int:
            return sum(w + 2 * CELL_PADDING for w in widths if w)

        for i, column in enumerate(self.columns):
            if column.optional and used() > room:
                widths[i] = 0
        for i, column in enumerate(self.columns):
            if column.flex and used() > room:
                widths[i] = max(MIN_FLEX, widths[i] - (used() - room))
        return widths

    def render_lines(self, crop: Region) -> list[Strip]:
        self._widths = self._layout()
        return super().render_lines(crop)

    def _line(self, cells: Sequence[Text], style: Style) -> Strip:
        segments: list[Segment] = []
        pad = Segment(" " * CELL_PADDING, style)
        for text, width, column in zip(cells, self._widths, self.columns, strict=False):
            if not width:
                continue
            text = text.copy()
            text.truncate(width, overflow="ellipsis")
            text.align(column.justify, width)  # type: ignore[arg-type]
            segments.append(pad)
            segments.extend(text.render(self.app.console, end=""))
            segments.append(pad)
        line = Strip(segments).apply_style(style)
        return line.extend_cell_length(self.size.width, style).crop(0, self.size.width)

    def render_line(self, y: int) -> Strip:
        base = self.rich_style
        if y == 0:
            header = base + self.get_component_rich_style("virtualtable--header")
            labels = [
                Text(c.label, justify=c.justify)  # type: ignore[arg-type]
                for c in self.columns
            ]
            return self._line(labels, header)
        index = int(self.scroll_y) + y - 1
        if index >= self.row_count:
            return Strip.blank(self.size.width, base)
        style = base
        if index == self.cursor_row:
            style = base + self.get_component_rich_style("virtualtable--cursor")
        cells = self._cells(index)
        if not cells:
            style += self.get_component_rich_style("virtualtable--placeholder")
            return self._line([Text(PLACEHOLDER)], style)
        return self._line(cells, style)
