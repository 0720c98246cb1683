"""Authorization and audit inside ``org.plantd.State``: a real store (whose file holds the
state audit chain), a real keyring and policy file; the caller set as the Worker SDK sets it
for a handler. Rows are read as ``plant audit`` reads them: every chain of the host merged.

Through a whole stack (broker + daemon processes): tests/state/test_authorization_stack.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from plantd.identity.audit import host_sources, merged_query, verify_sources
from plantd.identity.auditwriter import HEAD_TOPIC
from plantd.identity.authority import Authority
from plantd.identity.guard import Guard
from plantd.identity.principals import Registry, init_keyring
from plantd.security.caller import Caller, serving
from plantd.security.keys import Keyring
from plantd.state import StateStore
from plantd.state.audit import StoreAudit
from plantd.state.service import StateService

ALICE = Caller("alice", ("operator",), "tcp://10.0.0.7:5555")
VIC = Caller("vic", ("viewer",), "tcp://10.0.0.8:5555")
ENG = Caller("eve", ("engineer",))
ADMIN = Caller("admin", ("admin",))
ANON = Caller(None)


@dataclass
class Env:
    service: StateService
    store: StateStore
    ring: Keyring
    audit: StoreAudit
    published: list[tuple[str, dict[str, Any]]]

    async def call(self, caller: Caller, op: str, body: dict[str, Any]) -> dict[str, Any]:
        with serving(caller):
            return await self.service.dispatch(op, [json.dumps(body).encode()])

    async def ok(self, caller: Caller, op: str, body: dict[str, Any]) -> dict[str, Any]:
        doc = await self.call(caller, op, body)
        assert doc["success"] is True, doc
        return doc["data"]  # type: ignore[no-any-return]

    def rows(self, **where: Any) -> list[dict[str, Any]]:
        return merged_query(host_sources(self.ring.audit), limit=1000, **where).rows

    def verified(self) -> bool:
        return bool(verify_sources(host_sources(self.ring.audit))["ok"])


async def make_env(tmp_path: Path, *, secure: bool) -> AsyncIterator[Env]:
    ring = Keyring.at_home(tmp_path / "home")
    init_keyring(ring)
    with Registry(ring) as reg:
        reg.add("alice", ["operator"])
        reg.add("vic", ["viewer"])
        reg.add("eve", ["engineer"])
    published: list[tuple[str, dict[str, Any]]] = []

    def publish(topic: str, doc: dict[str, Any]) -> bool:
        published.append((topic, doc))
        return True

    store = await StateStore.open(tmp_path / "state.db")
    audit = await StoreAudit.open(
        store,
        service="org.plantd.State",
        keyring_audit=ring.audit,
        publish=publish,
        head_interval=0.05,
    )
    authority = Authority(ring)
    guard = Guard(authority, service="org.plantd.State", secure=secure)
    service = StateService(store, guard=guard, audit=audit)
    try:
        yield Env(service, store, ring, audit, published)
    finally:
        await store.close()
        await audit.close()
        authority.close()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async for e in make_env(tmp_path, secure=True):
        yield e


@pytest.fixture
async def insecure(tmp_path: Path) -> AsyncIterator[Env]:
    async for e in make_env(tmp_path, secure=False):
        yield e


async def test_viewer_reads_but_cannot_set(env: Env) -> None:
    await env.ok(ALICE, "set", {"service": "line1", "key": "speed", "value": 5})
    got = await env.ok(VIC, "get", {"service": "line1", "key": "speed"})
    assert got["value"] == 5
    denied = await env.call(VIC, "set", {"service": "line1", "key": "speed", "value": 9})
    assert denied["success"] is False and denied["code"] == "unauthorized"
    assert denied["error"].startswith("not authorized: rule 'default-deny'")
    assert "vic (viewer) may not write with set in scope 'line1' on key 'speed'" in denied["error"]
    assert denied["rule"] == "default-deny"
    assert (await env.ok(VIC, "get", {"service": "line1", "key": "speed"}))["value"] == 5


async def test_operator_cannot_touch_config_scopes_engineer_can(env: Env) -> None:
    body = {"service": "plantd.broker", "key": "timeout", "value": 3}
    denied = await env.call(ALICE, "set", body)
    assert denied["code"] == "unauthorized" and "alice (operator)" in denied["error"]
    assert (await env.call(ALICE, "create-scope", {"service": "plantd.x"}))["code"] == (
        "unauthorized"
    )
    assert (await env.call(ALICE, "delete-scope", {"service": "plantd.x"}))["code"] == (
        "unauthorized"
    )
    await env.ok(ENG, "set", body)
    # the operator still reads configuration
    assert (await env.ok(ALICE, "get", {"service": "plantd.broker", "key": "timeout"}))["value"]


async def test_txn_checks_every_key(env: Env) -> None:
    ops = [
        {"op": "set", "scope": "line1", "key": "a", "value": 1},
        {"op": "set", "scope": "plantd.cfg", "key": "b", "value": 2},
    ]
    denied = await env.call(ALICE, "txn", {"ops": ops})
    assert denied["code"] == "unauthorized" and "'plantd.cfg'" in denied["error"]
    missing = await env.call(ADMIN, "get", {"service": "line1", "key": "a"})
    assert missing["code"] == "not_found"  # nothing of the txn was applied
    # a compare on a configuration key is a read: allowed for an operator
    await env.ok(ENG, "set", {"service": "plantd.cfg", "key": "b", "value": 2})
    ops[1] = {"op": "check", "scope": "plantd.cfg", "key": "b", "prev_revision": 0}
    res = await env.call(ALICE, "txn", {"ops": ops})
    assert res["code"] == "conflict"  # authorized; the compare itself fails
    # the default scope of the request counts for ops without one
    denied = await env.call(
        ALICE, "txn", {"service": "plantd.cfg", "ops": [{"op": "delete", "key": "b"}]}
    )
    assert denied["code"] == "unauthorized"


async def test_import_checks_every_scope_and_replace_every_existing_one(env: Env) -> None:
    await env.ok(ENG, "set", {"service": "plantd.cfg", "key": "b", "value": 2})
    doc = {"format": "plantd-state", "version": 1, "scopes": {"line1": {"a": 1}}}
    await env.ok(ALICE, "import", {"doc": doc})
    denied = await env.call(ALICE, "import", {"doc": doc, "replace": True})
    assert denied["code"] == "unauthorized" and "'plantd.cfg'" in denied["error"]
    bad = {"format": "plantd-state", "version": 1, "scopes": {"plantd.z": {"a": 1}}}
    assert (await env.call(ALICE, "import", {"doc": bad}))["code"] == "unauthorized"


async def test_listings_hide_unreadable_scopes_and_export_refuses_them(env: Env) -> None:
    env.ring.policy.write_text(
        "rules:\n"
        "  - {name: secrets-hidden, effect: deny, subject: 'principal:vic', scope: 'secret.*',"
        " access: read}\n",
        encoding="utf-8",
    )
    await env.ok(ADMIN, "set", {"service": "secret.a", "key": "pw", "value": "x"})
    await env.ok(ADMIN, "set", {"service": "line1", "key": "k", "value": 1})
    scopes = await env.ok(VIC, "list-scopes", {})
    assert scopes["scopes"] == ["line1"] and scopes["count"] == 1
    assert "secret.a" in (await env.ok(ADMIN, "list-scopes", {}))["scopes"]
    keys = await env.call(VIC, "list-keys", {"service": "secret.a"})
    assert keys["code"] == "unauthorized" and "rule 'secrets-hidden'" in keys["error"]
    events = (await env.ok(VIC, "watch", {"revision": 0}))["events"]
    assert events and all(e["scope"] == "line1" for e in events)
    export = await env.call(VIC, "export", {})
    assert export["code"] == "unauthorized"
    with serving(ADMIN):
        parts = [d async for d in env.service.dispatch_parts("export", [b'{"stream": true}'])]
    assert parts[-1]["success"] is True and "secret.a" in parts[0]["data"]["scopes"]
    with serving(VIC):
        parts = [d async for d in env.service.dispatch_parts("export", [b'{"stream": true}'])]
    assert parts[-1]["code"] == "unauthorized"


async def test_revocation_counts_from_the_next_request(env: Env) -> None:
    body = {"service": "line1", "key": "k", "value": 1}
    await env.ok(ALICE, "set", body)
    with Registry(env.ring) as reg:
        reg.revoke("alice")
    denied = await env.call(ALICE, "set", body)
    assert denied["code"] == "unauthorized" and "rule 'not-active'" in denied["error"]


async def test_revocation_counts_for_a_request_begun_in_the_same_loop_iteration(
    env: Env,
) -> None:
    """The authority is refreshed once per event-loop iteration, yet a request that starts
    after a revocation (its handler runs at the earliest in the next iteration, as a message
    read after the change would) is decided on the new view."""
    first = asyncio.create_task(
        env.call(ALICE, "set", {"service": "line1", "key": "a", "value": 1})
    )
    await asyncio.sleep(0)  # the first request refreshed and was authorized; now in the store
    with Registry(env.ring) as reg:
        reg.revoke("alice")
    second = asyncio.create_task(
        env.call(ALICE, "set", {"service": "line1", "key": "b", "value": 2})
    )
    assert (await first)["success"] is True
    denied = await second
    assert denied["code"] == "unauthorized" and "rule 'not-active'" in denied["error"]


async def test_anonymous_refused_when_secure(env: Env) -> None:
    denied = await env.call(ANON, "get", {"service": "line1", "key": "k"})
    assert denied["code"] == "unauthorized"
    assert "rule 'anonymous'" in denied["error"] and "no principal" in denied["error"]


async def test_anonymous_served_when_security_off(insecure: Env) -> None:
    await insecure.ok(ANON, "set", {"service": "plantd.x", "key": "k", "value": 1})
    rows = insecure.rows(key="k")
    assert rows[-1]["principal"] == "anonymous" and rows[-1]["outcome"] == "ok"
    # a principal the broker did authenticate is still held to the policy
    denied = await insecure.call(VIC, "set", {"service": "line1", "key": "k", "value": 1})
    assert denied["code"] == "unauthorized"


async def test_every_write_and_denial_is_audited(env: Env) -> None:
    await env.ok(ALICE, "set", {"service": "line1", "key": "speed", "value": 5, "request_id": "r1"})
    await env.ok(ALICE, "set", {"service": "line1", "key": "speed", "value": 7})
    await env.call(VIC, "set", {"service": "line1", "key": "speed", "value": 9})
    await env.ok(
        ALICE, "txn", {"ops": [{"op": "set", "scope": "line1", "key": "speed", "value": 8}]}
    )
    await env.ok(ALICE, "delete", {"service": "line1", "key": "speed"})
    await env.ok(ALICE, "create-scope", {"service": "line2"})
    await env.ok(ALICE, "delete-scope", {"service": "line2"})
    big = "x" * 10_000
    await env.ok(ALICE, "set", {"service": "line1", "key": "blob", "value": big})
    await env.ok(ADMIN, "backup", {"path": str(env.ring.root.parent / "b.db")})
    rows = env.rows()
    by = [
        (r["principal"], r["operation"], r["scope"], r["key"], r["old"], r["new"], r["outcome"])
        for r in rows
    ]
    assert by[:6] == [
        ("alice", "set", "line1", "speed", None, 5, "ok"),
        ("alice", "set", "line1", "speed", 5, 7, "ok"),
        ("vic", "set", "line1", "speed", None, None, "denied:default-deny"),
        ("alice", "txn", "line1", "speed", 7, 8, "ok"),
        ("alice", "delete", "line1", "speed", 8, None, "ok"),
        (
            "alice",
            "create-scope",
            "line2",
            None,
            None,
            {"created": True, "status": "created"},
            "ok",
        ),
    ]
    assert rows[0]["request_id"] == "r1" and rows[0]["peer"] == ALICE.peer
    assert rows[0]["revision"] == 1 and rows[1]["revision"] == 2
    assert rows[6]["operation"] == "delete-scope"
    blob = rows[7]
    assert blob["key"] == "blob" and set(blob["new"]) == {"sha256", "bytes"}
    assert rows[8]["operation"] == "backup" and rows[8]["principal"] == "admin"
    await env.audit._catch_up_sidecar(force=True)  # as the upkeep does within 0.25 s
    assert env.verified()
    # each batch went out on the event bus with its rows
    sent = [
        row
        for topic, doc in env.published
        if topic == "audit.org.plantd.State"
        for row in doc["rows"]
    ]
    assert [r["seq"] for r in sent] == [r["seq"] for r in rows]
    assert any(topic == HEAD_TOPIC for topic, _ in env.published)


async def test_concurrent_writes_share_audit_batches(env: Env) -> None:
    import asyncio

    n = 200
    await asyncio.gather(
        *(env.ok(ALICE, "set", {"service": "load", "key": f"k{i}", "value": i}) for i in range(n))
    )
    assert len(env.rows(scope="load")) == n
    assert env.audit.batches < n  # rows shared transactions
    await env.audit._catch_up_sidecar(force=True)
    assert env.verified()
