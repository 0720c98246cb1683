"""The state view's virtual table: a bounded window of pages over a scope of any size.

The state service pages `list-keys` forward only, by key name (`after` = the last key of the
previous page). So the window keeps, for the part of the scope it has seen, a list of *slots*:
each slot is a run of keys after a boundary key, with its length, and its rows only while it
is one of the few pages held in memory (`MAX_LOADED`). Row N of the table is found by summing
slot lengths; rows past the known slots are fetched by walking forward:

- scrolling line by line or page by page loads the next page with values (the boundary of the
  slot after it is that page's last key);
- a far jump (End, dragging the scrollbar) walks with `values: false` at the service maximum
  (10,000 keys a request) and keeps one boundary every `WALK_STRIDE` keys, then loads the one
  page it landed on. The trade-off: End on a 10^6-key scope costs ~100 keys-only requests the
  first time, and the boundaries (1,000 short strings for 10^6 keys) are kept, so every later
  jump anywhere is one request. Rows themselves are never held beyond `MAX_LOADED` pages.

Boundaries are key names, so they stay valid under concurrent writes; a slot's length can
drift while it is not loaded (a bus event does not say whether a set created the key) and is
exact again the next time it is loaded. The service's `total` (refreshed by every page) sizes
the table until the last slot is known. This module does no I/O itself: `load_page` and
`walk` are run by the app's workers over the `DataSource`; the view applies their results.
"""

from __future__ import annotations

import fnmatch
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from itertools import accumulate

from plantd.tui.source import DataSource, KeyEntry, StateChange

WALK_LIMIT = 10_000  # keys-only page size of a walk: the service maximum
WALK_STRIDE = 1_000  # one boundary per this many keys while walking (the default page size)
NEAR = 2_000  # rows past the known slots that are reached by loading pages, not by walking
MAX_LOADED = 4  # slots whose rows are held; the rest keep only their boundary and length
MAX_REQUESTS = 10_000  # bound on the requests of one load/walk (a server that never ends)
WILDCARDS = frozenset("*?[")

SET_OPS = {"set", "put", "update", "create"}
DELETE_OPS = {"delete", "del", "remove"}


@dataclass(frozen=True, slots=True)
class KeyQuery:
    """Which keys the table shows: a scope, filtered on the server by a prefix or a glob."""

    scope: str
    prefix: str = ""
    glob: str = ""

    @classmethod
    def from_filter(cls, scope: str, text: str) -> KeyQuery:
        """The filter box: a glob when it has a wildcard (`*`, `?`, `[`), else a key prefix."""
        if WILDCARDS & set(text):
            return cls(scope, glob=text)
        return cls(scope, prefix=text)

    @property
    def text(self) -> str:
        return self.glob or self.prefix

    @property
    def kind(self) -> str:
        return "glob" if self.glob else "prefix"

    def matches(self, key: str) -> bool:
        """Does a key (from a bus event) belong in this table? Same rule as the server's."""
        if self.glob:
            return fnmatch.fnmatchcase(key, self.glob)
        return key.startswith(self.prefix)


@dataclass(slots=True)
class Slot:
    """A run of keys > `after` (None: from the first key); `length` None = not known yet."""

    after: str | None
    length: int | None = None
    rows: list[KeyEntry] | None = None
    stale: bool = False


@dataclass(frozen=True, slots=True)
class LoadPage:
    """Fetch slot `index`'s rows: keys > `after`, up to and including `upto` (None: one page)."""

    index: int
    after: str | None
    upto: str | None


@dataclass(frozen=True, slots=True)
class Walk:
    """Walk keys-only from slot `index` (the open last one) until `rows` keys (None: the end)."""

    index: int
    after: str | None
    rows: int | None


Step = LoadPage | Walk


@dataclass(frozen=True, slots=True)
class PageResult:
    step: LoadPage
    entries: list[KeyEntry]
    more: bool  # keys exist past the last entry (for an open-ended page)
    total: int | None


@dataclass(frozen=True, slots=True)
class WalkResult:
    step: Walk
    boundaries: list[str]  # the last key of each full stride
    count: int  # keys walked
    more: bool  # keys remain past the walk
    total: int | None


async def load_page(source: DataSource, query: KeyQuery, step: LoadPage) -> PageResult:
    """One slot's rows; a page cut short by the reply's byte budget is continued."""
    entries: list[KeyEntry] = []
    cursor, total, more = step.after, None, False
    for _ in range(MAX_REQUESTS):
        page = await source.list_keys_page(
            query.scope, prefix=query.prefix, glob=query.glob, after=cursor
        )
        total = page.total if page.total is not None else total
        more = page.more
        if step.upto is None:
            entries = page.entries
            break
        past = bisect_right([e.key for e in page.entries], step.upto)
        entries.extend(page.entries[:past])
        if past < len(page.entries) or not page.more or page.next is None:
            break
        cursor = page.next
    return PageResult(step, entries, more, total)


