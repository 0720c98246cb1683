"""``plant policy`` through ``org.plantd.Identity`` on a real stack (a broker process and the
identity daemon, security on): ``policy-set`` is admin-only, checked before it is installed,
guarded by the digest of the text it replaces, takes effect on the next message of a
connection already open, and every policy change (also a hand edit of the file) is audited."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from plantd.client import SyncClient
from plantd.client.errors import NotAuthorized
from plantd.identity import policyfile
from plantd.identity.principals import Registry
from plantd.security.keys import Keyring
from plantd.security.settings import client_security
from tests.identity.test_daemon import identity, json_ok  # noqa: F401 (a fixture)
from tests.support.broker import BrokerProcess, daemon_env
from tests.support.polling import wait_until
from tests.support.ports import free_port
from tests.support.processes import run_plant
from tests.support.state import StateProcess, state_settings
from tests.support.state import request as state_request
from tests.test_cli import assert_one_line_error

pytestmark = pytest.mark.timeout(120)

SERVICE = "org.plantd.Identity"
DENY_ALICE_LIST = """\
rules:
  - name: alice-no-list
    effect: deny
    subject: principal:alice
    service: org.plantd.Identity
    operation: list
    access: read
"""
#: a scope rule: only the state service (which knows the scope) can apply it
DENY_ALICE_RECIPES = """\
  - name: alice-no-recipes
    effect: deny
    subject: principal:alice
    service: org.plantd.State
    scope: "recipes.*"
    access: write
"""
BAD_ACCESS = """\
rules:
  - name: typo
    effect: deny
    subject: role:operator
    access: rw
