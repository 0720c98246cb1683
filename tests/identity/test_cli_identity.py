"""``plant identity``, ``plant whoami`` and ``plant audit`` as users run them: a subprocess
per command against an isolated PLANTD_HOME, one test per exit code used."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.processes import PlantRunner, clean_env
from tests.test_cli import assert_one_line_error

pytestmark = [pytest.mark.timeout(120), pytest.mark.no_keyring]


@pytest.fixture
def plantd_env(plantd_home: Path) -> dict[str, str]:
    """No broker at the client endpoint (a free port, never whatever runs on 9797): the
    commands that ask org.plantd.Identity first fall back to the local keyring."""
    return {
        **clean_env(plantd_home, keyring=False),
        "PLANTD_CLIENT_ENDPOINT": f"tcp://127.0.0.1:{free_port()}",
    }


def ok_json(plant: PlantRunner, *args: str) -> object:
    out = plant(*args, "-o", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture
def initialised(plant: PlantRunner) -> PlantRunner:
    doc = ok_json(plant, "identity", "init")
    assert isinstance(doc, dict) and doc["name"] == "admin" and doc["roles"] == ["admin"]
    return plant


def test_key_workflow_and_audit(initialised: PlantRunner, plantd_home: Path) -> None:
    plant = initialised
    added = ok_json(plant, "identity", "add", "alice", "--role", "operator")
    assert isinstance(added, dict)
    secret = Path(added["secret_file"])
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    names = ok_json(plant, "identity", "list")
    # init also made a principal per built-in daemon (issue 13: kind daemon, service role)
    people = [p["name"] for p in names if p["kind"] != "daemon"]  # type: ignore[union-attr]
    assert people == ["admin", "alice"]
    daemons = {p["name"]: p["roles"] for p in names if p["kind"] == "daemon"}  # type: ignore[union-attr]
    assert daemons["state"] == ["service:org.plantd.State"]
    me = ok_json(plant, "whoami")
    assert me == {**me, "principal": "admin", "source": "default", "roles": ["admin"]}  # type: ignore[dict-item]
    alice = ok_json(plant, "whoami", "--identity", str(secret))
    assert alice["principal"] == "alice" and alice["source"] == "--identity"  # type: ignore[index]
    env = {**plant.env, "PLANTD_CLIENT_IDENTITY": str(secret)}
    out = plant("whoami", "-o", "json", env=env)
    assert json.loads(out.stdout)["source"] == "PLANTD_CLIENT_IDENTITY"
    rotated = ok_json(plant, "identity", "rotate", "alice")
    assert rotated["public_key"] != added["public_key"]  # type: ignore[index]
    exported = ok_json(plant, "identity", "export", "alice")
    assert exported["public_key"] == rotated["public_key"]  # type: ignore[index]
    text = plant("identity", "export", "broker", "-o", "table")
    assert text.returncode == 0 and "public-key" in text.stdout and "secret-key" not in text.stdout
    assert ok_json(plant, "identity", "revoke", "alice")["state"] == "revoked"  # type: ignore[index]
    pub = ok_json(plant, "identity", "export", "admin")["public_key"]  # type: ignore[index]
    other = plant(
        "identity",
        "add",
        "plc",
        "--kind",
        "module",
        "--pending",
        "--public-key",
        "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7",
    )
    assert other.returncode == 0, other.stderr
    assert [p["name"] for p in ok_json(plant, "identity", "pending")] == ["plc"]  # type: ignore[union-attr]
    assert ok_json(plant, "identity", "accept", "plc")["roles"] == ["service:plc"]  # type: ignore[index]
    assert pub == me["public_key"]  # type: ignore[index]
    rows = ok_json(plant, "audit", "list", "--key", "alice")
    assert [r["operation"] for r in rows] == ["add", "rotate", "revoke"]  # type: ignore[union-attr]
    assert rows[-1]["old"] == {"state": "active"}  # type: ignore[index]
    assert ok_json(plant, "audit", "verify")["ok"] is True  # type: ignore[index]
    table = plant("identity", "list", "-o", "table")
    assert table.stdout.splitlines()[0].split()[:3] == ["NAME", "KIND", "STATE"]


def test_exit_1_audit_verify_names_the_bad_row(initialised: PlantRunner, plantd_home: Path) -> None:
    plant = initialised
    for name in ("a1", "a2", "a3"):
        assert plant("identity", "add", name, "-r", "viewer").returncode == 0
    db = sqlite3.connect(plantd_home / "identity" / "audit.db")
    db.execute("UPDATE audit SET principal = 'mallory' WHERE seq = 3")
    db.commit()
    db.close()
    out = plant("audit", "verify", "-o", "json")
    assert out.returncode == 1
    assert json.loads(out.stdout)["first_bad_seq"] == 3
    assert_one_line_error(out.stderr, "chain 'keyring'", "seq 3", "hash")
    table = plant("audit", "verify", "-o", "table")  # one line per chain
    assert table.returncode == 1
    rows = [line.split() for line in table.stdout.splitlines()]
    assert rows[0][:3] == ["SOURCE", "OK", "ROWS"], table.stdout
    assert ["keyring", "False", "2", "3"] == rows[1][:4], table.stdout  # 2 good rows, then seq 3


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["identity", "add", "Bad Name", "-r", "viewer"], "name: 'Bad Name'"),
        (["identity", "add", "bob", "-r", "Root!"], "role: 'Root!'"),
        (["identity", "add", "bob", "--kind", "robot"], "kind: 'robot'"),
        (["identity", "add", "bob", "--public-key", "short"], "public_key"),
        (["identity", "add", "bob", "--pending"], "--pending needs --public-key"),
        (["audit", "list", "--since", "yesterday-ish"], "--since"),
    ],
)
def test_exit_2_bad_input_names_the_field(
    initialised: PlantRunner, args: list[str], fragment: str
) -> None:
    out = initialised(*args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert out.stdout == ""
    assert_one_line_error(out.stderr, fragment)


def test_exit_4_not_found(plant: PlantRunner) -> None:
    out = plant("identity", "list")
    assert out.returncode == 4
    assert_one_line_error(out.stderr, "plant identity init")
    assert plant("identity", "init", "-o", "json").returncode == 0
    for args, fragment in (
        (("identity", "show", "nobody"), "'nobody'"),
        (("identity", "revoke", "nobody"), "'nobody'"),
        (("whoami", "--identity", "/nonexistent/key"), "/nonexistent/key"),
    ):
        out = plant(*args)
        assert out.returncode == 4, out.stderr
        assert_one_line_error(out.stderr, fragment)


def test_exit_9_group_readable_secret_is_refused(
    initialised: PlantRunner, plantd_home: Path
) -> None:
    secret = plantd_home / "identity" / "secrets" / "admin.key_secret"
    secret.chmod(0o640)
    out = initialised("whoami")
    assert out.returncode == 9  # KEY_INSECURE (issue 13: its own exit code)
    assert_one_line_error(out.stderr, str(secret), "0640", "chmod 600")


def test_exit_6_conflicts(initialised: PlantRunner) -> None:
    plant = initialised
    for args, fragment in (
        (("identity", "init"), "already initialised"),
        (("identity", "add", "admin", "-r", "viewer"), "already exists"),
        (("identity", "accept", "admin"), "not pending"),
    ):
        out = plant(*args)
        assert out.returncode == 6, out.stderr
        assert_one_line_error(out.stderr, fragment)
