"""The state daemon's authorization and audit as processes, security on: broker + state
daemon + ``plant`` with real keys. Every write is audited with the principal the broker
authenticated (old -> new, revision); a viewer reads but is refused a write (exit 5, the rule
named), and the refusal is audited; an operator cannot touch the ``plantd.*`` scopes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from plantd.identity.audit import host_sources, merged_query, verify_sources
from plantd.identity.principals import Registry
from plantd.security.keys import Keyring
from tests.support.processes import run_plant
from tests.support.state import Stack, make_stack

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = make_stack(tmp_path / "home")
    try:
        yield s
    finally:
        s.close()


def as_principal(stack: Stack, name: str, role: str) -> dict[str, str]:
    """The stack's environment for a CLI that authenticates as a new principal ``name``."""
    ring = Keyring.at_home(stack.home)
    with Registry(ring) as reg:
        reg.add(name, [role])
    return dict(stack.env, PLANTD_CLIENT_IDENTITY=str(ring.secret_path(name)))


def test_every_write_is_audited_with_the_authenticated_principal(stack: Stack) -> None:
    env = stack.env  # the CLI acts as the keyring's admin
    for value in ("1", "2"):
        out = run_plant(env, "state", "set", "-s", "line1", "speed", value)
        assert out.returncode == 0, out.stderr
    out = run_plant(env, "state", "delete", "-s", "line1", "speed")
    assert out.returncode == 0, out.stderr
    sources = host_sources(Keyring.at_home(stack.home).audit)
    rows = merged_query(sources, scope="line1").rows
    assert verify_sources(sources)["ok"]
    assert [(r["principal"], r["operation"], r["old"], r["new"]) for r in rows] == [
        ("admin", "state-set", None, "1"),
        ("admin", "state-set", "1", "2"),
        ("admin", "delete", "2", None),
    ]
    assert [r["revision"] for r in rows] == [1, 2, 3]
    assert all(r["peer"] == "127.0.0.1" for r in rows)
    listed = run_plant(env, "audit", "list", "--key", "speed", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert [r["new"] for r in json.loads(listed.stdout)][:2] == ["1", "2"]


def test_viewer_reads_but_cannot_write_and_operator_stays_out_of_config(stack: Stack) -> None:
    assert run_plant(stack.env, "state", "set", "-s", "line1", "speed", "7").returncode == 0
    viewer = as_principal(stack, "vic", "viewer")
    got = run_plant(viewer, "state", "get", "-s", "line1", "speed", "-o", "raw")
    assert (got.returncode, got.stdout.strip()) == (0, "7"), got.stderr
    out = run_plant(viewer, "state", "set", "-s", "line1", "speed", "8")
    assert out.returncode == 5, (out.stdout, out.stderr)
    assert "not authorized" in out.stderr and "vic" in out.stderr and "rule" in out.stderr
    operator = as_principal(stack, "otto", "operator")
    assert run_plant(operator, "state", "set", "-s", "line1", "speed", "9").returncode == 0
    config = run_plant(operator, "state", "set", "-s", "plantd.broker", "rate", "1")
    assert config.returncode == 5 and "otto" in config.stderr, config.stderr
    sources = host_sources(Keyring.at_home(stack.home).audit)
    denied = [r for r in merged_query(sources).rows if r["outcome"].startswith("denied")]
    # the viewer is refused by the broker (no write at all: it never knows the scope), the
    # operator by the state service (the scope decides); both refusals are in the audit
    assert {(r["principal"], r["service"], r["scope"]) for r in denied} >= {
        ("vic", "org.plantd.State", None),
        ("otto", "org.plantd.State", "plantd.broker"),
    }
