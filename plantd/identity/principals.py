"""The registry of principals: who may connect, with which public key and which roles.

A small SQLite file (``identity/principals.db``) written by ``plant identity`` on the admin's
host. It is an admin-side store with one writer at a time (each method is one short
transaction; SQLite's lock serialises two CLIs). When ``org.plantd.Identity`` serves it later,
that daemon becomes its only writer (one connection, as the state service does) and the CLI
goes through the service; the ZAP authenticator reads :meth:`Registry.active_keys` snapshots.

Keys: ``rotate`` and ``revoke`` keep the old public key in ``retired_keys`` so that a key,
once revoked, is never accepted again, not even if re-added under another name.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from plantd.identity.policy import IDENTITY_SERVICE, validate_role
from plantd.security.errors import Conflict, InvalidArgument, NotFound
from plantd.security.keys import (
    KeyPair,
    Keyring,
    generate_keypair,
    validate_z85_key,
    write_public,
    write_secret,
)
from plantd.vocabulary import (
    ECHO_SERVICE,
    LOGGER_SERVICE,
    METRIC_SERVICE,
    SERVICE_PREFIX,
    STATE_SERVICE,
)

KINDS = ("person", "module", "daemon")
#: principal -> service of every built-in daemon: ``plant identity init`` makes each one a
#: principal (kind daemon, role ``service:<service>``) whose secret the daemon loads
DAEMON_PRINCIPALS = {
    "state": STATE_SERVICE,
    "logger": LOGGER_SERVICE,
    "metric": METRIC_SERVICE,
    "echo": ECHO_SERVICE,
    "identity": IDENTITY_SERVICE,
    "proxy": SERVICE_PREFIX + "Proxy",
}
STATES = ("active", "pending", "revoked")
#: lower-case letters, digits, '.', '_', '-'; starts with a letter; at most 64 characters
NAME_RE = re.compile(r"[a-z][a-z0-9._-]{0,63}")
RESERVED_NAMES = frozenset({"broker"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS principals (
    name TEXT PRIMARY KEY,
    public_key TEXT NOT NULL UNIQUE,
    roles TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS retired_keys (
    public_key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    retired_at REAL NOT NULL,
    reason TEXT NOT NULL
);
"""


def validate_name(name: str) -> str:
    """``name`` if it is a valid principal name, else InvalidArgument saying the rule."""
    if not NAME_RE.fullmatch(name):
        raise InvalidArgument(
            f"name: {name!r} is not a principal name (a lower-case letter, then up to 63"
            " lower-case letters, digits, '.', '_' or '-')",
            "name",
        )
    if name in RESERVED_NAMES:
        raise InvalidArgument(f"name: {name!r} is reserved", "name")
    return name


def validate_kind(kind: str) -> str:
    if kind not in KINDS:
        raise InvalidArgument(f"kind: {kind!r} is not one of {', '.join(KINDS)}", "kind")
    return kind


@dataclass(frozen=True)
class Principal:
    name: str
    public_key: str
    roles: tuple[str, ...]
    kind: str
    state: str
    created: float
    revoked_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["roles"] = list(self.roles)
        return doc


def principal_from_row(row: sqlite3.Row) -> Principal:
    return Principal(
        name=row["name"],
        public_key=row["public_key"],
        roles=tuple(json.loads(row["roles"])),
        kind=row["kind"],
        state=row["state"],
        created=row["created"],
        revoked_at=row["revoked_at"],
    )


