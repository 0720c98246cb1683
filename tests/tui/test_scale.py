"""The console at plant scale (issue 10): a 100,000-key scope, 2,500 scopes, 1,000 workers.

Pilot tests over `FakeSource`, which pages exactly like the state service and the broker
(by name, `after` exclusive, default page 1,000, `limit` at most 10,000). What they prove:
the key table never holds more than `MAX_LOADED` pages, End reaches the last key by walking
keys-only pages, the filter is a server-side prefix or glob, edits and bus events still land,
the scope tree reads `list-scopes` page by page, and 1,000 workers stay grouped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from textual.widgets import DataTable, Tree

from plantd.tui.app import PlantApp
from plantd.tui.keywindow import MAX_LOADED, WALK_LIMIT
from plantd.tui.screens.state import StateView
from plantd.tui.source import ServiceError
from plantd.tui.widgets.confirm import ConfirmDialog
from plantd.tui.widgets.edit import EditDialog
from plantd.tui.widgets.virtualtable import VirtualTable
from tests.tui.fakes import FakeSource, big_scope, make_app, many_workers, plant_state

BIG = 100_000
PAGE = 1_000


def big_source(scopes: int = 0) -> FakeSource:
    """One 100,000-key scope (the first in name order, so the view opens it), plus `scopes`
    small ones."""
    fake = FakeSource()
    fake.state = {"plant.big": big_scope(BIG)}
    for i in range(scopes):
        fake.state[f"site.area{i // 100:02d}.unit{i % 100:03d}"] = {}
    return fake


async def until(pilot: Any, predicate: Callable[[], bool], rounds: int = 100) -> bool:
    """Let the app work until `predicate` holds (bounded: `rounds` short pauses)."""
    for _ in range(rounds):
        if predicate():
            return True
        await pilot.pause(0.02)
    return predicate()


def parts(app: PlantApp) -> tuple[StateView, VirtualTable]:
    view = app.query_one(StateView)
    return view, view.table


def title(app: PlantApp) -> str:
    return str(app.query_one("#scope-title").render())


def on_screen(table: VirtualTable) -> list[str]:
    """Keys of the rows drawn now (None where a row is still a placeholder)."""
    first, last = table.visible_rows
    rows = [table.source.row(i) for i in range(first, min(last, table.row_count - 1) + 1)]
    return [row[0] if row else "…" for row in rows]


def consistent(table: VirtualTable) -> bool:
    """Every held row on screen is at the index its name says (tag.000123 is row 123)."""
    first, _ = table.visible_rows
    return all(key == f"tag.{first + i:06d}" for i, key in enumerate(on_screen(table)))


async def open_big(pilot: Any) -> tuple[StateView, VirtualTable]:
    await pilot.press("2")
    view, table = parts(pilot.app)
    assert await until(pilot, lambda: view.scope == "plant.big" and "…" not in on_screen(table))
    return view, table


async def test_big_scope_opens_on_one_page_and_end_reaches_the_last_key() -> None:
    fake = big_source()
    app = make_app(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        view, table = await open_big(pilot)
        assert title(app) == "plant.big — 100,000 keys"
        # one request, one page: nothing else was read to show the first screen
        assert len(fake.key_requests) == 1
        assert fake.key_requests[0]["after"] is None and fake.key_requests[0]["limit"] is None
        assert view.window is not None and view.window.held_rows == PAGE
        assert table.row_count == BIG and on_screen(table)[0] == "tag.000000"

        await pilot.press("end")
        assert await until(pilot, lambda: table.selected_key == "tag.099999")
        assert table.cursor_row == BIG - 1
        assert on_screen(table)[-1] == "tag.099999" and consistent(table)
        walks = [r for r in fake.key_requests if r["limit"] == WALK_LIMIT]
        assert 1 <= len(walks) <= BIG // WALK_LIMIT + 1  # keys-only, at the service maximum
        assert view.window.held_pages <= MAX_LOADED

        await pilot.press("home")
        assert await until(pilot, lambda: table.selected_key == "tag.000000")
        for _ in range(60):  # ~1,200 rows at 80x24: across the first page boundary
            await pilot.press("pagedown")
        assert await until(pilot, lambda: table.selected_key is not None)
        assert table.cursor_row > PAGE and consistent(table)
        assert table.selected_key == f"tag.{table.cursor_row:06d}"
        await pilot.press("up", "up")
        assert table.selected_key == f"tag.{table.cursor_row:06d}"


async def test_filter_runs_on_the_server_prefix_then_glob() -> None:
    fake = big_source()
    app = make_app(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        view, table = await open_big(pilot)
        await pilot.press("slash", *"tag.05", "enter")
        assert await until(pilot, lambda: title(app).startswith("plant.big — 10,000/"))
        assert title(app) == "plant.big — 10,000/100,000 keys  prefix: 'tag.05'"
        assert fake.key_requests[-1]["prefix"] == "tag.05"
        assert await until(pilot, lambda: on_screen(table)[0] == "tag.050000")
        assert table.row_count == 10_000
        await pilot.press("end")
        assert await until(pilot, lambda: table.selected_key == "tag.059999")

        await pilot.press("slash", "ctrl+u", *"tag.0?0000", "enter")
        assert await until(pilot, lambda: table.row_count == 10 and "…" not in on_screen(table))
        assert on_screen(table) == [f"tag.0{i}0000" for i in range(10)]
        assert title(app) == "plant.big — 10/100,000 keys  glob: 'tag.0?0000'"
        assert fake.key_requests[-1]["glob"] == "tag.0?0000"

        # a glob the service does not count (total null): the table grows as pages come
        await pilot.press("slash", "ctrl+u", *"tag.*5", "enter")
        assert await until(pilot, lambda: "…" not in on_screen(table) and bool(view.keys))
        assert title(app) == "plant.big — 1,000+/100,000 keys  glob: 'tag.*5'"
        assert on_screen(table)[:2] == ["tag.000005", "tag.000015"]
        await pilot.press("end")
        assert await until(pilot, lambda: table.selected_key == "tag.099995")
        assert title(app) == "plant.big — 10,000/100,000 keys  glob: 'tag.*5'"
        assert any(r["glob"] == "tag.*5" and r["limit"] == WALK_LIMIT for r in fake.key_requests)

        await pilot.press("escape")  # clears the filter: the whole scope again
        assert await until(pilot, lambda: title(app) == "plant.big — 100,000 keys")
        assert view.filter_text == ""


async def test_rows_held_stay_bounded_while_jumping_around() -> None:
    fake = big_source()
    fake.byte_cut = 300  # every page with values is cut short, as a byte budget would
    app = make_app(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        view, table = await open_big(pilot)
        window = view.window
        assert window is not None
        most = 0
        for row in (99_950, 500, 50_500, 73_210, 2_999, 99_999, 0, 41_000, 41_050, 60_000):
            table.move_cursor(row)
            assert await until(pilot, lambda: table.selected_key is not None), row
            assert table.selected_key == f"tag.{row:06d}" and consistent(table)
            most = max(most, window.held_pages)
            assert window.held_rows <= MAX_LOADED * PAGE
        assert most <= MAX_LOADED
        assert len(fake.key_requests) < 200  # pages and walks, never one request per row

        # the mouse wheel or the scrollbar moves the view, not the cursor: only what is on
        # screen is fetched (not every page between the cursor and the view)
        table.move_cursor(0)
        assert await until(pilot, lambda: table.selected_key == "tag.000000")
        sent = len(fake.key_requests)
        table.scroll_to(y=88_000, animate=False, immediate=True)
        assert await until(pilot, lambda: "…" not in on_screen(table))
        assert on_screen(table)[0] == "tag.088000" and consistent(table)
        assert len(fake.key_requests) - sent <= 5  # one page, cut in pieces of 300


async def test_live_updates_and_edits_on_far_pages() -> None:
    fake = big_source()
    app = make_app(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        view, table = await open_big(pilot)
        await pilot.press("end")
        assert await until(pilot, lambda: table.selected_key == "tag.099999")

        # bus events on held rows: in place, the total follows
        revision = fake.publish_write("plant.big", "tag.099999", 7)
        assert await until(pilot, lambda: table.get_cell("tag.099999", "value") == "7")
        fake.publish_write("plant.big", "tag.099998", delete=True)
        assert await until(pilot, lambda: title(app) == "plant.big — 99,999 keys")
        fake.publish_write("plant.big", "tag.100000", 1)
        assert await until(pilot, lambda: title(app) == "plant.big — 100,000 keys")
        await pilot.press("end")
        assert await until(pilot, lambda: table.selected_key == "tag.100000")

        # edit the last key: compare-and-set against the revision shown
        await pilot.press("up", "e")
        assert isinstance(app.screen, EditDialog)
        await pilot.press("ctrl+u", *"8", "enter")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("y")
        assert await until(pilot, lambda: bool(fake.writes))
        assert fake.writes == [("set", "plant.big", "tag.099999", 8, revision)]
        assert await until(pilot, lambda: table.get_cell("tag.099999", "value") == "8")

        # a new key whose page is not held: the app reads it first and compare-and-sets
        assert view.window is not None and view.window.index_of("tag.050000") is None
        await pilot.press("n", *"tag.050000", "enter", *"42", "enter")
        assert await until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        op = app.screen.op  # type: ignore[attr-defined]
        assert (op.has_old, op.old, op.prev_revision) == (
            True,
            {"v": 50_000, "units": "degC"},
            51_000,
        )


async def test_a_page_that_fails_says_why_and_is_asked_again() -> None:
    fake = big_source()
    fake.key_error = ServiceError("reply of 1572864 bytes exceeds the 1 MiB limit", "too_large")
    app = make_app(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2")
        view, table = parts(app)
        assert await until(pilot, lambda: "cannot list keys" in title(app))
        assert title(app) == (
            "plant.big — cannot list keys: reply of 1572864 bytes exceeds the 1 MiB limit"
        )
        await pilot.press("r")  # reload
        assert await until(pilot, lambda: title(app) == "plant.big — 100,000 keys")
        assert table.selected_key == "tag.000000" and view.error == ""


async def test_scope_tree_of_thousands_reads_pages_on_demand() -> None:
    fake = big_source(scopes=2_499)  # 2,500 scopes: three pages of list-scopes
    app = make_app(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2")
        view = app.query_one(StateView)
        tree: Tree[str] = app.query_one("#scopes", Tree)
        assert await until(pilot, lambda: len(view.scopes) == PAGE)
        assert len(fake.scope_requests) == 1
        # "site" holds 999 units on this page: one folded line, its children become tree
        # nodes only when it is opened (and its areas, 100 units each, stay folded)
        labels = [str(n.label) for n in tree.root.children]
        assert labels == ["plant", "site 999", "… 1,500 more scopes"]
        site = tree.root.children[1]
        assert not site.children and not site.is_expanded
        site.expand()
        await pilot.pause()
        areas = [str(n.label) for n in site.children]
        assert areas[:2] == ["area00 100", "area01 100"] and areas[-1] == "area09 99"
        assert all(not n.children for n in site.children)
        site.children[1].expand()
        await pilot.pause()
        units = [str(n.label) for n in site.children[1].children]
        assert len(units) == 100 and units[0] == "unit000"

        # reaching the last line asks for the next page (once), and so on to the end
        for pages in (2, 3):
            tree.move_cursor(tree.root.children[-1])
            await pilot.pause()
            line = tree.cursor_line
            assert await until(pilot, lambda p=pages: len(fake.scope_requests) == p)
            assert await until(pilot, lambda p=pages: len(view.scopes) == min(2_500, p * PAGE))
            await pilot.pause()
            assert tree.cursor_line == line  # the operator reads on where the page began
        assert "more scopes" not in str(tree.root.children[-1].label)
        assert fake.scope_requests[1]["after"] == view.scopes[PAGE - 1]
        assert view.scope == "plant.big"  # the selection survived every page


async def test_last_scope_page_into_a_folded_node_keeps_the_cursor_in_the_tree() -> None:
    fake = big_source(scopes=1_200)  # page 2 goes into the folded "site": the tree shrinks
    app = make_app(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2")
        view = app.query_one(StateView)
        tree: Tree[str] = app.query_one("#scopes", Tree)
        assert await until(pilot, lambda: len(view.scopes) == PAGE)
        await pilot.pause()
        tree.move_cursor(tree.root.children[-1])  # "… 201 more scopes", line 3
        assert await until(pilot, lambda: len(view.scopes) == 1_201)
        await pilot.pause()
        assert app.is_running and tree.cursor_line == tree.last_line == 2


async def test_overview_with_a_thousand_workers_stays_grouped_and_responsive() -> None:
    fake = FakeSource()
    fake.worker_list = many_workers(1_000)  # 1,004 workers: two pages of mmi.workers
    app = make_app(fake, poll_interval=0.05)
    start = time.perf_counter()
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.query_one("#workers", DataTable)
        assert await until(pilot, lambda: fake.worker_requests >= 4)  # two polls, all pages
        # the late and the expired worker, the lone Logger and State ones, one row per service
        assert table.row_count == 4 + 50
        title_text = str(app.query_one("#workers-title").render())
        assert title_text.startswith("Workers (1004), healthy ones grouped (g)")
        await pilot.press("g")
        await pilot.pause()
        assert table.row_count == 1_004
        await pilot.press("g", "2", "1")  # keys still answered between polls
        await pilot.pause()
        assert table.row_count == 4 + 50
    assert time.perf_counter() - start < 30  # bounded, not a benchmark


def test_fake_big_scope_is_the_plant_state_shape() -> None:
    """The fake's big scope pages like the service: 1,000 by default, `after` exclusive."""
    keys = big_scope(3)
    assert list(keys) == ["tag.000000", "tag.000001", "tag.000002"]
    assert "org.plantd.line1" in plant_state()
