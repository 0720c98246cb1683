"""The state daemon's authorization and audit as processes: broker + state daemon + ``plant``.

The broker of this branch passes no principal yet (CURVE lands with the broker work), so
what a whole stack can show here is the anonymous caller: refused with exit 5 when security
is on, served and audited (principal ``anonymous``) when it is off.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from plantd.identity.audit import AuditLog
from plantd.security.keys import Keyring
from tests.support.processes import run_plant
from tests.support.state import Stack, StateProcess, make_stack

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = make_stack(tmp_path / "home")
    try:
        yield s
    finally:
        s.close()


def test_insecure_stack_audits_every_write(stack: Stack) -> None:
    env = stack.env
    for value in ("1", "2"):
        out = run_plant(env, "state", "set", "-s", "line1", "speed", value)
        assert out.returncode == 0, out.stderr
    out = run_plant(env, "state", "delete", "-s", "line1", "speed")
    assert out.returncode == 0, out.stderr
    ring = Keyring.at_home(stack.home)
    with AuditLog(ring.audit) as log:
        rows = log.query(scope="line1").rows
        assert log.verify().ok
    assert [(r["principal"], r["operation"], r["old"], r["new"]) for r in rows] == [
        ("anonymous", "state-set", None, "1"),
        ("anonymous", "state-set", "1", "2"),
        ("anonymous", "delete", "2", None),
    ]
    assert [r["revision"] for r in rows] == [1, 2, 3]
    listed = run_plant(env, "audit", "list", "--key", "speed", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert [r["new"] for r in json.loads(listed.stdout)][:2] == ["1", "2"]


def test_secure_state_daemon_refuses_anonymous_with_exit_5(stack: Stack, tmp_path: Path) -> None:
    # a second state daemon (its own home) serving another service name, with security on
    home_b = tmp_path / "home-b"
    home_b.mkdir()
    env = dict(stack.env, PLANTD_SECURITY="on", PLANTD_STATE_SERVICE="org.plantd.StateB")
    env["PLANTD_HOME"] = str(home_b)
    proc = StateProcess(env, home_b)
    stack.states.append(proc)
    proc.wait_ready()
    out = run_plant(env, "call", "org.plantd.StateB", "get", '{"service": "s", "key": "k"}')
    assert out.returncode == 5, (out.stdout, out.stderr)
    assert "not authorized: rule 'anonymous'" in out.stderr
    with AuditLog(Keyring.at_home(home_b).audit) as log:
        rows = log.query(principal="anonymous").rows
    assert rows[-1]["outcome"] == "denied:anonymous" and rows[-1]["service"] == "org.plantd.StateB"
