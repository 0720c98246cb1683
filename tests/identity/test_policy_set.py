"""``policy-set`` and the watch for hand edits in the service itself, on a real keyring and
audit file (the caller set as the Worker SDK sets it); the daemon behind a broker:
test_policy_service.py."""

from __future__ import annotations

import asyncio

import pytest

from plantd.identity import policyfile
from plantd.identity.audit import AuditLog
from plantd.identity.auditwriter import AuditWriter
from plantd.identity.authority import Authority
from plantd.identity.guard import Guard
from plantd.identity.service import SERVICE, IdentityService
from tests.identity.test_service import ADMIN, VIC, call, svc  # noqa: F401 (a fixture)

TEXT = "rules:\n  - {name: vic-writes, effect: allow, subject: 'principal:vic', access: write}\n"


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({}, "text"),
        ({"text": 7}, "text"),
        ({"text": TEXT, "prev_digest": "abc"}, "prev_digest"),
        ({"text": TEXT, "request_id": 5}, "request_id"),
        ({"text": "rules: [{name: x}]"}, "text"),
    ],
)
async def test_bad_requests_name_the_field(
    svc: IdentityService,  # noqa: F811
    doc: dict[str, object],
    field: str,
) -> None:
    got = await call(svc, ADMIN, "policy-set", doc)
    assert got["code"] == "invalid_argument" and got["field"] == field, got
    assert not svc.keyring.policy.exists()


async def test_set_is_admin_only_checked_and_audited(svc: IdentityService) -> None:  # noqa: F811
    refused = await call(svc, VIC, "policy-set", {"text": TEXT})
    assert refused["code"] == "unauthorized" and refused["rule"] == "default-deny"
    bad = await call(svc, ADMIN, "policy-set", {"text": "rules:\n  - {name: x}\n"})
    assert bad["code"] == "invalid_argument" and "policy.yaml:2: rules[0].effect" in bad["error"]
    done = (await call(svc, ADMIN, "policy-set", {"text": TEXT, "request_id": "r-1"}))["data"]
    assert done["changed"] and done["added"] == ["vic-writes"] and done["rules"] == ["vic-writes"]
    decided = await call(
        svc, VIC, "policy-check", {"service": "org.plantd.State", "operation": "set"}
    )
    assert decided["data"]["rule"] == "vic-writes"  # in force at once
    stale = await call(
        svc, ADMIN, "policy-set", {"text": "", "prev_digest": policyfile.EMPTY_DIGEST}
    )
    assert stale["code"] == "conflict" and "changed meanwhile" in stale["error"]
    with AuditLog(svc.keyring.audit) as trail:
        rows = trail.query(scope=policyfile.POLICY_SCOPE).rows
        denied = trail.query(principal="vic").rows
        assert trail.verify().ok
    assert [(r["principal"], r["peer"], r["request_id"]) for r in rows] == [
        ("admin", ADMIN.peer, "r-1")
    ]
    assert [(r["operation"], r["outcome"]) for r in denied] == [
        ("policy-set", "denied:default-deny")
    ]


async def test_a_change_made_while_the_daemon_was_down_is_recorded_at_start(
    svc: IdentityService,  # noqa: F811
) -> None:
    await call(svc, ADMIN, "policy-set", {"text": TEXT})
    await svc.watch_policy()
    svc.keyring.policy.write_text("")  # edited while no identity daemon ran
    ring = svc.keyring
    with Authority(ring) as authority:
        audit = await AuditWriter.open(ring.audit, service=SERVICE)
        try:
            fresh = IdentityService(ring, Guard(authority, service=SERVICE, secure=True), audit)
            await fresh.watch_policy()
            await fresh.watch_policy()  # once only
        finally:
            await audit.close()
    with AuditLog(ring.audit) as trail:
        rows = trail.query(scope=policyfile.POLICY_SCOPE).rows
    assert [(r["principal"], r["operation"]) for r in rows] == [
        ("admin", "policy-set"),
        ("local:file", "policy-changed-on-disk"),
    ]
    assert rows[1]["old"] == {"digest": policyfile.digest(TEXT)}
    assert rows[1]["new"] == {"digest": policyfile.EMPTY_DIGEST, "rules": []}


async def test_two_sets_from_the_same_show_one_wins(svc: IdentityService) -> None:  # noqa: F811
    """Two admins edited the same text: the second set is refused, not lost unseen."""
    seen = (await call(svc, ADMIN, "policy-get"))["data"]["digest"]
    mine = {"text": TEXT, "prev_digest": seen}
    theirs = {"text": TEXT.replace("vic-writes", "vic-writes-too"), "prev_digest": seen}
    replies = await asyncio.gather(
        call(svc, ADMIN, "policy-set", mine), call(svc, ADMIN, "policy-set", theirs)
    )
    assert sorted(r.get("code", "ok") for r in replies) == ["conflict", "ok"]
    winner = next(r for r in replies if r.get("success"))["data"]["digest"]
    assert policyfile.digest(svc.keyring.policy.read_text()) == winner


async def test_a_broken_hand_edit_is_recorded_and_the_last_good_policy_stays(
    svc: IdentityService,  # noqa: F811
) -> None:
    await call(svc, ADMIN, "policy-set", {"text": TEXT})
    svc.keyring.policy.write_text("rules:\n  - {name: x, effect: maybe}\n")
    got = (await call(svc, ADMIN, "policy-get"))["data"]  # looks at the file first
    assert got["rules"] == ["vic-writes"] and "policy.yaml:2" in got["error"]
    with AuditLog(svc.keyring.audit) as trail:
        row = trail.query(scope=policyfile.POLICY_SCOPE).rows[-1]
    assert row["operation"] == "policy-changed-on-disk"
    assert (
        row["new"]["digest"] == got["digest"] and "rules[0].subject: missing" in row["new"]["error"]
    )
