"""In-place DataTable updates: polls every second must not reset the operator's cursor."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, RowKey


def sync_rows(table: DataTable[Any], rows: Mapping[str, Sequence[Any]]) -> None:
    """Make `table` show exactly `rows` (keyed, in order) with minimal changes.

    Existing rows are updated cell by cell, so the cursor stays on the same key; the order is
    rebuilt only when rows were added or removed.
    """
    current = [str(k.value) for k in table.rows]
    wanted = list(rows)
    if current == wanted:
        columns = list(table.columns)
        for key, values in rows.items():
            for col, value in zip(columns, values, strict=False):
                try:
                    if table.get_cell(key, col) != value:
                        # a longer value (a live change) widens its column instead of being cut
                        table.update_cell(key, col, value, update_width=True)
                except CellDoesNotExist:
                    pass
        return
    cursor_key: RowKey | None = None
    if table.row_count and 0 <= table.cursor_row < table.row_count:
        cursor_key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
    table.clear()
    for key, values in rows.items():
        table.add_row(*values, key=key)
    if cursor_key is not None and cursor_key.value in rows:
        table.move_cursor(row=table.get_row_index(cursor_key), animate=False)


def selected_key(table: DataTable[Any]) -> str | None:
    """The row key under the cursor, or None for an empty table."""
    if not table.row_count:
        return None
    try:
        row_key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
    except CellDoesNotExist:
        return None
    return None if row_key.value is None else str(row_key.value)
