"""Model-based test: the real store (real SQLite file) against a dict model.

The model tracks values and etcd-style metadata; every rule checks results, revisions and
errors, and the change history replayed from revision 0 must rebuild the model exactly.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from plantd.state import Conflict, NotFound, StateStore

SCOPES = st.sampled_from(["a", "b", "ü"])
KEYS = st.sampled_from(["x", "y", "z/1"])
VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)

Meta = tuple[Any, int, int, int]  # value, create_revision, mod_revision, version


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="plantd-state-"))
        self.path = self.dir / "state.db"
        self.store = self.run(StateStore.open(self.path, reap_interval=3600))
        self.kv: dict[tuple[str, str], Meta] = {}
        self.scopes: set[str] = set()
        self.rev = 0

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            self.history_rebuilds_state()
            self.run(self.store.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ model helpers

    def _model_set(self, scope: str, key: str, value: Any) -> Meta:
        self.rev += 1
        self.scopes.add(scope)
        old = self.kv.get((scope, key))
        meta = (value, old[1], self.rev, old[3] + 1) if old else (value, self.rev, self.rev, 1)
        self.kv[(scope, key)] = meta
        return meta

    def _current(self, scope: str, key: str) -> int:
        old = self.kv.get((scope, key))
        return old[2] if old else 0

    def _check_set_result(self, res: dict, meta: Meta) -> None:
        assert (res["revision"], res["create_revision"], res["version"]) == (
            self.rev,
            meta[1],
            meta[3],
        )

    # ------------------------------------------------------------------ rules

    @rule(scope=SCOPES, key=KEYS, value=VALUES)
    def set(self, scope: str, key: str, value: Any) -> None:
        res = self.run(self.store.set(scope, key, value))
        self._check_set_result(res, self._model_set(scope, key, value))

    @rule(scope=SCOPES, key=KEYS, value=VALUES, offset=st.sampled_from([0, 0, 1, -1]))
    def cas_set(self, scope: str, key: str, value: Any, offset: int) -> None:
        cur = self._current(scope, key)
        prev = max(cur + offset, 0)
        if prev == cur:
            res = self.run(self.store.set(scope, key, value, prev_revision=prev))
            self._check_set_result(res, self._model_set(scope, key, value))
        else:
            try:
                self.run(self.store.set(scope, key, value, prev_revision=prev))
            except Conflict as e:
                assert e.current_revision == cur
            else:
                raise AssertionError("CAS with a stale revision succeeded")

    @rule(scope=SCOPES, key=KEYS, value=VALUES)
    def set_if_absent(self, scope: str, key: str, value: Any) -> None:
        cur = self._current(scope, key)
        try:
            res = self.run(self.store.set(scope, key, value, if_absent=True))
        except Conflict as e:
            assert cur and e.current_revision == cur
        else:
            assert cur == 0
            self._check_set_result(res, self._model_set(scope, key, value))

    @rule(scope=SCOPES, key=KEYS, stale=st.booleans())
    def delete(self, scope: str, key: str, stale: bool) -> None:
        cur = self._current(scope, key)
        prev = cur + 1 if stale else None
        try:
            res = self.run(self.store.delete(scope, key, prev_revision=prev))
        except Conflict as e:
            assert stale and e.current_revision == cur
        except NotFound:
            assert cur == 0 and not stale
        else:
            assert cur and not stale
            self.rev += 1
            del self.kv[(scope, key)]
            assert res["revision"] == self.rev and res["prev_mod_revision"] == cur

    @rule(scope=SCOPES, k1=KEYS, k2=KEYS, v=VALUES, stale=st.booleans())
    def txn(self, scope: str, k1: str, k2: str, v: Any, stale: bool) -> None:
        if k1 == k2:
            return
        cur1 = self._current(scope, k1)
        ops = [
            {"op": "set", "scope": scope, "key": k1, "value": v, "prev_revision": cur1 + stale},
            {"op": "set", "scope": scope, "key": k2, "value": [v]},
        ]
        try:
            res = self.run(self.store.txn(ops))
        except Conflict as e:
            assert stale and e.current_revision == cur1
            return
        assert not stale
        self.rev += 1
        for key, val in ((k1, v), (k2, [v])):
            old = self.kv.get((scope, key))
            self.kv[(scope, key)] = (
                (val, old[1], self.rev, old[3] + 1) if old else (val, self.rev, self.rev, 1)
            )
        self.scopes.add(scope)
        assert res["revision"] == self.rev

    @rule(scope=SCOPES)
    def delete_scope(self, scope: str) -> None:
        try:
            res = self.run(self.store.delete_scope(scope))
        except NotFound:
            assert scope not in self.scopes
            return
        self.rev += 1
        n = sum(1 for s, _ in self.kv if s == scope)
        self.kv = {k: v for k, v in self.kv.items() if k[0] != scope}
        self.scopes.discard(scope)
        assert res == {"scope": scope, "revision": self.rev, "deleted_keys": n}

    @rule(scope=SCOPES, key=KEYS)
    def get(self, scope: str, key: str) -> None:
        want = self.kv.get((scope, key))
        try:
            got = self.run(self.store.get(scope, key))
        except NotFound:
            assert want is None
            return
        assert want is not None
        assert (got["value"], got["create_revision"], got["mod_revision"], got["version"]) == want
        assert got["revision"] == self.rev

    @rule(scope=SCOPES)
    def list_keys(self, scope: str) -> None:
        try:
            got = self.run(self.store.list_keys(scope, include_values=True))
        except NotFound:
            assert scope not in self.scopes
            return
        want = sorted((k, m) for (s, k), m in self.kv.items() if s == scope)
        assert [
            (g["key"], (g["value"], g["create_revision"], g["mod_revision"], g["version"]))
            for g in got
        ] == want

    @rule()
    def restart(self) -> None:
        self.run(self.store.close())
        self.store = self.run(StateStore.open(self.path, reap_interval=3600))

    # ------------------------------------------------------------------ invariants

    @invariant()
    def revision_matches(self) -> None:
        assert self.store.revision == self.rev
        assert [s["scope"] for s in self.run(self.store.list_scopes())] == sorted(self.scopes)

    def replay(self) -> dict[tuple[str, str], Any]:
        state: dict[tuple[str, str], Any] = {}
        last = 0
        for e in self.run(self.store.changes_since(0)):
            assert e["revision"] >= last
            last = e["revision"]
            if e["op"] == "set":
                state[(e["scope"], e["key"])] = e["value"]
            elif e["op"] == "delete":
                del state[(e["scope"], e["key"])]
            elif e["op"] == "delete-scope":
                state = {k: v for k, v in state.items() if k[0] != e["scope"]}
        assert last == self.rev
        return state

    @rule()
    def history_rebuilds_state(self) -> None:
        assert self.replay() == {k: m[0] for k, m in self.kv.items()}


StoreMachine.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestStoreModel = StoreMachine.TestCase
