"""The identity daemon as a process behind a real broker, asked by ``plant``.

The broker of this branch passes no principal yet, so the daemon runs with security off
here and the caller it sees is anonymous; the policy side is covered in test_service.py.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from plantd.identity.principals import Registry
from plantd.security.keys import Keyring
from tests.support.broker import BrokerProcess, daemon_env, wait_service
from tests.support.processes import DAEMON_CMD, kill_pid, run_plant, wait_healthy

pytestmark = pytest.mark.timeout(120)

SERVICE = "org.plantd.Identity"


@pytest.fixture
def identity(broker: BrokerProcess, plantd_home: Path) -> Iterator[dict[str, str]]:
    ring = Keyring.at_home(plantd_home)  # the session keyring, copied (security on)
    with Registry(ring) as reg:
        reg.add("alice", ["operator"])
    env = daemon_env(broker, "identity", audit_head_interval="0.2")
    out = plantd_home / "identity.out"
    with out.open("wb") as fh:
        proc = subprocess.Popen(
            [*DAEMON_CMD, "identity"], env=env, stdout=fh, stderr=subprocess.STDOUT
        )
    try:
        wait_healthy(proc, plantd_home, "identity", out, 20.0)
        wait_service(broker.endpoint, SERVICE)
        yield env
    finally:
        kill_pid(proc.pid)
        proc.wait(timeout=10)


def test_whoami_and_principals_through_the_service(identity: dict[str, str]) -> None:
    out = run_plant(identity, "call", SERVICE, "whoami")
    assert out.returncode == 0, out.stderr
    me = json.loads(out.stdout)["data"]
    assert me["principal"] == "admin" and me["secure"] is True  # as the broker saw the CLI
    assert "admin" in me["roles"] and me["peer"] == "127.0.0.1"
    who = run_plant(identity, "whoami", "-o", "json")
    assert who.returncode == 0, who.stderr
    doc = json.loads(who.stdout)
    assert doc["answered_by"] == SERVICE and doc["principal"] == "admin"
    assert doc["public_key"]  # the local key the CLI would use is still shown
    local = json.loads(run_plant(identity, "whoami", "--local", "-o", "json").stdout)
    assert local["answered_by"] == "local keyring" and local["principal"] == "admin"
    listed = run_plant(identity, "call", SERVICE, "list")
    names = [p["name"] for p in json.loads(listed.stdout)["data"]["principals"]]
    assert {"admin", "alice", "state", "identity"} <= set(names) and names == sorted(names)


def test_changes_are_audited_and_listed_through_the_service(
    identity: dict[str, str], plantd_home: Path
) -> None:
    out = run_plant(identity, "call", SERVICE, "revoke", '{"name": "alice"}')
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["data"]["state"] == "revoked"
    rows = run_plant(identity, "audit", "list", "--key", "alice", "-o", "json")
    assert rows.returncode == 0, rows.stderr
    got = json.loads(rows.stdout)
    assert [(r["principal"], r["operation"]) for r in got] == [("admin", "revoke")]
    bad = run_plant(identity, "call", SERVICE, "show", '{"name": 7}')
    assert bad.returncode == 2 and "field 'name'" in bad.stderr
    verify = run_plant(identity, "audit", "verify", "-o", "json")
    assert verify.returncode == 0 and json.loads(verify.stdout)["ok"] is True
    health = run_plant(identity, "call", SERVICE, "health")
    assert json.loads(health.stdout)["audit"]["seq"] >= 1
