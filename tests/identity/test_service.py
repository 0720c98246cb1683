"""The operations of org.plantd.Identity on a real keyring and audit file; the caller set as
the Worker SDK sets it. The daemon as a process: tests/identity/test_daemon.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from plantd.identity.audit import AuditLog
from plantd.identity.auditwriter import AuditWriter
from plantd.identity.authority import Authority
from plantd.identity.guard import Guard
from plantd.identity.principals import DAEMON_PRINCIPALS, Registry, init_keyring
from plantd.identity.service import SERVICE, IdentityService
from plantd.security.caller import Caller, serving
from plantd.security.keys import Keyring, generate_keypair

ADMIN = Caller("admin", ("admin",), "tcp://10.1.1.1:4000")
VIC = Caller("vic", ("viewer",))


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[IdentityService]:
    ring = Keyring.at_home(tmp_path)
    init_keyring(ring)
    with Registry(ring) as reg:
        reg.add("vic", ["viewer"])
    authority = Authority(ring)
    audit = await AuditWriter.open(ring.audit, service=SERVICE)
    try:
        yield IdentityService(ring, Guard(authority, service=SERVICE, secure=True), audit)
    finally:
        await audit.close()
        authority.close()


def key_of() -> str:
    """A fresh public key, as ``plant identity add`` sends it (the secret stays with it)."""
    return generate_keypair().public


async def call(svc: IdentityService, caller: Caller, op: str, doc: Any = None) -> dict[str, Any]:
    with serving(caller):
        if op == "audit-list":
            return [d async for d in svc.audit_list(doc or {})][-1]
        result: dict[str, Any] = await svc.operations()[op](doc or {})
        return result


async def test_whoami_is_the_caller_the_broker_passed(svc: IdentityService) -> None:
    me = await call(svc, ADMIN, "whoami")
    assert me["data"] == {
        **me["data"],
        "principal": "admin",
        "roles": ["admin"],
        "peer": "tcp://10.1.1.1:4000",
        "state": "active",
        "kind": "person",
    }
    anon = await call(svc, Caller(None), "whoami")
    assert anon["code"] == "unauthorized" and "rule 'anonymous'" in anon["error"]


async def test_viewer_reads_principals_but_cannot_change_them(svc: IdentityService) -> None:
    listed = await call(svc, VIC, "list")
    names = [p["name"] for p in listed["data"]["principals"]]
    assert names == sorted({"admin", "vic", *DAEMON_PRINCIPALS})  # init makes the daemons
    denied = await call(svc, VIC, "add", {"name": "eve", "roles": ["admin"]})
    assert denied["code"] == "unauthorized" and "vic (viewer) may not admin" in denied["error"]
    assert (await call(svc, VIC, "audit-verify"))["code"] == "unauthorized"
    rows = (await call(svc, ADMIN, "audit-list", {"principal": "vic"}))["data"]["rows"]
    assert [(r["operation"], r["outcome"]) for r in rows] == [
        ("add", "denied:default-deny"),
        ("audit-verify", "denied:default-deny"),
    ]


async def test_admin_key_workflow_is_audited_and_takes_effect(svc: IdentityService) -> None:
    # the service never makes a secret (issue 13: remote admins): it takes the public key
    no_key = await call(svc, ADMIN, "add", {"name": "alice", "roles": ["operator"]})
    assert no_key["code"] == "invalid_argument" and no_key["field"] == "public_key"
    alice_key = generate_keypair().public
    added = await call(
        svc, ADMIN, "add", {"name": "alice", "roles": ["operator"], "public_key": alice_key}
    )
    assert added["success"] and added["data"]["public_key"] == alice_key
    assert "secret_file" not in added["data"]
    assert not svc.keyring.secret_path("alice").exists()
    key = generate_keypair().public
    pending = await call(svc, ADMIN, "add", {"name": "pump", "kind": "module", "pending": True,
                                            "public_key": key})  # fmt: skip
    assert pending["data"]["state"] == "pending"
    assert [p["name"] for p in (await call(svc, VIC, "pending"))["data"]["principals"]] == ["pump"]
    accepted = await call(svc, ADMIN, "accept", {"name": "pump"})
    assert accepted["data"]["roles"] == ["service:pump"]
    assert (await call(svc, ADMIN, "rotate", {"name": "alice"}))["field"] == "public_key"
    new_key = generate_keypair().public
    rotated = await call(svc, ADMIN, "rotate", {"name": "alice", "public_key": new_key})
    assert rotated["data"]["public_key"] == new_key != added["data"]["public_key"]
    await call(svc, ADMIN, "revoke", {"name": "vic"})
    # the revocation counts from vic's next request
    assert (await call(svc, VIC, "list"))["code"] == "unauthorized"
    again = await call(
        svc, ADMIN, "add", {"name": "alice", "roles": ["viewer"], "public_key": key_of()}
    )
    assert again["code"] == "conflict" and "already exists" in again["error"]
    bad = await call(svc, ADMIN, "add", {"name": "Bad Name"})
    assert bad["code"] == "invalid_argument" and bad["field"] == "name"
    missing = await call(svc, ADMIN, "show", {})
    assert missing["code"] == "invalid_argument" and missing["field"] == "name"
    page = (await call(svc, ADMIN, "audit-list", {"scope": "identity"}))["data"]
    ops = [(r["principal"], r["operation"], r["key"]) for r in page["rows"]]
    assert ops[-5:] == [
        ("admin", "add", "alice"),
        ("admin", "add", "pump"),
        ("admin", "accept", "pump"),
        ("admin", "rotate", "alice"),
        ("admin", "revoke", "vic"),
    ]
    assert page["rows"][-1]["peer"] == "tcp://10.1.1.1:4000"
    verified = await call(svc, ADMIN, "audit-verify")
    assert verified["data"]["ok"] is True and verified["data"]["head"]["seq"] >= 5


async def test_audit_list_pages_and_streams(svc: IdentityService) -> None:
    for i in range(5):
        await call(
            svc, ADMIN, "add", {"name": f"p{i}", "roles": ["viewer"], "public_key": key_of()}
        )
    first = (await call(svc, ADMIN, "audit-list", {"limit": 2}))["data"]
    assert len(first["rows"]) == 2 and first["more"] is True and first["next"] == 2
    second = (await call(svc, ADMIN, "audit-list", {"limit": 2, "after": first["next"]}))["data"]
    assert [r["seq"] for r in second["rows"]] == [3, 4]
    too_big = await call(svc, ADMIN, "audit-list", {"limit": 5000})
    assert too_big["code"] == "invalid_argument" and too_big["field"] == "limit"
    bad_cursor = await call(svc, ADMIN, "audit-list", {"after": "x"})
    assert bad_cursor["field"] == "after"
    with serving(ADMIN):
        parts = [d async for d in svc.audit_list({"limit": 2, "stream": True})]
    assert [len(p["data"]["rows"]) for p in parts] == [2, 2, 1]  # the 5 adds
    assert parts[-1]["data"]["more"] is False


async def test_policy_get_check_reload(svc: IdentityService) -> None:
    got = (await call(svc, VIC, "policy-get"))["data"]
    assert got["text"] is None and got["rules"] == []
    check = {"principal": "vic", "service": "org.plantd.State", "operation": "set",
             "scope": "line1", "key": "k"}  # fmt: skip
    decided = (await call(svc, VIC, "policy-check", check))["data"]
    assert decided == {"principal": "vic", "roles": ["viewer"], "allowed": False,
                       "rule": "default-deny"}  # fmt: skip
    text = (
        "rules:\n  - {name: vic-writes, effect: allow, subject: 'principal:vic', access: write}\n"
    )
    trial = (await call(svc, VIC, "policy-check", {**check, "text": text}))["data"]
    assert trial["allowed"] is True and trial["rule"] == "vic-writes"
    broken = await call(svc, VIC, "policy-check", {**check, "text": "rules: [{name: x}]"})
    assert broken["code"] == "invalid_argument" and "text:1" in broken["error"]
    svc.keyring.policy.write_text(text, encoding="utf-8")
    assert (await call(svc, VIC, "policy-reload"))["code"] == "unauthorized"
    reloaded = (await call(svc, ADMIN, "policy-reload"))["data"]
    assert reloaded == {"reloaded": True, "rules": 1, "error": None}
    assert (await call(svc, VIC, "policy-check", check))["data"]["allowed"] is True


async def test_audit_rows_land_in_the_shared_file(svc: IdentityService) -> None:
    await call(svc, ADMIN, "add", {"name": "bob", "roles": ["viewer"], "public_key": key_of()})
    with AuditLog(svc.keyring.audit) as log:
        rows = log.query(key="bob").rows
        assert log.verify().ok
    assert rows[0]["service"] == SERVICE and rows[0]["new"]["roles"] == ["viewer"]