class Registry:
    """Principals of one keyring. Methods that create keys also write the key files."""

    def __init__(self, keyring: Keyring, *, clock: Any = time.time) -> None:
        self.keyring = keyring
        self._clock = clock
        keyring.ensure()
        self._db = sqlite3.connect(keyring.registry, isolation_level=None, timeout=5.0)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _txn(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # ------------------------------------------------------------------ reads
    def get(self, name: str) -> Principal:
        row = self._db.execute("SELECT * FROM principals WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"no principal named {name!r}")
        return principal_from_row(row)

    def list_principals(self, state: str | None = None) -> list[Principal]:
        if state is not None and state not in STATES:
            raise InvalidArgument(f"state: {state!r} is not one of {', '.join(STATES)}", "state")
        sql, args = "SELECT * FROM principals", tuple[str, ...]()
        if state is not None:
            sql, args = sql + " WHERE state = ?", (state,)
        return [principal_from_row(r) for r in self._db.execute(sql + " ORDER BY name", args)]

    def active_keys(self) -> dict[str, Principal]:
        """Public key (Z85) -> principal, for every active principal: what ZAP accepts."""
        return {p.public_key: p for p in self.list_principals("active")}

    def by_key(self, public_key: str) -> Principal | None:
        row = self._db.execute(
            "SELECT * FROM principals WHERE public_key = ?", (public_key,)
        ).fetchone()
        return None if row is None else principal_from_row(row)

    # ------------------------------------------------------------------ writes
    def _check_new_key(self, db: sqlite3.Connection, public_key: str) -> None:
        validate_z85_key(public_key)
        retired = db.execute(
            "SELECT name FROM retired_keys WHERE public_key = ?", (public_key,)
        ).fetchone()
        if retired is not None:
            raise Conflict(f"public_key: this key was retired from {retired['name']!r}")
        owner = db.execute(
            "SELECT name FROM principals WHERE public_key = ?", (public_key,)
        ).fetchone()
        if owner is not None:
            raise Conflict(f"public_key: this key already belongs to {owner['name']!r}")

    def add(
        self,
        name: str,
        roles: Sequence[str],
        *,
        kind: str = "person",
        public_key: str | None = None,
        state: str = "active",
    ) -> tuple[Principal, KeyPair | None]:
        """Register a principal. Without ``public_key`` a key pair is made here and the
        secret is written under ``secrets/`` (a local principal); with one, only the public
        key is kept (a principal on another host). Returns the principal and the new pair."""
        validate_name(name)
        validate_kind(kind)
        if state not in ("active", "pending"):
            raise InvalidArgument(f"state: a new principal is active or pending, not {state!r}")
        roles = tuple(dict.fromkeys(validate_role(r) for r in roles))
        pair = generate_keypair() if public_key is None else KeyPair(public_key)
        with self._txn() as db:
            if db.execute("SELECT 1 FROM principals WHERE name = ?", (name,)).fetchone():
                raise Conflict(f"principal {name!r} already exists")
            self._check_new_key(db, pair.public)
            if pair.secret is not None:
                write_secret(self.keyring.secret_path(name), name, pair)
            write_public(self.keyring.public_path(name), name, pair.public)
            db.execute(
                "INSERT INTO principals VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (name, pair.public, json.dumps(list(roles)), kind, state, self._clock()),
            )
        return self.get(name), (pair if pair.secret is not None else None)

    def add_pending(self, name: str, public_key: str, kind: str = "module") -> Principal:
        """Hold a key presented by an unknown peer until an admin accepts it."""
        return self.add(name, (), kind=kind, public_key=public_key, state="pending")[0]

    def accept(self, name: str, roles: Sequence[str] = ()) -> Principal:
        """A pending principal becomes active (with ``roles``, or ``service:<name>`` for a
        module when none are given)."""
        p = self.get(name)
        if p.state != "pending":
            raise Conflict(f"principal {name!r} is {p.state}, not pending")
        granted = tuple(validate_role(r) for r in roles) or (
            (f"service:{name}",) if p.kind == "module" else p.roles
        )
        with self._txn() as db:
            db.execute(
                "UPDATE principals SET state = 'active', roles = ? WHERE name = ?",
                (json.dumps(list(granted)), name),
            )
        return self.get(name)

    def reject(self, name: str) -> Principal:
        """Drop a pending principal; its key is retired (never accepted later)."""
        p = self.get(name)
        if p.state != "pending":
            raise Conflict(f"principal {name!r} is {p.state}, not pending")
        with self._txn() as db:
            self._retire(db, p, "rejected")
            db.execute("DELETE FROM principals WHERE name = ?", (name,))
        self.keyring.public_path(name).unlink(missing_ok=True)
        return p

    def _retire(self, db: sqlite3.Connection, p: Principal, reason: str) -> None:
        db.execute(
            "INSERT OR REPLACE INTO retired_keys VALUES (?, ?, ?, ?)",
            (p.public_key, p.name, self._clock(), reason),
        )

    def revoke(self, name: str) -> Principal:
        """The principal and its key stop being accepted (new connections at once; live
        ones once the broker checks per message)."""
        p = self.get(name)
        if p.state == "revoked":
            raise Conflict(f"principal {name!r} is already revoked")
        with self._txn() as db:
            self._retire(db, p, "revoked")
            db.execute(
                "UPDATE principals SET state = 'revoked', revoked_at = ? WHERE name = ?",
                (self._clock(), name),
            )
        self.keyring.secret_path(name).unlink(missing_ok=True)
        return self.get(name)

    def rotate(self, name: str, public_key: str | None = None) -> tuple[Principal, KeyPair | None]:
        """A new key for an active principal; the old key is revoked (retired)."""
        p = self.get(name)
        if p.state != "active":
            raise Conflict(f"principal {name!r} is {p.state}; only an active one is rotated")
        pair = generate_keypair() if public_key is None else KeyPair(public_key)
        with self._txn() as db:
            self._check_new_key(db, pair.public)
            self._retire(db, p, "rotated")
            if pair.secret is not None:
                write_secret(self.keyring.secret_path(name), name, pair)
            else:
                self.keyring.secret_path(name).unlink(missing_ok=True)
            write_public(self.keyring.public_path(name), name, pair.public)
            db.execute("UPDATE principals SET public_key = ? WHERE name = ?", (pair.public, name))
        return self.get(name), (pair if pair.secret is not None else None)

    def is_retired(self, public_key: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM retired_keys WHERE public_key = ?", (public_key,)
        ).fetchone()
        return row is not None


def init_keyring(keyring: Keyring, admin: str = "admin") -> tuple[KeyPair, Principal]:
    """First-run setup: the broker key pair and an ``admin`` principal (role admin) whose
    secret the CLI then finds at the default path. Refuses to overwrite an existing keyring."""
    if keyring.broker_secret.exists() or keyring.registry.exists():
        raise Conflict(f"{keyring.root}: identity already initialised")
    keyring.ensure()
    broker = generate_keypair()
    write_secret(keyring.broker_secret, "broker", broker)
    write_public(keyring.broker_public, "broker", broker.public)
    with Registry(keyring) as reg:
        principal, _ = reg.add(admin, ["admin"], kind="person")
        for name, service in DAEMON_PRINCIPALS.items():
            reg.add(name, [f"service:{service}"], kind="daemon")
    return broker, principal


def ensure_service_principal(keyring: Keyring, name: str, service: str, kind: str) -> bool:
    """Create principal ``name`` (role ``service:<service>``, its secret here) unless it
    exists; True when it was created. What ``plant module start`` runs for a module."""
    with Registry(keyring) as reg:
        try:
            reg.get(name)
        except NotFound:
            reg.add(name, [f"service:{service}"], kind=kind)
            return True
    return False
