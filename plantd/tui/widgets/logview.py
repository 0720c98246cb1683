"""Line-API log widget: renders only the visible rows of a bounded buffer.

No widget is created per record and nothing is formatted until it scrolls into view, so a
burst of thousands of records costs one virtual-size update per flush (Toolong's design).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import tzinfo

from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from plantd.tui.logstore import LogStore
from plantd.tui.model import format_clock
from plantd.tui.source import LogRecord

LEVEL_STYLES = {
    "debug": Style(color="bright_black"),
    "info": Style(color="green"),
    "warning": Style(color="yellow", bold=True),
    "error": Style(color="red", bold=True),
    "critical": Style(color="white", bgcolor="red", bold=True),
}
LEVEL_TEXT = {
    "debug": "DEBUG",
    "info": "INFO ",
    "warning": "WARN ",
    "error": "ERROR",
    "critical": "CRIT ",
}
TS_STYLE = Style(dim=True)
SERVICE_STYLE = Style(color="cyan")
FIELDS_STYLE = Style(dim=True)


class LogView(ScrollView, can_focus=True):
    """Shows `store.view`; follows the tail while scrolled to the bottom, else counts new rows."""

    following: reactive[bool] = reactive(True)
    new_count: reactive[int] = reactive(0)

    def __init__(
        self,
        store: LogStore,
        tz: tzinfo | None = None,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.store = store
        self.tz = tz
        self.formatter: Callable[[LogRecord], list[Segment]] = self.format_record

    def format_record(self, rec: LogRecord) -> list[Segment]:
        level = rec.level.lower()
        segments = [
            Segment(format_clock(rec.ts, self.tz) + " ", TS_STYLE),
            Segment(LEVEL_TEXT.get(level, f"{level.upper():5.5}"), LEVEL_STYLES.get(level)),
            Segment(" "),
            Segment(rec.service, SERVICE_STYLE),
            Segment(" " + rec.msg),
        ]
        if rec.fields:
            fields = " ".join(f"{k}={v}" for k, v in rec.fields.items())
            segments.append(Segment(" " + fields, FIELDS_STYLE))
        return segments

    def render_line(self, y: int) -> Strip:
        index = round(self.scroll_offset.y) + y
        width = self.scrollable_content_region.width
        view = self.store.view
        if index >= len(view) or index < 0:
            return Strip.blank(width, self.rich_style)
        strip = Strip(self.formatter(view[index]))
        return strip.crop_extend(0, width, self.rich_style)

    def records_changed(self, added: int, evicted: int) -> None:
        """Called after a flush: grow the virtual size, follow the tail or count new rows."""
        was_following = self.following
        self.virtual_size = Size(self.scrollable_content_region.width, len(self.store.view))
        if was_following:
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)
        else:
            self.new_count += added
            if evicted:
                # keep the rows the operator is reading where they are as old rows fall off
                self.scroll_to(y=max(0, self.scroll_y - evicted), animate=False, immediate=True)
        self.refresh()

    def reset(self) -> None:
        """After a filter change or clear: re-measure and jump to the tail."""
        self.virtual_size = Size(self.scrollable_content_region.width, len(self.store.view))
        self.new_count = 0
        self.following = True
        self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)
        self.refresh()

    def follow(self) -> None:
        self.following = True
        self.new_count = 0
        self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        at_bottom = new_value >= self.max_scroll_y
        if at_bottom != self.following:
            self.following = at_bottom
        if at_bottom:
            self.new_count = 0

    def on_resize(self) -> None:
        self.virtual_size = Size(self.scrollable_content_region.width, len(self.store.view))
        if self.following:
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)
