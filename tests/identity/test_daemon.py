"""The identity daemon as a process behind a real broker, asked by ``plant``.

The broker of this branch passes no principal yet, so the daemon runs with security off
here and the caller it sees is anonymous; the policy side is covered in test_service.py.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plantd.identity.principals import Registry
from plantd.security.keys import Keyring, generate_keypair, read_certificate
from tests.support.broker import BrokerProcess, daemon_env, wait_service
from tests.support.ports import free_port
from tests.support.processes import DAEMON_CMD, kill_pid, run_plant, wait_healthy
from tests.test_cli import assert_one_line_error

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


def remote_admin_env(identity: dict[str, str], tmp_path: Path, plantd_home: Path) -> dict[str, str]:
    """An admin "on another host": a home of its own without a registry, holding only the
    admin's secret and the broker's public key (what an admin copies to a workstation)."""
    ring = Keyring.at_home(plantd_home)
    home = tmp_path / "workstation"
    keys = home / "keys"
    keys.mkdir(parents=True)
    secret = keys / "admin.key_secret"
    shutil.copy(ring.secret_path("admin"), secret)
    secret.chmod(0o600)
    shutil.copy(ring.broker_public, keys / "broker.key")
    return {
        **identity,
        "PLANTD_HOME": str(home),
        "PLANTD_CLIENT_IDENTITY": str(secret),
        "PLANTD_CLIENT_BROKER_KEY": str(keys / "broker.key"),
    }


def json_ok(env: dict[str, str], *args: str) -> Any:
    out = run_plant(env, *args, "-o", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_remote_admin_manages_principals_through_the_service(
    identity: dict[str, str], tmp_path: Path, plantd_home: Path
) -> None:
    """Issue 13: ``plant identity`` on another host goes through org.plantd.Identity (policy:
    admin; audited by the daemon with the caller and old -> new); the secret of a key pair
    the CLI makes stays on the caller's host, 0600; a viewer is refused with exit 5."""
    admin = remote_admin_env(identity, tmp_path, plantd_home)
    served = Keyring.at_home(plantd_home)
    here = Keyring.at_home(Path(admin["PLANTD_HOME"]))
    out = run_plant(admin, "identity", "add", "bob", "--role", "viewer", "-o", "json", "-v")
    assert out.returncode == 0, out.stderr
    bob = json.loads(out.stdout)
    assert bob["answered_by"] == SERVICE and "answered by org.plantd.Identity" in out.stderr
    secret = Path(bob["secret_file"])
    assert secret == here.secret_path("bob") and stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert read_certificate(secret).public == bob["public_key"]
    assert not served.secret_path("bob").exists()  # the service never held it
    assert read_certificate(served.public_path("bob")).public == bob["public_key"]
    assert not here.registry.exists()  # nothing written to the workstation's registry
    shown = json_ok(admin, "identity", "show", "bob")
    assert shown["roles"] == ["viewer"] and shown["answered_by"] == SERVICE
    # bob authenticates with the new key, and may read but not administer
    as_bob = {**admin, "PLANTD_CLIENT_IDENTITY": str(secret)}
    assert json_ok(as_bob, "whoami")["principal"] == "bob"
    assert "bob" in [p["name"] for p in json_ok(as_bob, "identity", "list")]
    for args in (("add", "eve", "--role", "admin"), ("revoke", "alice"), ("rotate", "admin")):
        refused = run_plant(as_bob, "identity", *args)
        assert refused.returncode == 5, (args, refused.stderr)
        assert_one_line_error(refused.stderr, "bob", "rule")
    assert json_ok(admin, "identity", "show", "alice")["state"] == "active"
    rotated = json_ok(admin, "identity", "rotate", "bob")
    assert rotated["public_key"] != bob["public_key"]
    assert read_certificate(secret).public == rotated["public_key"]
    assert json_ok(admin, "identity", "revoke", "bob")["state"] == "revoked"
    assert not secret.exists()  # this host's copy of the revoked key is gone
    pending_key = generate_keypair().public
    json_ok(admin, "identity", "add", "pump", "--kind", "module", "--pending",
            "--public-key", pending_key)  # fmt: skip
    assert [p["name"] for p in json_ok(admin, "identity", "pending")] == ["pump"]
    assert json_ok(admin, "identity", "accept", "pump")["roles"] == ["service:pump"]
    rows = json_ok(admin, "audit", "list", "--scope", "identity")
    mine = [(r["principal"], r["operation"], r["key"]) for r in rows if r["principal"] != "local"]
    assert mine[-5:] == [
        ("admin", "add", "bob"),
        ("admin", "rotate", "bob"),
        ("admin", "revoke", "bob"),
        ("admin", "add", "pump"),
        ("admin", "accept", "pump"),
    ]
    by_op = {r["operation"]: r for r in rows if r["key"] == "bob"}
    assert by_op["rotate"]["old"] == {"public_key": bob["public_key"]}
    assert by_op["rotate"]["new"]["public_key"] == rotated["public_key"]
    assert by_op["revoke"]["old"] == {"state": "active"}
    assert by_op["revoke"]["new"]["state"] == "revoked"


def test_without_the_service_only_a_local_keyring_is_changed(
    identity: dict[str, str], tmp_path: Path, plantd_home: Path
) -> None:
    """No org.plantd.Identity at the endpoint: the broker's host falls back to its own files
    (and says so with -v); a workstation without the registry has nothing to fall back to."""
    gone = f"tcp://127.0.0.1:{free_port()}"
    local = {**identity, "PLANTD_CLIENT_ENDPOINT": gone}
    out = run_plant(local, "identity", "show", "alice", "-o", "json", "-v")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["answered_by"] == "local keyring"
    (line,) = out.stderr.splitlines()
    assert line.startswith("plant: answered by the local keyring") and "cannot be reached" in line
    forced = json_ok(identity, "identity", "show", "alice", "--local")
    assert forced["answered_by"] == "local keyring"
    remote = {**remote_admin_env(identity, tmp_path, plantd_home), "PLANTD_CLIENT_ENDPOINT": gone}
    refused = run_plant(remote, "identity", "add", "carol", "--role", "viewer")
    assert refused.returncode == 4, refused.stderr  # no registry here: nothing was changed
    assert not Keyring.at_home(Path(remote["PLANTD_HOME"])).secret_path("carol").exists()
