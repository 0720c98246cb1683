"""A linearizability checker for single-register histories (Knossos/porcupine style).

Each key is a register (P-compositionality: a history is linearizable iff the sub-history of
every key is, so each key is checked alone). An operation has an invoke and a complete time
and a result: a ``read`` saw a value (or :data:`ABSENT`), a ``write`` stored one, a ``cas``
replaced ``expected`` by ``value`` and was applied (``ok=True``) or refused (``ok=False``).
An operation whose outcome is unknown (the client got a timeout or ``unavailable`` for a
write that may have committed) has ``complete=None``: it may take effect at any time after
its invoke, or never; an unknown read constrains nothing and is dropped.

The search is Wing & Gong's with Lowe's memo (porcupine's algorithm): depth first, the next
operation to linearize is one invoked before every pending operation completed, and a
(linearized set, register value) pair already explored is not explored again. It stops after
``max_states`` explored states with ``ok=None`` (unknown), never a guess. A violation is
reported as the longest valid prefix found, the register value there, and the operations
that could not come next with the reason of each: the violating sub-history.

Values must be hashable and, for a useful check, unique per write (then "CAS on the
revision that read saw" is "CAS on the value that read saw").
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["ABSENT", "CheckResult", "KeyResult", "Op", "check"]


class _Absent:
    """The value of a key that does not exist (a read that got ``not_found``)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Hashable = _Absent()

Kind = Literal["read", "write", "cas"]


@dataclass(frozen=True)
class Op:
    """One operation of one client on one key."""

    process: str
    key: str
    kind: Kind
    invoke: float
    #: None: the outcome is unknown (may have taken effect at any time after ``invoke``)
    complete: float | None
    #: read: the value seen; write/cas: the value stored
    value: Hashable = None
    #: cas: the value compared against
    expected: Hashable = None
    #: cas: applied (True), refused (False), unknown (None)
    ok: bool | None = True

    @property
    def known(self) -> bool:
        return self.complete is not None

    def describe(self, t0: float = 0.0) -> str:
        end = "?" if self.complete is None else f"{self.complete - t0:.4f}"
        span = f"[{self.invoke - t0:.4f}, {end}]"
        if self.kind == "read":
            what = f"read -> {self.value!r}"
        elif self.kind == "write":
            what = f"write {self.value!r}"
        else:
            outcome = {True: "ok", False: "refused", None: "unknown"}[self.ok]
            what = f"cas {self.expected!r} -> {self.value!r} ({outcome})"
        if self.complete is None and self.kind != "cas":
            what += " (outcome unknown)"
        return f"{self.process:>10} {span:>22} {what}"


def _steps(op: Op, state: Hashable) -> list[Hashable]:
    """The register values after ``op`` applied to ``state`` (empty: ``op`` cannot happen
    in ``state``)."""
    if op.kind == "read":
        return [state] if op.value == state else []
    if op.kind == "write":
        return [op.value]
    matches = op.expected == state
    if op.ok is True:
        return [op.value] if matches else []
    if op.ok is False:
        return [] if matches else [state]
    return [op.value, state] if matches else [state]


def _why_not(op: Op, state: Hashable) -> str:
    if op.kind == "read":
        return f"reads {op.value!r} but the register holds {state!r}"
    if op.ok:
        return f"applied, but the register holds {state!r}, not {op.expected!r}"
    return f"refused, but the register holds {state!r} = its expected value"


@dataclass
class KeyResult:
    key: str
    #: True linearizable, False not, None: the search bound was hit (unknown)
    ok: bool | None
    ops: int
    explored: int
    #: a valid order (unknown-outcome ops that never took effect left out) when ``ok``
    linearization: list[Op] = field(default_factory=list)
    report: str = ""


