"""The policy file as a thing that changes (plantd/identity/policyfile.py): digests, rule
changes, the lock-out check, and the replace that refuses a file changed meanwhile."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from plantd.identity import policyfile
from plantd.identity.policy import parse_policy
from plantd.security.errors import Conflict, InvalidArgument

DENY_ALICE = """\
rules:
  - {name: alice-no-list, effect: deny, subject: "principal:alice",
     service: org.plantd.Identity, operation: list, access: read}
"""
SHUT_ADMINS = """\
rules:
  - {name: frozen, effect: deny, subject: "role:admin", service: "org.plantd.*",
     access: admin}
"""


def test_an_absent_file_has_the_empty_digest(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    assert policyfile.read_text(path) is None and policyfile.file_stamp(path) is None
    assert policyfile.digest(None) == policyfile.EMPTY_DIGEST == policyfile.digest("")
    assert policyfile.digest(DENY_ALICE) != policyfile.EMPTY_DIGEST


def test_rule_changes_name_added_removed_and_changed() -> None:
    old = parse_policy(DENY_ALICE)
    new = parse_policy(
        DENY_ALICE.replace("operation: list", "operation: show")
        + "  - {name: extra, effect: allow, subject: '*', access: read}\n"
    )
    assert policyfile.rule_changes(old, new) == {
        "added": ["extra"],
        "removed": [],
        "modified": ["alice-no-list"],
    }
    assert policyfile.rule_changes(new, old)["removed"] == ["extra"]
    assert policyfile.rule_changes(None, new) == {"rules": ["alice-no-list", "extra"]}
    many = parse_policy(
        "rules:\n"
        + "".join(
            f"  - {{name: rule-{'x' * 40}-{i}, effect: allow, subject: '*', access: read}}\n"
            for i in range(200)
        )
    )
    assert policyfile.rule_changes(parse_policy(""), many) == {
        "added": 200,
        "removed": 0,
        "modified": 0,
    }  # counts: the audit value stays readable, not a digest


def test_lockout_needs_one_principal_who_may_still_set_the_policy() -> None:
    assert policyfile.lockout(parse_policy(DENY_ALICE), [("admin", ("admin",))]) is None
    shut = parse_policy(SHUT_ADMINS)
    reason = policyfile.lockout(shut, [("admin", ("admin",)), ("alice", ("operator",))])
    assert reason is not None
    assert "admin (admin) by rule 'frozen'" in reason
    assert "alice (operator) by rule 'default-deny'" in reason
    assert "nobody could change it back" in reason
    assert policyfile.lockout(shut, [("root", ("admin",)), ("svc", ("service:x", "admin"))])
    assert policyfile.lockout(shut, []) is None  # nobody known here: nothing to protect


def test_replace_is_atomic_and_refuses_a_file_changed_meanwhile(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    assert policyfile.replace(path, DENY_ALICE, policyfile.EMPTY_DIGEST) == policyfile.EMPTY_DIGEST
    assert path.read_text() == DENY_ALICE
    assert stat.S_IMODE(path.stat().st_mode) == policyfile.POLICY_MODE
    seen = policyfile.digest(DENY_ALICE)
    path.write_text(SHUT_ADMINS)  # someone else's edit
    with pytest.raises(Conflict, match="changed meanwhile"):
        policyfile.replace(path, "rules: []\n", seen)
    assert path.read_text() == SHUT_ADMINS  # untouched
    assert policyfile.replace(path, "rules: []\n", None) == policyfile.digest(SHUT_ADMINS)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".policy.yaml.lock", "policy.yaml"]


@pytest.mark.parametrize("value", ["abc", "A" * 64, 7, None])
def test_a_digest_must_look_like_one(value: object) -> None:
    with pytest.raises(InvalidArgument) as err:
        policyfile.validate_digest(value)
    assert err.value.field == "prev_digest"
