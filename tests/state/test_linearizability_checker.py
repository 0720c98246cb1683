"""The register linearizability checker (tests/support/linearizability.py) on known histories:
classic violations are found and reported with the offending op, histories built around a
sequential execution always pass, any wrong result in a sequential history is caught, and
the checker agrees with brute force on small random histories."""

from __future__ import annotations

import itertools
from collections.abc import Hashable

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.linearizability import ABSENT, Op, check


def r(p: str, t0: float, t1: float | None, value: Hashable, key: str = "k") -> Op:
    return Op(p, key, "read", t0, t1, value)


def w(p: str, t0: float, t1: float | None, value: Hashable, key: str = "k") -> Op:
    return Op(p, key, "write", t0, t1, value)


def cas(p: str, t0: float, t1: float | None, exp: Hashable, new: Hashable, ok: bool | None) -> Op:
    return Op(p, "k", "cas", t0, t1, new, exp, ok if t1 is not None else None)


# ------------------------------------------------------------------- known histories


def test_concurrent_write_and_reads_either_order_is_fine() -> None:
    h = [w("a", 0, 10, 1), r("b", 1, 2, ABSENT), r("c", 3, 4, 1), r("b", 11, 12, 1)]
    res = check(h)
    assert res.ok is True, res.report()
    assert [o.kind for o in res.keys["k"].linearization] == ["read", "write", "read", "read"]


def test_stale_read_after_a_completed_write_is_a_violation() -> None:
    h = [w("a", 0, 1, 1), r("b", 2, 3, ABSENT)]
    res = check(h)
    assert res.ok is False
    assert "reads ABSENT but the register holds 1" in res.report(), res.report()


def test_register_cannot_go_back_and_forth() -> None:
    """w1 and w2 concurrent with three sequential reads seeing 2, 1, 2: impossible."""
    h = [w("a", 0, 10, 1), w("b", 0, 10, 2), r("c", 1, 2, 2), r("c", 3, 4, 1), r("c", 5, 6, 2)]
    res = check(h)
    assert res.ok is False
    assert "read -> 2" in res.keys["k"].report


def test_two_cas_from_the_same_value_cannot_both_apply() -> None:
    h = [w("a", 0, 1, 0), cas("b", 2, 5, 0, 1, True), cas("c", 2, 5, 0, 2, True)]
    assert check(h).ok is False
    # ... unless a write of 0 may sit between them
    assert check([*h, w("d", 2, 5, 0)]).ok is True


def test_refused_cas_must_see_another_value() -> None:
    assert check([w("a", 0, 1, 1), cas("b", 2, 3, 1, 2, False)]).ok is False
    assert check([w("a", 0, 1, 1), cas("b", 2, 3, 1, 2, False), w("c", 0, 4, 5)]).ok is True


def test_unknown_outcomes_may_or_may_not_have_happened() -> None:
    # a timed-out write seen later, or never: both fine
    assert check([w("a", 0, None, 1), r("b", 5, 6, 1)]).ok is True
    assert check([w("a", 0, None, 1), r("b", 5, 6, ABSENT)]).ok is True
    # ... but not before it was invoked
    assert check([r("b", 0, 1, 1), w("a", 2, None, 1)]).ok is False
    # an unknown cas: applied or not
    h = [w("a", 0, 1, 1), cas("b", 2, None, 1, 2, None)]
    assert check([*h, r("c", 5, 6, 2)]).ok is True
    assert check([*h, r("c", 5, 6, 1)]).ok is True
    assert check([*h, r("c", 5, 6, 3)]).ok is False
    # an unknown read constrains nothing
    assert check([r("c", 0, None, 99)]).ok is True


def test_keys_are_checked_independently() -> None:
    h = [w("a", 0, 1, 1, key="x"), r("b", 2, 3, 1, key="x"), r("b", 2, 3, 7, key="y")]
    res = check(h)
    assert res.ok is False and res.keys["x"].ok is True and res.keys["y"].ok is False
    assert "key 'y'" in res.report()


def test_search_bound_gives_unknown_not_a_guess() -> None:
    # 14 concurrent writes, then a read of a value nobody wrote: exhaustive search needed
    h = [w(f"p{i}", 0, 10, i) for i in range(14)] + [r("z", 11, 12, 99)]
    res = check(h, max_states=2000)
    assert res.ok is None and "search bound of 2000 states hit" in res.report()


def test_completion_before_invoke_is_refused() -> None:
    try:
        check([r("a", 2, 1, 0)])
    except ValueError as e:
        assert "completes before it is invoked" in str(e)
    else:
        raise AssertionError("accepted a backwards op")


# ------------------------------------------------------------------- properties

# a sequential program: ("read",) | ("write",) | ("cas", hit)
STEPS = st.lists(
    st.one_of(
        st.just(("read", False)),
        st.just(("write", False)),
        st.tuples(st.just("cas"), st.booleans()),
    ),
    min_size=1,
    max_size=40,
)