async def walk(source: DataSource, query: KeyQuery, step: Walk) -> WalkResult:
    """Keys-only pages forward from `step.after`, keeping a boundary every `WALK_STRIDE` keys."""
    boundaries: list[str] = []
    count, cursor, total, more = 0, step.after, None, True
    for _ in range(MAX_REQUESTS):
        page = await source.list_keys_page(
            query.scope,
            prefix=query.prefix,
            glob=query.glob,
            after=cursor,
            limit=WALK_LIMIT,
            values=False,
        )
        total = page.total if page.total is not None else total
        for entry in page.entries:
            count += 1
            if count % WALK_STRIDE == 0:
                boundaries.append(entry.key)
        more = page.more and page.next is not None and bool(page.entries)
        if not more or (step.rows is not None and count >= step.rows):
            break
        cursor = page.next
    return WalkResult(step, boundaries, count, more, total)


@dataclass
class KeyWindow:
    """Slots over one query; every method runs on the UI thread (workers only fetch)."""

    query: KeyQuery
    slots: list[Slot] = field(default_factory=lambda: [Slot(None)])
    total: int | None = None  # the service's count for the query (latest page)
    complete: bool = False  # the last slot ends the scope
    loaded_once: bool = False  # a first page arrived (the title stops saying "loading")
    version: int = 0  # bumped by every change (a step is issued once per version)
    generation: int = 0  # bumped by a reset/invalidate: older results are dropped
    _starts: list[int] | None = None

    # ------------------------------------------------------------------ geometry

    def _offsets(self) -> list[int]:
        """Row index of each slot's first row (lengths of unknown slots count as 0)."""
        if self._starts is None:
            self._starts = [0, *accumulate(s.length or 0 for s in self.slots)][:-1]
        return self._starts

    @property
    def known_rows(self) -> int:
        """Rows in slots of known length (the table's position of the open end)."""
        return self._offsets()[-1] + (self.slots[-1].length or 0)

    @property
    def row_count(self) -> int:
        """Rows of the table: exact once the last slot is known, else the service's total."""
        known = self.known_rows
        if self.complete:
            return known
        if self.total is not None and self.total > known:
            return self.total
        return known + (1 if self.loaded_once else 0)  # one placeholder row: more to come

    def locate(self, row: int) -> tuple[int, int]:
        """(slot index, offset in it) of a row; rows past the known slots are in the open one."""
        starts = self._offsets()
        index = max(0, bisect_right(starts, row) - 1)  # an emptied slot shares its start
        return index, row - starts[index]

    def entry(self, row: int) -> KeyEntry | None:
        """The key at a row, if its page is held."""
        if row < 0:
            return None
        index, offset = self.locate(row)
        rows = self.slots[index].rows
        if rows is None or offset >= len(rows):
            return None
        return rows[offset]

    def index_of(self, key: str) -> int | None:
        """Row of a key whose page is held."""
        index = self._slot_for(key)
        rows = self.slots[index].rows
        if rows is None:
            return None
        pos = bisect_left([e.key for e in rows], key)
        if pos < len(rows) and rows[pos].key == key:
            return self._offsets()[index] + pos
        return None

    def held(self) -> dict[str, KeyEntry]:
        """Every row held in memory (at most `MAX_LOADED` pages)."""
        return {e.key: e for s in self.slots if s.rows for e in s.rows}

    @property
    def held_rows(self) -> int:
        return sum(len(s.rows) for s in self.slots if s.rows is not None)

    @property
    def held_pages(self) -> int:
        return sum(s.rows is not None for s in self.slots)

    def _slot_for(self, key: str) -> int:
        afters = [s.after or "" for s in self.slots[1:]]
        return bisect_left(afters, key)

    # ------------------------------------------------------------------ what to fetch

    def need(self, first: int, last: int, *, to_end: bool = False) -> Step | None:
        """The next fetch that brings rows `first..last` (inclusive) into memory, or None.

        `to_end`: the operator asked for the last row (End), so an open end is walked even
        when the service gave no total (a glob) and the table does not know how far it is."""
        if not self.loaded_once:
            return LoadPage(0, None, self._upto(0))
        last = min(last, self.row_count - 1)
        known = self.known_rows
        row = max(first, 0)
        while row <= last:
            index, offset = self.locate(row)
            slot = self.slots[index]
            if slot.length is None:  # the open slot: past every known row
                wanted = row - known
                if to_end and self.total is None:
                    return Walk(index, slot.after, None)
                if wanted < NEAR:
                    return LoadPage(index, slot.after, None)
                to_end = to_end or last >= self.row_count - 1
                return Walk(index, slot.after, None if to_end else wanted + 1)
            if slot.rows is None or slot.stale:
                return LoadPage(index, slot.after, self._upto(index))
            row += max(1, slot.length - offset)
        return None

    def _upto(self, index: int) -> str | None:
        return self.slots[index + 1].after if index + 1 < len(self.slots) else None

    # ------------------------------------------------------------------ results in

    def _changed(self) -> None:
        self._starts = None
        self.version += 1

    def apply_page(self, result: PageResult, focus_row: int) -> bool:
        """Store a fetched page (`focus_row`: the first row on screen, whose neighbours stay
        held); False if it belongs to an older state of the window."""
        step = result.step
        if step.index >= len(self.slots) or self.slots[step.index].after != step.after:
            return False
        if self._upto(step.index) != step.upto:
            return False
        slot = self.slots[step.index]
        slot.rows, slot.length, slot.stale = list(result.entries), len(result.entries), False
        if result.total is not None:
            self.total = result.total
        if step.upto is None:  # the open (or last) slot: its end is now known
            del self.slots[step.index + 1 :]
            if result.more and result.entries:
                self.slots.append(Slot(result.entries[-1].key))
                self.complete = False
            else:
                self.complete = True
        self.loaded_once = True
        self._changed()
        self._evict(focus_row, step.index)
        return True

    def apply_walk(self, result: WalkResult) -> bool:
        """Replace the open slot by the strides walked (lengths known, rows not held)."""
        step = result.step
        if step.index != len(self.slots) - 1 or self.slots[step.index].after != step.after:
            return False
        new: list[Slot] = []
        after = step.after
        for boundary in result.boundaries:
            new.append(Slot(after, WALK_STRIDE))
            after = boundary
        rest = result.count - WALK_STRIDE * len(result.boundaries)
        if result.more:
            new.append(Slot(after))  # the partial stride stays open: walked again if needed
        elif rest or not new:
            new.append(Slot(after, rest))
        self.slots[step.index :] = new
        self.complete = not result.more
        if result.total is not None:
            self.total = result.total
        self._changed()
        return True

    def _evict(self, focus_row: int, loaded: int) -> None:
        """Drop the rows of the held slots farthest from the one on screen (`focus_row`);
        the slot just loaded is never dropped (it was fetched because it is wanted)."""
        held = [i for i, s in enumerate(self.slots) if s.rows is not None]
        if len(held) <= MAX_LOADED:
            return
        focus, _ = self.locate(max(0, focus_row))
        held.sort(key=lambda i: (i != loaded, abs(i - focus)))
        for i in held[MAX_LOADED:]:
            self.slots[i].rows = None
            self.slots[i].stale = False
        self._changed()

    def invalidate(self) -> None:
        """After a write: held rows are fetched again (shown until then); boundaries stay."""
        for slot in self.slots:
            if slot.rows is not None:
                slot.stale = True
        self.generation += 1
        self._changed()

    # ------------------------------------------------------------------ live changes

    def apply_change(self, change: StateChange) -> bool:
        """A state-bus event for this scope: update a held row in place. True if rows moved
        or changed (the table redraws)."""
        op = change.op.lower()
        if not change.key or not self.query.matches(change.key):
            return False
        index = self._slot_for(change.key)
        slot = self.slots[index]
        rows = slot.rows
        if rows is None:
            if op in DELETE_OPS and slot.length:
                slot.length -= 1  # the key existed (it was deleted)
                self.total = None if self.total is None else max(0, self.total - 1)
                self._changed()
                return True
            return False  # a set in a page not held: maybe a new key, fixed on its next load
        pos = bisect_left([e.key for e in rows], change.key)
        old = rows[pos] if pos < len(rows) and rows[pos].key == change.key else None
        if op in DELETE_OPS:
            if old is None:
                return False
            del rows[pos]
            delta = -1
        elif op in SET_OPS:
            entry = KeyEntry(
                key=change.key,
                value=change.value,
                mod_revision=change.revision,
                create_revision=old.create_revision if old else change.revision,
                version=(old.version + 1) if old else 1,
                updated=change.ts or (old.updated if old else ""),
            )
            if old is not None:
                rows[pos] = entry
                delta = 0
            else:
                rows.insert(pos, entry)
                delta = 1
        else:
            return False
        slot.length = len(rows)
        if delta and self.total is not None:
            self.total = max(0, self.total + delta)
        self._changed()
        return True
