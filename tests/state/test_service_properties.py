"""Hypothesis state machine against the running state daemon (real broker, real process).

A dict model predicts every reply of set/get/delete/compare-and-set/list/TTL, and replaying
the ``watch`` history from the machine's start revision (resumed page by page from the last
revision seen) must rebuild exactly the model: the change feed is gap-free and ordered.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from tests.support.state import Stack, make_stack, request

pytestmark = pytest.mark.timeout(180)

KEYS = st.sampled_from(["a", "b", "c", "d/e", "ключ"])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False, width=64)
    | st.text(max_size=12)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def prop_stack(
    tmp_path_factory: pytest.TempPathFactory, backend: dict[str, Any]
) -> Iterator[Stack]:
    """A serving stack on each storage backend (``backend``: tests/state/conftest.py)."""
    s = make_stack(tmp_path_factory.mktemp("state-props") / "home", watch_limit=5, **backend)
    try:
        yield s
    finally:
        s.close()


def same(a: Any, b: Any) -> bool:
    """JSON equality (1 == 1.0 after a round trip is fine; -0.0 == 0.0)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True) or a == b


class StateMachine(RuleBasedStateMachine):
    endpoint: str = ""
    backend: str = "sqlite"
    counter = 0

    def __init__(self) -> None:
        super().__init__()
        from plantd.client import SyncClient

        StateMachine.counter += 1
        self.c = SyncClient(self.endpoint, timeout=5.0)
        self.scope = f"prop.{time.monotonic_ns()}.{StateMachine.counter}"
        self.model: dict[str, tuple[Any, int]] = {}  # key -> (value, mod_revision)
        self.start = self.ok("watch", {})["revision"]
        self.replay: dict[str, Any] = {}
        self.watch_rev = self.start
        self.last_event_rev = self.start

    def teardown(self) -> None:
        self.c.close()

    def call(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        return request(self.c, op, {"service": self.scope, **body} if op != "watch" else body)

    def ok(self, op: str, body: dict[str, Any]) -> Any:
        doc = self.call(op, body)
        assert doc["success"] is True, (op, body, doc)
        return doc["data"]

    # ---------------------------------------------------------------- rules

    @rule(key=KEYS, value=VALUES)
    def set(self, key: str, value: Any) -> None:
        res = self.ok("state-set", {"key": key, "value": value})
        old = self.model.get(key)
        assert res["version"] >= 1
        if old is not None:
            assert res["mod_revision"] > old[1]
        self.model[key] = (value, res["mod_revision"])

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        doc = self.call("state-get", {"key": key})
        if key not in self.model:
            assert doc["success"] is False and doc["code"] == "not_found", doc
            return
        value, rev = self.model[key]
        assert doc["success"] is True, doc
        assert same(doc["data"]["value"], value)
        assert doc["data"]["mod_revision"] == rev

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        doc = self.call("delete", {"key": key})
        if key not in self.model:
            assert doc["code"] == "not_found", doc
            return
        assert doc["success"] is True, doc
        assert doc["data"]["prev_mod_revision"] == self.model.pop(key)[1]

    @rule(key=KEYS, value=VALUES, correct=st.booleans())
    def compare_and_set(self, key: str, value: Any, correct: bool) -> None:
        current = self.model[key][1] if key in self.model else 0
        prev = current if correct else current + 1000
        doc = self.call("state-set", {"key": key, "value": value, "prev_revision": prev})
        if correct:
            assert doc["success"] is True, doc
            self.model[key] = (value, doc["data"]["mod_revision"])
        else:
            assert doc["code"] == "conflict", doc
            assert doc["revision"] == doc["current_revision"] == current

    @rule(key=KEYS, value=VALUES)
    def set_if_absent(self, key: str, value: Any) -> None:
        doc = self.call("state-set", {"key": key, "value": value, "if_absent": True})
        if key in self.model:
            assert doc["code"] == "conflict", doc
        else:
            assert doc["success"] is True and doc["data"]["version"] == 1, doc
            self.model[key] = (value, doc["data"]["mod_revision"])

    @rule()
    def list_keys(self) -> None:
        doc = self.call("list-keys", {})
        if not doc["success"]:  # nothing written yet: the scope does not exist
            assert doc["code"] == "not_found" and not self.model, doc
            return
        keys = doc["data"]["keys"]
        assert [k["key"] for k in keys] == sorted(self.model)
        for k in keys:
            value, rev = self.model[k["key"]]
            assert same(k["value"], value) and k["mod_revision"] == rev

    @rule(key=KEYS, value=VALUES)
    def ttl_expires(self, key: str, value: Any) -> None:
        res = self.ok("state-set", {"key": key, "value": value, "ttl": 0.15})
        self.model.pop(key, None)
        time.sleep(0.45)  # > ttl + the daemon's reap interval (0.1 s): expired AND reaped
        doc = self.call("state-get", {"key": key})
        assert doc["code"] == "not_found", doc
        if self.backend == "etcd":
            self.await_expiry_in_history(key, res["revision"])

    def await_expiry_in_history(self, key: str, since: int) -> None:
        """etcd: the key is deleted by etcd when its lease expires (>= 1 s here), and the
        ``watch`` operation shows that delete once a later change moved the head (docs/
        state.md, "Where behaviour differs"): change another scope until it shows."""
        deadline = time.monotonic() + 10
        while True:
            self.ok("state-set", {"service": f"{self.scope}.flush", "key": "f", "value": 0})
            rev, more = since, True
            while more:
                page = self.ok("watch", {"service": self.scope, "revision": rev})
                if any(e["op"] == "delete" and e["key"] == key for e in page["events"]):
                    return
                rev, more = page["revision"], page["more"]
            assert time.monotonic() < deadline, f"etcd never deleted the expired key {key!r}"
            time.sleep(0.2)

    @rule(key=KEYS, value=VALUES)
    def ttl_long(self, key: str, value: Any) -> None:
        res = self.ok("state-set", {"key": key, "value": value, "ttl": 300})
        self.model[key] = (value, res["mod_revision"])
        got = self.ok("state-get", {"key": key})
        assert got["expires"] is not None and got["expires"] > time.time() + 200

    @rule()
    def watch_from_revision(self) -> None:
        """Resume the change feed from the last revision seen; it must rebuild the model."""
        while True:
            page = self.ok("watch", {"service": self.scope, "revision": self.watch_rev})
            for ev in page["events"]:
                assert ev["scope"] == self.scope
                assert ev["revision"] >= self.last_event_rev, "events out of order"
                self.last_event_rev = ev["revision"]
                if ev["op"] == "set":
                    self.replay[ev["key"]] = ev["value"]
                elif ev["op"] == "delete":
                    self.replay.pop(ev["key"], None)
                elif ev["op"] == "delete-scope":
                    self.replay.clear()
            assert page["revision"] >= self.watch_rev
            self.watch_rev = page["revision"]
            if not page["more"]:
                break
        assert set(self.replay) == set(self.model)
        for key, (value, _rev) in self.model.items():
            assert same(self.replay[key], value)

    @invariant()
    def revisions_are_unique_per_key(self) -> None:
        revs = [rev for _v, rev in self.model.values()]
        assert len(revs) == len(set(revs))


def test_state_machine_against_the_daemon(prop_stack: Stack, tmp_path: Path) -> None:
    StateMachine.endpoint = prop_stack.endpoint
    StateMachine.backend = prop_stack.env.get("PLANTD_STATE_BACKEND", "sqlite")
    run_state_machine_as_test(
        StateMachine,
        settings=settings(
            max_examples=10,
            stateful_step_count=20,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