def run_sequential(steps: list[tuple[str, bool]]) -> list[Op]:
    """Ops with their linearization points at 0, 10, 20, ...; results from the model;
    unique written values."""
    ops, state, fresh = [], ABSENT, itertools.count(1)
    for n, (kind, hit) in enumerate(steps):
        t = n * 10.0
        if kind == "read":
            ops.append(r("p", t, t, state))
        elif kind == "write":
            state = next(fresh)
            ops.append(w("p", t, t, state))
        else:
            new = next(fresh)
            exp = state if hit else -1
            ops.append(cas("p", t, t, exp, new, hit))
            state = new if hit else state
    return ops


@settings(max_examples=150, deadline=None)
@given(steps=STEPS, data=st.data())
def test_histories_around_a_sequential_run_are_linearizable(
    steps: list[tuple[str, bool]], data: st.DataObject
) -> None:
    """Stretch each op's interval around its point (overlapping others freely), and turn
    some writes into unknown outcomes: still linearizable."""
    out = []
    for op in run_sequential(steps):
        before = data.draw(st.floats(0, 35))
        after = data.draw(st.floats(0, 35))
        unknown = op.kind == "write" and data.draw(st.booleans())
        end = None if unknown else op.complete + after  # type: ignore[operator]
        out.append(
            Op(op.process, op.key, op.kind, op.invoke - before, end, op.value, op.expected, op.ok)
        )
    # a phantom: a timed-out write that never happened
    out.append(w("ghost", 5.0, None, "never"))
    res = check(out)
    assert res.ok is True, res.report()


@settings(max_examples=150, deadline=None)
@given(steps=STEPS, data=st.data())
def test_any_wrong_result_in_a_sequential_history_is_caught(
    steps: list[tuple[str, bool]], data: st.DataObject
) -> None:
    ops = run_sequential(steps)
    checked = [j for j, o in enumerate(ops) if o.kind != "write"]
    if not checked:
        return
    i = data.draw(st.sampled_from(checked))
    o = ops[i]
    if o.kind == "read":
        ops[i] = Op(o.process, o.key, "read", o.invoke, o.complete, ("wrong", o.value))
    else:
        ops[i] = Op(o.process, o.key, "cas", o.invoke, o.complete, o.value, o.expected, not o.ok)
    # sequential: each op completes before the next one starts
    spread = [
        Op(x.process, x.key, x.kind, x.invoke, x.invoke + 1, x.value, x.expected, x.ok) for x in ops
    ]
    res = check(spread)
    assert res.ok is False
    assert spread[i].describe(spread[0].invoke) in res.report(), res.report()


def brute_force(ops: list[Op]) -> bool:
    known = [o for o in ops if o.known]
    maybe = [o for o in ops if not o.known and o.kind != "read"]
    for k in range(len(maybe) + 1):
        for extra in itertools.combinations(maybe, k):
            for order in itertools.permutations(known + list(extra)):
                if _valid(order):
                    return True
    return False


def _valid(order: tuple[Op, ...]) -> bool:
    for a, b in itertools.combinations(range(len(order)), 2):
        later, earlier = order[a], order[b]  # order[a] is placed before order[b]
        if earlier.complete is not None and earlier.complete < later.invoke:
            return False
    states: list[Hashable] = [ABSENT]
    for op in order:
        nxt: list[Hashable] = []
        for s in states:
            if op.kind == "read":
                nxt += [s] if s == op.value else []
            elif op.kind == "write":
                nxt.append(op.value)
            elif op.ok is True:
                nxt += [op.value] if s == op.expected else []
            elif op.ok is False:
                nxt += [s] if s != op.expected else []
            else:
                nxt += [op.value, s] if s == op.expected else [s]
        states = nxt
        if not states:
            return False
    return True


VALS = st.sampled_from([ABSENT, 1, 2])
SMALL_OP = st.tuples(
    st.sampled_from(["read", "write", "cas"]),
    st.integers(0, 6),
    st.one_of(st.none(), st.integers(0, 6)),
    VALS,
    VALS,
    st.one_of(st.none(), st.booleans()),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(SMALL_OP, min_size=1, max_size=5))
def test_agrees_with_brute_force_on_small_histories(raw: list[tuple]) -> None:  # type: ignore[type-arg]
    ops = []
    for n, (kind, t0, dt, value, exp, ok) in enumerate(raw):
        end = None if dt is None else float(t0 + dt)
        if kind == "cas":
            ops.append(cas(f"p{n}", float(t0), end, exp, value, ok if ok is not None else True))
        elif kind == "write":
            ops.append(w(f"p{n}", float(t0), end, value))
        else:
            ops.append(r(f"p{n}", float(t0), end, value))
    assert check(ops).ok is brute_force(ops), check(ops).report()