"""
LOCK_OUT = """\
rules:
  - {name: policy-frozen, effect: deny, subject: "role:admin", service: org.plantd.Identity,
     operation: policy-set, access: admin}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def policy_rows(env: dict[str, str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json_ok(env, "audit", "list", "--scope", "policy")
    return rows


def test_an_admins_policy_refuses_an_open_connection_on_its_next_request(
    identity: dict[str, str],  # noqa: F811
    broker: BrokerProcess,
    plantd_home: Path,
    tmp_path: Path,
) -> None:
    """The broker (service and operation) and the state service (scope) both apply a policy
    set through the service from the next message of a connection already open."""
    ring = Keyring.at_home(plantd_home)
    state = StateProcess(state_settings(daemon_env(broker, "state")), plantd_home)
    try:
        state.wait_ready()
        alice = client_security(str(ring.secret_path("alice")), {"PLANTD_HOME": str(plantd_home)})
        before = json_ok(identity, "policy", "show")
        assert before["digest"] == policyfile.EMPTY_DIGEST and before["text"] is None
        assert before["answered_by"] == SERVICE
        text = DENY_ALICE_LIST + DENY_ALICE_RECIPES
        new = write(tmp_path, "policy.yaml", text)
        diff = json_ok(identity, "policy", "diff", str(new))
        assert diff["changed"] and "+    subject: principal:alice\n" in diff["diff"]
        recipe = {"service": "recipes.a", "key": "k", "value": 1}
        with SyncClient(identity["PLANTD_CLIENT_ENDPOINT"], timeout=5.0, security=alice) as c:
            assert c.call(SERVICE, "list")["data"]["count"] >= 2  # an operator may read
            assert state_request(c, "state-set", recipe)["success"] is True
            done = json_ok(identity, "policy", "set", str(new))
            assert done["changed"] and done["added"] == ["alice-no-list", "alice-no-recipes"]
            assert done["previous"] == policyfile.EMPTY_DIGEST
            assert done["digest"] == policyfile.digest(text)
            with pytest.raises(NotAuthorized, match="alice-no-list"):
                c.call(SERVICE, "list")  # the same connection, the very next request
            refused = state_request(c, "state-set", {**recipe, "value": 2})
            assert refused["code"] == "unauthorized" and "alice-no-recipes" in refused["error"]
            line = state_request(c, "state-set", {**recipe, "service": "line1"})
            assert line["success"] is True  # the rest stays allowed
            assert c.call(SERVICE, "whoami")["data"]["principal"] == "alice"
    finally:
        state.stop()
    assert ring.policy.read_text() == text
    check = run_plant(
        identity, "policy", "check", SERVICE, "list", "--principal", "alice", "-o", "json"
    )
    assert check.returncode == 1, check.stderr
    assert json.loads(check.stdout)["rule"] == "alice-no-list"
    assert_one_line_error(check.stderr, "alice-no-list")
    viewer = json_ok(identity, "policy", "check", SERVICE, "list", "--role", "viewer")
    assert viewer["allowed"] and viewer["rule"] == "builtin:viewer-read"
    (row,) = policy_rows(identity)
    assert (row["principal"], row["operation"], row["peer"]) == ("admin", "policy-set", "127.0.0.1")
    assert row["old"] == {"digest": policyfile.EMPTY_DIGEST}
    assert row["new"] == {
        "digest": done["digest"],
        "added": ["alice-no-list", "alice-no-recipes"],
        "removed": [],
        "modified": [],
    }
    assert row["request_id"]


def test_who_may_set_what_and_a_bad_policy_is_never_installed(
    identity: dict[str, str],  # noqa: F811
    plantd_home: Path,
    tmp_path: Path,
) -> None:
    ring = Keyring.at_home(plantd_home)
    with Registry(ring) as reg:
        reg.add("vic", ["viewer"])
    good = write(tmp_path, "good.yaml", DENY_ALICE_LIST)
    as_vic = {**identity, "PLANTD_CLIENT_IDENTITY": str(ring.secret_path("vic"))}
    assert json_ok(as_vic, "policy", "show")["digest"] == policyfile.EMPTY_DIGEST  # a read
    refused = run_plant(as_vic, "policy", "set", str(good))
    assert refused.returncode == 5, refused.stderr
    assert_one_line_error(refused.stderr, "vic", "rule")
    assert not ring.policy.exists()
    installed = json_ok(identity, "policy", "set", str(good))["digest"]
    # a policy that does not parse: refused naming the line and field; the old one stays
    bad = run_plant(identity, "policy", "set", str(write(tmp_path, "bad.yaml", BAD_ACCESS)))
    assert bad.returncode == 2, bad.stderr
    assert_one_line_error(bad.stderr, "policy.yaml:5", "rules[0].access", "'rw'")
    # a policy that would shut every admin out of changing it back
    locked = run_plant(identity, "policy", "set", str(write(tmp_path, "lock.yaml", LOCK_OUT)))
    assert locked.returncode == 2, locked.stderr
    assert_one_line_error(locked.stderr, "policy-frozen", "nobody could change it back")
    shown = json_ok(identity, "policy", "show")
    assert shown["digest"] == installed and shown["rules"] == ["alice-no-list"]
    assert shown["error"] is None
    raw = run_plant(identity, "policy", "show", "-o", "raw")
    assert raw.returncode == 0 and raw.stdout == DENY_ALICE_LIST  # edit it, set it back
    table = run_plant(identity, "policy", "show", "-o", "table").stdout
    assert table.startswith("# file: ") and f"# digest: {installed}\n" in table
    assert ring.policy.read_text() == DENY_ALICE_LIST
    # optimistic concurrency: a set based on an older show is refused, --force overrides
    other = write(
        tmp_path, "other.yaml", DENY_ALICE_LIST.replace("operation: list", "operation: show")
    )
    stale = run_plant(
        identity, "policy", "set", str(other), "--prev-digest", policyfile.EMPTY_DIGEST
    )
    assert stale.returncode == 6, stale.stderr
    assert_one_line_error(stale.stderr, "changed meanwhile")
    assert ring.policy.read_text() == DENY_ALICE_LIST
    forced = json_ok(identity, "policy", "set", str(other), "--force")
    assert forced["changed"] is True and forced["modified"] == ["alice-no-list"]
    assert json_ok(identity, "policy", "set", str(other))["changed"] is False  # idempotent
    ops = [(r["principal"], r["operation"]) for r in policy_rows(identity)]
    assert ops == [("admin", "policy-set"), ("admin", "policy-set")]

    def vic_refused() -> list[str]:  # the broker's denial, audited by its writer thread
        rows = json_ok(identity, "audit", "list", "--principal", "vic")
        return [r["outcome"] for r in rows if r["operation"] == "policy-set"]

    assert wait_until(vic_refused, timeout=10.0, interval=0.3)[0].startswith("denied:")


def test_hand_edits_and_local_sets_are_audited_once(
    identity: dict[str, str],  # noqa: F811
    plantd_home: Path,
    tmp_path: Path,
) -> None:
    ring = Keyring.at_home(plantd_home)
    json_ok(identity, "policy", "set", str(write(tmp_path, "p.yaml", DENY_ALICE_LIST)))
    first = policyfile.digest(DENY_ALICE_LIST)
    edited = DENY_ALICE_LIST + "  - {name: by-hand, effect: allow, subject: '*', access: read}\n"
    ring.policy.write_text(edited)  # an editor on the broker's host

    def on_disk() -> list[dict[str, Any]]:
        return [r for r in policy_rows(identity) if r["operation"] == "policy-changed-on-disk"]

    wait_until(lambda: len(on_disk()) == 1, timeout=10.0, interval=0.3)
    (row,) = on_disk()
    assert row["principal"] == policyfile.FILE_PRINCIPAL
    assert row["old"] == {"digest": first}
    assert row["new"] == {
        "digest": policyfile.digest(edited),
        "added": ["by-hand"],
        "removed": [],
        "modified": [],
    }
    # the service unreachable on the broker's host: the local file is set, audited by the
    # OS user, and the identity daemon does not count it again as a hand edit
    gone = {**identity, "PLANTD_CLIENT_ENDPOINT": f"tcp://127.0.0.1:{free_port()}"}
    local = json_ok(gone, "policy", "set", str(write(tmp_path, "l.yaml", DENY_ALICE_LIST)))
    assert local["answered_by"] == "local keyring" and local["removed"] == ["by-hand"]
    decided = run_plant(gone, "policy", "check", SERVICE, "list", "-p", "alice", "-o", "json")
    assert decided.returncode == 1, decided.stderr
    assert json.loads(decided.stdout) == {
        "principal": "alice",
        "roles": ["operator"],
        "allowed": False,
        "rule": "alice-no-list",
        "answered_by": "local keyring",
    }
    assert json_ok(identity, "policy", "show")["digest"] == first  # the service looked
    ops = [(r["principal"].split(":")[0], r["operation"]) for r in policy_rows(identity)]
    assert ops == [
        ("admin", "policy-set"),
        ("local", "policy-changed-on-disk"),
        ("local", "policy-set"),
    ]
    verify = json_ok(identity, "audit", "verify")
    assert verify["ok"] is True
