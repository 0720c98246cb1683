"""Keys per scope, kept from the commits after one first count: no scan at open or per page.

A listing reports the scope's ``total`` on every page and ``list-scopes`` the ``keys`` of
each scope; counting a 10^6-key scope costs a full pass over it, so each scope is counted
once (lazily, on its first use) and then kept up to date from every committed batch's
per-scope deltas. A count taken on the reader at snapshot revision R is installed together
with the deltas of the batches committed after R, so no change is counted twice or missed.

The count is of stored rows: a key whose TTL passed stays counted until the reaper deletes
it (within ``reap_interval``).
"""

from __future__ import annotations

#: a delta of ``None`` means "unknown" (delete-scope, import): the scope is counted again
Delta = int | None


class KeyCounts:
    """Rows per scope as of the last adopted commit (event-loop side only)."""

    def __init__(self) -> None:
        self._known: dict[str, int] = {}
        # scopes being counted: the (revision, delta) of every batch adopted meanwhile
        self._seeding: dict[str, list[tuple[int, Delta]]] = {}

    def get(self, scope: str) -> int | None:
        return self._known.get(scope)

    def adopt(self, revision: int, deltas: dict[str, Delta], reset_all: bool) -> None:
        """Apply one committed batch (``revision`` = its last revision)."""
        if reset_all:
            self._known.clear()
            for log in self._seeding.values():
                log.append((revision, None))
        for scope, delta in deltas.items():
            if scope in self._known:
                if delta is None:
                    del self._known[scope]
                else:
                    self._known[scope] += delta
            seeding = self._seeding.get(scope)
            if seeding is not None:
                seeding.append((revision, delta))

    def begin(self, scopes: list[str]) -> dict[str, list[tuple[int, Delta]]]:
        """Start counting ``scopes`` (call BEFORE the read is issued)."""
        return {s: self._seeding.setdefault(s, []) for s in scopes}

    def abandon(self, logs: dict[str, list[tuple[int, Delta]]]) -> None:
        """A count that was begun but not read (the read failed)."""
        for scope, log in logs.items():
            if self._seeding.get(scope) is log:
                del self._seeding[scope]

    def install(
        self, logs: dict[str, list[tuple[int, Delta]]], revision: int, counted: dict[str, int]
    ) -> dict[str, int]:
        """Counts read at snapshot ``revision``: keep them, brought up to date by the batches
        adopted since; return the current counts."""
        out: dict[str, int] = {}
        for scope, log in logs.items():
            value: int | None = counted.get(scope, 0)
            for rev, delta in log:
                if rev > revision:
                    value = None if value is None or delta is None else value + delta
            if self._seeding.get(scope) is log:
                del self._seeding[scope]
                if value is not None and scope not in self._known:
                    self._known[scope] = value
            out[scope] = self._known.get(scope, counted.get(scope, 0) if value is None else value)
        return out
