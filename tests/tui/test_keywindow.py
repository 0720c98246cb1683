"""Unit tests of the Textual-free paging layer: the key window's slots, the page helpers."""

from __future__ import annotations

import asyncio
from typing import Any

from plantd.tui.keywindow import (
    MAX_LOADED,
    WALK_STRIDE,
    KeyQuery,
    KeyWindow,
    LoadPage,
    load_page,
    walk,
)
from plantd.tui.source import (
    StateChange,
    follow_pages,
    page_more,
    paging_body,
    parse_key_page,
    parse_scope_page,
)
from tests.tui.fakes import FakeSource, big_scope


def source(count: int) -> FakeSource:
    fake = FakeSource()
    fake.state = {"s": big_scope(count)}
    return fake


async def fill(window: KeyWindow, fake: FakeSource, first: int, last: int) -> int:
    """Run the window's steps until rows first..last are held; the number of steps."""
    for steps in range(100):
        step = window.need(first, last)
        if step is None:
            return steps
        if isinstance(step, LoadPage):
            window.apply_page(await load_page(fake, window.query, step), first)
        else:
            window.apply_walk(await walk(fake, window.query, step))
    raise AssertionError("the window never settled")


def test_filter_text_is_a_prefix_or_a_glob() -> None:
    assert KeyQuery.from_filter("s", "tag.05") == KeyQuery("s", prefix="tag.05")
    assert KeyQuery.from_filter("s", "tag.*5") == KeyQuery("s", glob="tag.*5")
    assert KeyQuery.from_filter("s", "t[ab]g") == KeyQuery("s", glob="t[ab]g")
    assert KeyQuery("s", glob="tag.?1").matches("tag.01")
    assert not KeyQuery("s", prefix="tag.1").matches("tag.01")


async def test_first_page_then_end_then_middle_rows_are_exact() -> None:
    fake = source(25_500)
    window = KeyWindow(KeyQuery("s"))
    assert await fill(window, fake, 0, 20) == 1
    assert window.row_count == 25_500 and window.total == 25_500 and not window.complete
    assert await fill(window, fake, 25_480, 25_499) == 2  # one walk, then the last page
    assert window.complete and window.known_rows == 25_500
    assert window.entry(25_499).key == "tag.025499"  # type: ignore[union-attr]
    assert await fill(window, fake, 12_345, 12_360) == 1  # boundaries known: one page
    assert all(window.entry(i).key == f"tag.{i:06d}" for i in range(12_345, 12_361))  # type: ignore[union-attr]
    assert window.held_pages <= MAX_LOADED
    walks = [r for r in fake.key_requests if r["limit"] == 10_000]
    assert len(walks) == 3  # 25,500 keys at 10,000 a request


async def test_pages_cut_by_bytes_are_continued_to_the_boundary() -> None:
    fake = source(5_000)
    fake.byte_cut = 300
    window = KeyWindow(KeyQuery("s"))
    await fill(window, fake, 4_990, 4_999)  # walk (keys-only is not cut), then the last slot
    assert window.slots[0].length == 300  # the first page came back cut
    await fill(window, fake, 2_500, 2_520)
    index, _ = window.locate(2_500)
    rows = window.slots[index].rows
    assert rows is not None and len(rows) == WALK_STRIDE  # four cut pages, up to the boundary
    assert all(window.entry(i).key == f"tag.{i:06d}" for i in range(2_300, 3_300))  # type: ignore[union-attr]


async def test_live_changes_move_rows_and_the_total() -> None:
    fake = source(3_000)
    window = KeyWindow(KeyQuery("s", prefix="tag."))
    await fill(window, fake, 0, 10)
    assert window.apply_change(StateChange("s", "tag.000005", "set", 1, 9_000))
    assert window.entry(5).value == 1 and window.row_count == 3_000  # type: ignore[union-attr]
    assert window.apply_change(StateChange("s", "tag.000005a", "set", 2, 9_001))
    assert window.entry(6).key == "tag.000005a" and window.total == 3_001  # type: ignore[union-attr]
    assert window.apply_change(StateChange("s", "tag.000000", "delete", None, 9_002))
    assert window.entry(0).key == "tag.000001" and window.total == 3_000  # type: ignore[union-attr]
    assert not window.apply_change(StateChange("s", "other", "set", 3, 9_003))  # not in filter
    # a set on a page not held may or may not be new: nothing moves until it is loaded
    assert not window.apply_change(StateChange("s", "tag.002500", "set", 4, 9_004))


def test_emptied_slot_does_not_hide_the_next() -> None:
    from plantd.tui.keywindow import Slot

    window = KeyWindow(KeyQuery("s"), complete=True, loaded_once=True)
    window.slots = [Slot(None, 2, []), Slot("b", 0, []), Slot("d", 1, [])]
    window.slots[0].rows = [*big_scope(2).values()]
    window.slots[2].rows = [*big_scope(3).values()][2:]
    assert window.locate(2) == (2, 0) and window.entry(2).key == "tag.000002"  # type: ignore[union-attr]
    assert window.need(0, 2) is None and window.row_count == 3


def test_paged_replies_parse_and_requests_send_only_what_is_set() -> None:
    page = parse_key_page(
        {"keys": [{"key": "a", "value": 1}], "count": 1, "total": 5, "more": True, "next": "a"}
    )
    assert [e.key for e in page.entries] == ["a"] and (page.total, page.more, page.next) == (
        5,
        True,
        "a",
    )
    old = parse_key_page({"keys": [{"key": "a", "value": 1}], "count": 1})  # before paging
    assert (old.total, old.more, old.next) == (None, False, None)
    scopes = parse_scope_page({"scopes": ["x"], "more": False, "next": None, "total": 1})
    assert scopes.scopes == ["x"] and not scopes.more
    assert paging_body({"service": "s", "prefix": None}, None, None) == {"service": "s"}
    assert paging_body({}, [1.5, 7], 10) == {"after": [1.5, 7], "limit": 10}
    assert page_more({"data": {"more": True, "next": 3}}) == (True, 3)
    assert page_more({"workers": []}) == (False, None)


async def test_follow_pages_stops_on_a_cursor_that_does_not_advance() -> None:
    calls: list[Any] = []

    async def stuck(cursor: Any) -> tuple[Any, bool, Any]:
        calls.append(cursor)
        return [cursor], True, "same"

    assert await follow_pages(stuck) == [[None], ["same"]]
    assert calls == [None, "same"]

    async def bounded(cursor: Any) -> tuple[Any, bool, Any]:
        await asyncio.sleep(0)
        return cursor, True, (cursor or 0) + 1

    assert len(await follow_pages(bounded, max_pages=5)) == 5


async def test_end_of_an_uncounted_glob_is_walked_not_paged() -> None:
    fake = source(30_000)
    window = KeyWindow(KeyQuery("s", glob="tag.*5"))
    await fill(window, fake, 0, 10)
    assert window.total is None and window.row_count == 1_001  # a placeholder: more to come
    step = window.need(1_000, 1_000, to_end=True)
    assert step is not None and step.__class__.__name__ == "Walk"
    assert window.need(1_000, 1_000).__class__.__name__ == "LoadPage"  # scrolling on
