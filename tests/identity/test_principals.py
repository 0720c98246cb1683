"""The principal registry on a real SQLite file: add/revoke/rotate/pending, name rules."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from plantd.identity.principals import Registry, init_keyring
from plantd.security.errors import Conflict, InvalidArgument, NotFound
from plantd.security.keys import Keyring, generate_keypair, load_secret, read_certificate


@pytest.fixture
def ring(tmp_path: Path) -> Keyring:
    ring = Keyring.at_home(tmp_path)
    init_keyring(ring)
    return ring


def test_init_makes_broker_key_and_admin(ring: Keyring) -> None:
    assert stat.S_IMODE(ring.broker_secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(ring.root.stat().st_mode) == 0o700
    with Registry(ring) as reg:
        admin = reg.get("admin")
    assert admin.roles == ("admin",) and admin.state == "active"
    assert load_secret(ring.secret_path("admin")).public == admin.public_key
    with pytest.raises(Conflict, match="already initialised"):
        init_keyring(ring)


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("Alice", "not a principal name"),
        ("1x", "not a principal name"),
        ("a b", "not a principal"),
        ("x" * 65, "not a principal"),
        ("broker", "reserved"),
        ("", "not a principal"),
    ],
)
def test_name_rules(ring: Keyring, name: str, fragment: str) -> None:
    with Registry(ring) as reg, pytest.raises(InvalidArgument, match=fragment) as err:
        reg.add(name, ["viewer"])
    assert err.value.field == "name"


def test_bad_role_and_kind_are_named(ring: Keyring) -> None:
    with Registry(ring) as reg:
        with pytest.raises(InvalidArgument, match="role: 'Op!'") as err:
            reg.add("bob", ["Op!"])
        assert err.value.field == "role"
        with pytest.raises(InvalidArgument, match="kind: 'robot'"):
            reg.add("bob", ["viewer"], kind="robot")
        with pytest.raises(Conflict, match="already exists"):
            reg.add("admin", ["viewer"])


def test_remote_principal_keeps_only_its_public_key(ring: Keyring) -> None:
    pub = generate_keypair().public
    with Registry(ring) as reg:
        p, pair = reg.add("plc-7", ["service:plc-7"], kind="module", public_key=pub)
        assert pair is None and p.public_key == pub
        assert read_certificate(ring.public_path("plc-7")).public == pub
        assert not ring.secret_path("plc-7").exists()
        with pytest.raises(Conflict, match="already belongs to 'plc-7'"):
            reg.add("other", [], public_key=pub)


def test_revoke_retires_the_key_for_good(ring: Keyring) -> None:
    with Registry(ring) as reg:
        _, pair = reg.add("alice", ["operator"])
        assert pair is not None
        assert pair.public in reg.active_keys()
        revoked = reg.revoke("alice")
        assert revoked.state == "revoked" and revoked.revoked_at is not None
        assert pair.public not in reg.active_keys()
        assert not ring.secret_path("alice").exists()
        with pytest.raises(Conflict, match="already revoked"):
            reg.revoke("alice")
        with pytest.raises(Conflict, match="retired from 'alice'"):
            reg.add("alice2", ["viewer"], public_key=pair.public)


def test_rotate_replaces_and_retires_the_old_key(ring: Keyring) -> None:
    with Registry(ring) as reg:
        _, old = reg.add("alice", ["operator"])
        p, new = reg.rotate("alice")
        assert old is not None and new is not None and old.public != new.public
        assert reg.is_retired(old.public)
        people = {k for k, q in reg.active_keys().items() if q.kind != "daemon"}
        assert people == {p.public_key, reg.get("admin").public_key}  # (+ daemons, issue 13)
        assert load_secret(ring.secret_path("alice")) == new


def test_pending_accept_reject(ring: Keyring) -> None:
    k1, k2 = generate_keypair().public, generate_keypair().public
    with Registry(ring) as reg:
        reg.add_pending("pump", k1)
        reg.add_pending("rogue", k2)
        assert [p.name for p in reg.list_principals("pending")] == ["pump", "rogue"]
        assert k1 not in reg.active_keys()
        accepted = reg.accept("pump")
        assert accepted.state == "active" and accepted.roles == ("service:pump",)
        reg.reject("rogue")
        with pytest.raises(NotFound):
            reg.get("rogue")
        with pytest.raises(Conflict, match="retired"):
            reg.add_pending("rogue", k2)
        with pytest.raises(Conflict, match="not pending"):
            reg.accept("pump")
        with pytest.raises(InvalidArgument, match="state: 'bogus'"):
            reg.list_principals("bogus")
