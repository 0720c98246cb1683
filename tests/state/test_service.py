"""``org.plantd.State`` over MDP against real processes: a broker daemon and a state daemon
on random ports with a temporary PLANTD_HOME. Every operation, every kind of malformed
request (each gets a precise error and the daemon keeps serving) and the state bus feed.

The stack helpers live in tests/support/state.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.state import SERVICE, Stack, data, make_stack, request

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def stack(tmp_path: Path, backend: dict[str, Any]) -> Iterator[Stack]:
    s = make_stack(tmp_path / "home", **backend)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def shared_stack(
    tmp_path_factory: pytest.TempPathFactory, backend: dict[str, Any]
) -> Iterator[Stack]:
    """One broker + state daemon for the tests that only need a serving daemon, on each
    storage backend (``backend``: tests/state/conftest.py)."""
    s = make_stack(
        tmp_path_factory.mktemp("state-svc") / "home", history_size=50, watch_limit=7, **backend
    )
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def c(shared_stack: Stack) -> Iterator[Any]:
    with shared_stack.client() as client:
        yield client


def unique(prefix: str = "s") -> str:
    return f"{prefix}.{time.monotonic_ns()}"


# --------------------------------------------------------------------------- operations


def test_every_operation_round_trip(c: Any, tmp_path: Path) -> None:
    scope = unique()
    made = data(c, "create-scope", {"service": scope})
    assert made["created"] is True and made["status"] == "created"
    again = data(c, "create-scope", {"service": scope})
    assert again["created"] is False and again["revision"] == made["revision"]
    listed = data(c, "list-scopes", {})
    assert scope in listed["scopes"] and listed["count"] == len(listed["scopes"])
    assert any(d["scope"] == scope and d["keys"] == 0 for d in listed["details"])
    assert data(c, "list-keys", {"service": scope})["keys"] == []

    s1 = data(c, "state-set", {"service": scope, "key": "a", "value": {"t": 21.5}})
    assert s1["version"] == 1 and s1["create_revision"] == s1["mod_revision"] == s1["revision"]
    s2 = data(c, "set", {"scope": scope, "key": "a", "value": [1, "x", None], "return_prev": True})
    assert s2["version"] == 2 and s2["prev"] == {
        "value": {"t": 21.5},
        "mod_revision": s1["revision"],
    }
    got = data(c, "state-get", {"service": scope, "key": "a"})
    assert got["value"] == [1, "x", None] and got["mod_revision"] == s2["revision"]
    assert data(c, "get", {"scope": scope, "key": "a"})["value"] == [1, "x", None]
    # null is a value, not an absence
    data(c, "state-set", {"service": scope, "key": "n", "value": None})
    assert data(c, "state-get", {"service": scope, "key": "n"})["value"] is None

    keys = data(c, "list-keys", {"service": scope})["keys"]
    assert [k["key"] for k in keys] == ["a", "n"]
    assert {"key", "value", "create_revision", "mod_revision", "version", "updated"} <= set(keys[0])
    assert "value" not in data(c, "list-keys", {"service": scope, "values": False})["keys"][0]
    assert [k["key"] for k in data(c, "list-keys", {"service": scope, "prefix": "n"})["keys"]] == [
        "n"
    ]

    cas = data(
        c, "state-set", {"service": scope, "key": "a", "value": 3, "prev_revision": s2["revision"]}
    )
    assert cas["version"] == 3
    assert (
        data(c, "state-set", {"service": scope, "key": "new", "value": 1, "if_absent": True})[
            "version"
        ]
        == 1
    )
    ttl = data(c, "state-set", {"service": scope, "key": "t", "value": 1, "ttl": 60})
    assert data(c, "state-get", {"service": scope, "key": "t"})["expires"] > time.time() + 50
    assert ttl["version"] == 1

    deleted = data(c, "delete", {"service": scope, "key": "new"})
    assert deleted["status"] == "deleted" and deleted["prev_mod_revision"] > 0

    txn = data(
        c,
        "txn",
        {
            "service": scope,
            "ops": [
                {"op": "set", "key": "x", "value": 1},
                {"op": "set", "service": scope, "key": "y", "value": 2},
                {"op": "check", "key": "a", "prev_revision": cas["revision"]},
            ],
        },
    )
    assert len(txn["results"]) == 3
    assert txn["results"][0]["revision"] == txn["results"][1]["revision"] == txn["revision"]

    page = data(c, "watch", {"service": scope, "revision": s1["revision"] - 1})
    revs = [e["revision"] for e in page["events"]]
    assert revs == sorted(revs) and all(e["scope"] == scope for e in page["events"])
    head = data(c, "watch", {})
    assert head["events"] == [] and head["revision"] >= txn["revision"]

    health = request(c, "health", {})
    assert health["success"] is True and health["status"] == "pass"
    assert health["data"]["service"] == SERVICE and health["data"]["revision"] >= txn["revision"]
    assert data(c, "health", {"service": scope})["scope_exists"] is True

    export = data(c, "export", {})
    assert export["format"] == "plantd-state" and export["scopes"][scope]["x"] == 1
    other = unique("imported")
    imported = data(
        c,
        "import",
        {"doc": {"format": "plantd-state", "version": 1, "scopes": {other: {"k": "v"}}}},
    )
    assert imported["revision"] > txn["revision"]
    assert data(c, "state-get", {"service": other, "key": "k"})["value"] == "v"

    dest = tmp_path / "backup.db"
    backup = data(c, "backup", {"path": str(dest)})
    assert backup["path"] == str(dest) and dest.stat().st_size > 0

    dropped = data(c, "delete-scope", {"service": scope})
    assert dropped["deleted_keys"] == 5 and dropped["status"] == "deleted"
    assert scope not in data(c, "list-scopes", {})["scopes"]


def test_set_creates_missing_scope_and_missing_key_is_not_found(c: Any) -> None:
    scope = unique()
    miss = request(c, "state-get", {"service": scope, "key": "k"})
    assert miss["code"] == "not_found" and scope in miss["error"]
    data(c, "state-set", {"service": scope, "key": "k", "value": "v"})
    assert scope in data(c, "list-scopes", {})["scopes"]
    miss = request(c, "state-get", {"service": scope, "key": "other"})
    assert miss == {
        "success": False,
        "error": f"key 'other' not found in scope {scope!r}",
        "code": "not_found",
        "scope": scope,
        "key": "other",
    }


def test_conflict_reply_carries_the_current_revision(c: Any) -> None:
    """The TUI reads ``revision`` from a conflict; clients of the store read current_revision."""
    scope = unique()
    s = data(c, "state-set", {"service": scope, "key": "k", "value": 1})
    doc = request(
        c,
        "state-set",
        {"service": scope, "key": "k", "value": 2, "prev_revision": s["revision"] + 100},
    )
    assert doc["success"] is False and doc["code"] == "conflict"
    assert doc["revision"] == doc["current_revision"] == s["revision"]
    absent = request(c, "state-set", {"service": scope, "key": "k", "value": 2, "if_absent": True})
    assert absent["code"] == "conflict" and absent["revision"] == s["revision"]


def test_idempotent_request_id_over_mdp(c: Any) -> None:
    scope = unique()
    body = {"service": scope, "key": "k", "value": 1, "request_id": "rid-1"}
    first = data(c, "state-set", body)
    again = data(c, "state-set", body)
    assert again["revision"] == first["revision"]
    assert data(c, "state-get", {"service": scope, "key": "k"})["version"] == 1
    other = request(c, "state-set", {**body, "value": 2})
    assert other["code"] == "invalid_argument" and "already used" in other["error"]


BAD_REQUESTS: list[tuple[str, Any, str, str]] = [
    ("state-set", b"{not json", "invalid_json", "state-set: request is not valid JSON"),
    (
        "state-set",
        b'{"service":"s","key":"k","value":' + b"[" * 5000 + b"]" * 5000 + b"}",
        "invalid_json",
        "nested too deeply",
    ),
    (
        "state-set",
        b'{"service":"s","key":"k","value":' + b"[" * 300 + b"]" * 300 + b"}",
        "invalid_argument",
        "deeper than 255 levels",
    ),
    ("state-get", b'{"key": "\xc3\x28"}', "invalid_json", "not UTF-8"),
    ("state-set", b"[1, 2]", "invalid_argument", "request must be a JSON object, got array"),
    ("state-get", b'"k"', "invalid_argument", "request must be a JSON object, got string"),
    (
        "state-set",
        {"service": "s", "value": 1},
        "invalid_argument",
        "state-set: missing field 'key'",
    ),
    ("state-set", {"key": "k", "value": 1}, "invalid_argument", "missing field 'service'"),
    ("state-set", {"service": "s", "key": "k"}, "invalid_argument", "missing field 'value'"),
    (
        "state-get",
        {"service": 7, "key": "k"},
        "invalid_argument",
        "field 'service' must be a string, got integer 7",
    ),
    (
        "state-get",
        {"service": "s", "key": ["k"]},
        "invalid_argument",
        "field 'key' must be a string, got array",
    ),
    ("state-get", {"service": "s", "key": ""}, "invalid_argument", "field 'key' is empty"),
    ("state-get", {"service": "", "key": "k"}, "invalid_argument", "field 'service' is empty"),
    ("state-get", {"service": "a", "scope": "b", "key": "k"}, "invalid_argument", "disagree"),
    (
        "state-get",
        {"service": "s", "key": "k", "bogus": 1},
        "invalid_argument",
        "unknown field(s) 'bogus'",
    ),
    (
        "state-set",
        {"service": "s", "key": "k", "value": 1, "prev_revision": "3"},
        "invalid_argument",
        "'prev_revision' must be an integer >= 0, got string",
    ),
    (
        "state-set",
        {"service": "s", "key": "k", "value": 1, "prev_revision": True},
        "invalid_argument",
        "'prev_revision' must be an integer",
    ),
    (
        "state-set",
        {"service": "s", "key": "k", "value": 1, "prev_revision": -1},
        "invalid_argument",
        "must be >= 0, got -1",
    ),
    (
        "state-set",
        {"service": "s", "key": "k", "value": 1, "if_absent": "yes"},
        "invalid_argument",
        "'if_absent' must be true or false",
    ),
    (
        "state-set",
        {"service": "s", "key": "k", "value": 1, "ttl": "5"},
        "invalid_argument",
        "'ttl' must be a number",
    ),
    (
        "state-set",
        {"service": "s", "key": "k", "value": 1, "ttl": -1},
        "invalid_argument",
        "'ttl' must be a number > 0",
    ),
    (
        "state-set",
        {"service": "s", "key": "k", "value": 1, "request_id": 5},
        "invalid_argument",
        "'request_id' must be a string",
    ),
    (
        "state-set",
        {"service": "s", "key": "k" * 600, "value": 1},
        "limit_exceeded",
        "max_key_length is 512",
    ),
    (
        "state-set",
        {"service": "s" * 200, "key": "k", "value": 1},
        "limit_exceeded",
        "max_scope_length is 128",
    ),
    (
        "state-set",
        {"service": "s", "key": "k", "value": "x" * 600_000},
        "limit_exceeded",
        "max_value_bytes is 524288",
    ),
    (
        "state-set",
        {"service": "s", "key": "k", "value": 1, "if_absent": True, "prev_revision": 3},
        "invalid_argument",
        "contradicts",
    ),
    (
        "delete",
        {"service": "s", "key": "k", "prev_revision": 0},
        "invalid_argument",
        "can never succeed",
    ),
    ("txn", {"service": "s"}, "invalid_argument", "txn: missing field 'ops'"),
    ("txn", {"ops": {"op": "set"}}, "invalid_argument", "'ops' must be an array"),
    ("txn", {"ops": [1]}, "invalid_argument", "ops[0] must be an object, got integer"),
    ("txn", {"ops": []}, "invalid_argument", "at least one op"),
    (
        "txn",
        {"ops": [{"op": "set", "service": "a", "scope": "b", "key": "k", "value": 1}]},
        "invalid_argument",
        "'service' and 'scope' disagree",
    ),
    (
        "txn",
        {"ops": [{"op": "set", "key": "k", "value": 1}]},
        "invalid_argument",
        "scope must be a non-empty string",
    ),
    (
        "txn",
        {"service": "s", "ops": [{"op": "frob", "key": "k"}]},
        "invalid_argument",
        "op must be set, delete or check",
    ),
    (
        "txn",
        {"service": "s", "ops": [{"op": "set", "key": "k", "value": 1}] * 2},
        "invalid_argument",
        "duplicate key",
    ),
    (
        "txn",
        {"service": "s", "ops": [{"op": "set", "key": f"k{i}", "value": 1} for i in range(200)]},
        "limit_exceeded",
        "max_txn_ops is 128",
    ),
    ("watch", {"revision": "1"}, "invalid_argument", "'revision' must be an integer"),
    ("watch", {"revision": 0, "limit": 0}, "invalid_argument", "'limit' must be >= 1"),
    ("backup", {"path": "relative.db"}, "invalid_argument", "path must be absolute"),
    ("backup", {}, "invalid_argument", "backup: missing field 'path'"),
    ("import", {}, "invalid_argument", "import: missing field 'doc'"),
    ("import", {"doc": {"scopes": []}}, "invalid_argument", "'scopes' object"),
    ("list-keys", {}, "invalid_argument", "list-keys: missing field 'service'"),
    (
        "list-keys",
        {"service": "s", "values": 1},
        "invalid_argument",
        "'values' must be true or false",
    ),
    ("no-such-op", {}, "unknown_operation", "unknown operation 'no-such-op'"),
]


@pytest.mark.parametrize(("op", "body", "code", "fragment"), BAD_REQUESTS)
def test_bad_requests_get_precise_errors(
    c: Any, op: str, body: Any, code: str, fragment: str
) -> None:
    doc = request(c, op, body)
    assert doc["success"] is False, doc
    assert doc["code"] == code, doc
    assert fragment in doc["error"], doc


def test_daemon_keeps_serving_after_bad_requests(shared_stack: Stack, c: Any) -> None:
    for op, body, _code, _fragment in BAD_REQUESTS:
        request(c, op, body)
    frames = c.request(SERVICE, b"state-get", b"{}", b"extra")
    assert json.loads(frames[-1])["code"] == "bad_request"
    assert request(c, "health", {})["status"] == "pass"
    assert shared_stack.state.proc.poll() is None


def test_missing_things_are_not_found(c: Any) -> None:
    scope = unique()
    for op, body in [
        ("state-get", {"service": scope, "key": "k"}),
        ("delete", {"service": scope, "key": "k"}),
        ("list-keys", {"service": scope}),
        ("delete-scope", {"service": scope}),
    ]:
        doc = request(c, op, body)
        assert doc["code"] == "not_found", (op, doc)


def test_oversized_message_is_refused_by_the_broker(shared_stack: Stack, c: Any) -> None:
    from plantd.client.errors import MessageTooLarge

    with pytest.raises(MessageTooLarge):
        request(c, "state-set", {"service": "s", "key": "k", "value": "x" * (2 << 20)})
    assert request(c, "health", {})["status"] == "pass"


def test_watch_pages_and_compaction(c: Any) -> None:
    """watch_limit=7 and history_size=50 in this daemon: paging and a compacted error."""
    scope = unique()
    first = data(c, "state-set", {"service": scope, "key": "k0", "value": 0})["revision"]
    for i in range(1, 20):
        data(c, "state-set", {"service": scope, "key": f"k{i}", "value": i})
    events, since, pages = [], first - 1, 0
    while True:
        page = data(c, "watch", {"service": scope, "revision": since})
        pages += 1
        events += page["events"]
        assert page["revision"] >= since
        since = page["revision"]
        if not page["more"]:
            break
    sets = [e for e in events if e["op"] == "set"]
    assert [e["value"] for e in sets] == list(range(20))
    assert pages >= 3
    for i in range(60):
        data(c, "state-set", {"service": scope, "key": "churn", "value": i})
    doc = request(c, "watch", {"revision": first})
    # a stale cursor (issue 10 paging contract): invalid_argument naming the field
    assert (doc["code"], doc["field"]) == ("invalid_argument", "revision")
    assert doc["reason"] == "compacted"
    assert doc["oldest_revision"] == doc["compact_revision"] + 1 > first
    doc = request(c, "watch", {"after": first})
    assert (doc["code"], doc["field"]) == ("invalid_argument", "after")


async def _next_event(sub: Any, timeout: float = 5.0) -> tuple[str, dict[str, Any]]:
    return await sub.recv(timeout=timeout)


def test_state_bus_event_for_every_committed_change(
    shared_stack: Stack, c: Any, backend: dict[str, Any]
) -> None:
    from plantd.client import Subscriber

    scope = unique("bus")

    async def scenario() -> list[tuple[str, dict[str, Any]]]:
        sub = Subscriber(shared_stack.bus()[1], topics=[scope])
        try:
            await asyncio.sleep(0.3)  # let the subscription reach the proxy
            # blocking calls are fine here: the SUB socket buffers in zmq's I/O thread
            s = data(c, "state-set", {"service": scope, "key": "k", "value": {"v": 1}})
            data(c, "delete", {"service": scope, "key": "k"})
            got = [await _next_event(sub) for _ in range(3)]
            assert got[1][1]["revision"] == s["revision"]
            return got
        finally:
            sub.close()

    got = asyncio.run(scenario())
    assert [t for t, _ in got] == [scope] * 3
    docs = [d for _, d in got]
    assert [d["op"] for d in docs] == ["create-scope", "set", "delete"]
    assert docs[1]["key"] == "k" and docs[1]["value"] == {"v": 1} and docs[1]["scope"] == scope
    assert set(docs[1]) == {"scope", "key", "op", "value", "revision", "ts"}
    # SQLite counts every revision; etcd's revisions only go up (its housekeeping writes
    # count too, docs/state.md)
    if backend.get("backend") == "etcd":
        assert docs[2]["revision"] > docs[1]["revision"]
    else:
        assert docs[2]["revision"] == docs[1]["revision"] + 1
