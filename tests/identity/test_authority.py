"""Authority: the registry and policy as the daemons see them, reloaded only on change."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from plantd.identity.authority import NOT_ACTIVE_RULE, Authority
from plantd.identity.principals import DAEMON_PRINCIPALS, Registry, init_keyring
from plantd.security.keys import Keyring

STATE = "org.plantd.State"


@pytest.fixture
def ring(tmp_path: Path) -> Keyring:
    ring = Keyring.at_home(tmp_path)
    init_keyring(ring)
    with Registry(ring) as reg:
        reg.add("alice", ["operator"])
        reg.add("vic", ["viewer"])
    return ring


def test_principals_and_roles(ring: Keyring) -> None:
    with Authority(ring) as auth:
        alice = auth.principal("alice")
        assert alice is not None and alice.roles == ("operator",)
        assert auth.roles("vic") == ("viewer",)
        assert auth.principal("nobody") is None and auth.roles("nobody") == ()
        assert auth.principal(None) is None
        people = {n for n in auth.active_keys().values() if n not in DAEMON_PRINCIPALS}
        assert people == {"admin", "alice", "vic"}  # init also makes the daemons (issue 13)


def test_decisions_name_the_rule(ring: Keyring) -> None:
    with Authority(ring) as auth:
        ok = auth.decide("alice", None, STATE, "set", scope="line1", key="speed")
        assert ok.allowed and ok.rule == "builtin:operator-state"
        config = auth.decide("alice", None, STATE, "set", scope="plantd.broker", key="x")
        assert not config.allowed and config.rule == "default-deny"
        viewer = auth.decide("vic", ("viewer",), STATE, "set", scope="line1", key="speed")
        assert not viewer.allowed
        assert auth.decide("vic", ("viewer",), STATE, "get", scope="line1", key="speed")
        nobody = auth.decide("mallory", ("admin",), STATE, "get", scope="line1")
        assert not nobody.allowed and nobody.rule == NOT_ACTIVE_RULE
        assert auth.decide(None, (), STATE, "get").rule == NOT_ACTIVE_RULE


def test_revocation_visible_after_refresh(ring: Keyring) -> None:
    with Authority(ring) as auth:
        assert auth.decide("alice", None, STATE, "set", scope="line1", key="k")
        assert auth.refresh() is False  # nothing changed: nothing reloaded
        reloads = auth.reloads
        with Registry(ring) as reg:
            reg.revoke("alice")
        # the cached view stays until refresh (the daemon refreshes per message)
        assert auth.principal("alice") is not None
        assert auth.refresh() is True and auth.reloads == reloads + 1
        assert auth.principal("alice") is None
        denied = auth.decide("alice", ("operator",), STATE, "set", scope="line1", key="k")
        assert not denied.allowed and denied.rule == NOT_ACTIVE_RULE
        assert "alice" not in auth.active_keys().values()


def test_every_commit_seen_through_the_wal_header(ring: Keyring) -> None:
    """refresh asks SQLite only when the registry's WAL index header changed: every commit
    by another connection is still seen on the next refresh, also after a checkpoint
    restarted the WAL (the header's counters start over there)."""
    import sqlite3

    with Authority(ring) as auth:
        assert auth.refresh() is False
        assert auth._wal is not None  # the registry is in WAL mode: the cheap check is on
        checkpointer = sqlite3.connect(ring.registry, isolation_level=None)
        try:
            for i in range(4):
                with Registry(ring) as reg:
                    reg.add(f"p{i}", ["viewer"])
                assert auth.refresh() is True and auth.principal(f"p{i}") is not None
                assert auth.refresh() is False
                checkpointer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                with Registry(ring) as reg:
                    reg.revoke(f"p{i}")
                assert auth.refresh() is True and auth.principal(f"p{i}") is None
        finally:
            checkpointer.close()


def test_new_and_accepted_principals_visible(ring: Keyring) -> None:
    from plantd.security.keys import generate_keypair

    with Authority(ring) as auth:
        with Registry(ring) as reg:
            reg.add_pending("pump", generate_keypair().public)
        auth.refresh()
        assert auth.principal("pump") is None  # pending is not active
        with Registry(ring) as reg:
            reg.accept("pump")
        auth.refresh()
        assert auth.roles("pump") == ("service:pump",)


def test_policy_file_edit_visible(ring: Keyring) -> None:
    with Authority(ring) as auth:
        assert auth.decide("alice", None, STATE, "set", scope="recipes.a", key="k")
        ring.policy.write_text(
            "rules:\n"
            "  - name: recipes-frozen\n"
            "    effect: deny\n"
            "    subject: role:operator\n"
            "    scope: 'recipes.*'\n"
            "    access: write\n",
            encoding="utf-8",
        )
        assert auth.refresh() is True
        denied = auth.decide("alice", None, STATE, "set", scope="recipes.a", key="k")
        assert not denied.allowed and denied.rule == "recipes-frozen"
        assert auth.decide("alice", None, STATE, "get", scope="recipes.a", key="k")
        # a broken edit keeps the last good policy and says why
        ring.policy.write_text("rules:\n  - name: x\n    effect: maybe\n", encoding="utf-8")
        auth.refresh()
        assert auth.policy_error is not None and "policy.yaml:" in auth.policy_error
        assert not auth.decide("alice", None, STATE, "set", scope="recipes.a", key="k")
        # removing the file goes back to the built-in policy
        os.unlink(ring.policy)
        assert auth.refresh() is True
        assert auth.policy_error is None
        assert auth.decide("alice", None, STATE, "set", scope="recipes.a", key="k")


def test_no_registry_yet_denies_everyone(tmp_path: Path) -> None:
    ring = Keyring.at_home(tmp_path)
    with Authority(ring) as auth:
        assert auth.principal("admin") is None
        assert not auth.decide("admin", ("admin",), STATE, "get")
        init_keyring(ring)
        assert auth.refresh() is True
        assert auth.decide("admin", None, STATE, "set", scope="plantd.x", key="k")