@dataclass
class CheckResult:
    keys: dict[str, KeyResult]

    @property
    def ok(self) -> bool | None:
        """True if every key is linearizable, False if one is not, else None (bound hit)."""
        if any(r.ok is False for r in self.keys.values()):
            return False
        return None if any(r.ok is None for r in self.keys.values()) else True

    def report(self) -> str:
        lines = [
            f"{len(self.keys)} keys, {sum(r.ops for r in self.keys.values())} ops, "
            f"{sum(r.explored for r in self.keys.values())} states explored: "
            + {True: "linearizable", False: "NOT linearizable", None: "unknown"}[self.ok]
        ]
        lines += [r.report for r in self.keys.values() if r.report]
        return "\n".join(lines)


def check(
    history: Iterable[Op], *, initial: Hashable = ABSENT, max_states: int = 500_000
) -> CheckResult:
    """Check each key's sub-history of ``history`` (register starts at ``initial``)."""
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in history:
        if op.complete is not None and op.complete < op.invoke:
            raise ValueError(f"op completes before it is invoked: {op}")
        if op.kind == "read" and op.complete is None:
            continue  # an unknown read constrains nothing
        by_key[op.key].append(op)
    return CheckResult(
        {k: _check_key(k, ops, initial, max_states) for k, ops in sorted(by_key.items())}
    )


def _check_key(key: str, ops: list[Op], initial: Hashable, max_states: int) -> KeyResult:
    ops = sorted(ops, key=lambda o: o.invoke)
    n = len(ops)
    ends = [math.inf if o.complete is None else o.complete for o in ops]
    must = sum(1 << i for i, o in enumerate(ops) if o.known)  # known ops: all linearized
    seen: set[tuple[int, Hashable]] = set()
    best: tuple[int, int, Hashable, list[int]] = (-1, 0, initial, [])
    # an explicit stack (no recursion limit): (linearized mask, value, path)
    stack: list[tuple[int, Hashable, list[int]]] = [(0, initial, [])]
    explored = 0
    while stack:
        mask, state, path = stack.pop()
        if (mask, state) in seen:
            continue
        seen.add((mask, state))
        explored += 1
        if mask & must == must:
            return KeyResult(key, True, n, explored, [ops[i] for i in path])
        done = (mask & must).bit_count()
        if done > best[0]:
            best = (done, mask, state, path)
        if explored >= max_states:
            return KeyResult(
                key,
                None,
                n,
                explored,
                report=f"key {key!r}: search bound of {max_states} states hit after "
                f"linearizing {best[0]} of {must.bit_count()} ops: unknown",
            )
        horizon = min((ends[i] for i in range(n) if not mask >> i & 1), default=math.inf)
        nexts = []
        for i in range(n):
            if mask >> i & 1:
                continue
            if ops[i].invoke > horizon:
                break  # sorted by invoke: the rest started after a pending op completed
            for after in _steps(ops[i], state):
                nexts.append((ends[i], i, after))
        # earliest completion explored first (popped last-pushed first)
        for _end, i, after in sorted(nexts, key=lambda x: x[0], reverse=True):
            stack.append((mask | 1 << i, after, [*path, i]))
    return KeyResult(key, False, n, explored, report=_violation(key, ops, ends, best))


def _violation(
    key: str, ops: list[Op], ends: list[float], best: tuple[int, int, Hashable, list[int]]
) -> str:
    """The longest valid prefix, the value there, and why no pending op can come next."""
    _done, mask, state, path = best
    pending = [i for i in range(len(ops)) if not mask >> i & 1]
    horizon = min(ends[i] for i in pending)
    first = min(pending, key=lambda i: ends[i])
    t0 = ops[0].invoke
    lines = [
        f"key {key!r}: NOT linearizable ({len(ops)} ops, times relative to {t0:.4f})",
        f"  longest valid prefix: {len(path)} ops, register = {state!r}; its last ops:",
    ]
    lines += ["    " + ops[i].describe(t0) for i in path[-5:]]
    lines.append(
        f"  none of these can come next (each was invoked before {ops[first].process}'s op"
        f" completed at {horizon - t0:.4f}):"
    )
    for i in pending:
        if ops[i].invoke > horizon:
            break
        reason = _why_not(ops[i], state) if not _steps(ops[i], state) else "leads to a dead end"
        lines.append(f"    {ops[i].describe(t0)}   <- {reason}")
    return "\n".join(lines)
