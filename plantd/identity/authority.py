"""The authorization view of one keyring, kept current cheaply: who is active, with which
roles, and what the policy decides.

Daemons that authorize per message (the broker, the state service, the Identity service)
hold one :class:`Authority` and call :meth:`Authority.refresh` before deciding (or on a
timer). A refresh costs one ``stat`` of the policy file and a look at the registry's WAL
index header (:class:`WalHeader`); only when that header changed does it ask SQLite
(``PRAGMA data_version``); the principals and the policy are only re-read when either
changed, so a revocation or a policy edit takes effect on the next message.

A policy file that does not parse keeps the last good policy (the error is kept in
:attr:`Authority.policy_error` for health and logs): a typo must not open or shut the plant.
"""

from __future__ import annotations

import mmap
import os
import sqlite3
from pathlib import Path
from typing import Any

from plantd.identity.policy import Access, Decision, Policy, PolicyError, parse_policy
from plantd.identity.principals import Principal, principal_from_row
from plantd.security.keys import Keyring


def load_policy(path: Path) -> Policy:
    """The policy in ``path``; the built-in policy when the file does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Policy()
    return parse_policy(text, path.name)


#: the two copies of the WAL index header at the start of a database's ``-shm`` file
#: (sqlite.org/walformat.html): every commit rewrites them (change counter, last frame,
#: checksums), and it is there that readers learn of the commit
WAL_HEADER_BYTES = 96


class WalHeader:
    """The WAL index header of an open WAL-mode database, read from its ``-shm`` file.

    Why: ``PRAGMA data_version`` takes and drops a read lock with several syscalls and runs
    SQLite's VM: about 30 us of CPU per call inside a busy broker, where it ran once per
    drained batch (most of what security cost its event loop). A commit becomes visible to
    readers exactly when the writer rewrites this header, so an unchanged header means
    nothing was committed since the last look, at the cost of a 96-byte compare.

    Only open while the caller's own SQLite connection is open: that connection holds the
    shared lock that keeps any other connection from truncating or re-creating the file.
    """

    def __init__(self, database: Path) -> None:
        fd = os.open(f"{database}-shm", os.O_RDONLY)
        try:
            if os.fstat(fd).st_size < WAL_HEADER_BYTES:
                raise OSError("WAL index not initialised")
            self._map = mmap.mmap(fd, WAL_HEADER_BYTES, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)  # the mapping keeps the file
        self._seen = b""

    def changed(self) -> bool:
        """True when the header differs from the last call (and on the first call)."""
        head = self._map[:WAL_HEADER_BYTES]
        if head == self._seen:
            return False
        self._seen = head
        return True

    def close(self) -> None:
        self._map.close()


class Authority:
    """Active principals and the policy of ``keyring``, reloaded only when they changed."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring
        self.policy = Policy()
        self.policy_error: str | None = None
        self._principals: dict[str, Principal] = {}
        self._db: sqlite3.Connection | None = None
        self._wal: WalHeader | None = None
        self._wal_tried = False
        self._data_version: int | None = None
        self._policy_path = str(keyring.policy)
        self._policy_stamp: tuple[int, int, int] | None = None
        #: decisions by their whole question, dropped on every reload (a service asks the same
        #: few questions again and again: the policy's glob matching is not free)
        self._decisions: dict[tuple[Any, ...], Decision] = {}
        self.reloads = 0
        self.refresh()

    def close(self) -> None:
        if self._wal is not None:
            self._wal.close()
            self._wal = None
        self._wal_tried = False
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> Authority:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ refresh
    def _connection(self) -> sqlite3.Connection | None:
        if self._db is None and self.keyring.registry.exists():
            if self.keyring.registry.stat().st_size == 0:
                return None  # being created by Registry() right now
            uri = f"file:{self.keyring.registry}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=5.0)
            self._db.row_factory = sqlite3.Row
        return self._db

    def _watch_wal(self, db: sqlite3.Connection) -> None:
        """Map the registry's WAL index header, once per connection (in WAL mode: any other
        journal mode keeps asking SQLite every time). Reading the journal mode opens the
        WAL index; the header is taken in before the caller's data_version."""
        self._wal_tried = True
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                wal = WalHeader(self.keyring.registry)
                wal.changed()
                self._wal = wal
        except (OSError, ValueError, sqlite3.DatabaseError):
            self._wal = None

    def _policy_changed(self, force: bool) -> bool:
        # this runs per drained batch: os.stat, not Path.stat, and no exception raised for
        # the usual absent file (os.access says so for a quarter of the cost)
        path = self._policy_path
        stamp: tuple[int, int, int] | None = None
        if self._policy_stamp is not None or force or os.access(path, os.F_OK):
            try:
                st = os.stat(path)
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            except FileNotFoundError:
                pass
        if stamp == self._policy_stamp and self.reloads and not force:
            return False
        self._policy_stamp = stamp
        return True

    def _registry_changed(self, force: bool) -> bool:
        db = self._connection()
        if db is None:
            changed = self._data_version is not None or bool(self._principals)
            self._data_version = None
            return changed
        wal = self._wal
        if wal is not None and self.reloads and not force and not wal.changed():
            return False  # no commit since the last data_version
        try:
            if not self._wal_tried:
                self._watch_wal(db)
            version = int(db.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.DatabaseError:
            self.close()  # the file was replaced: reopen next time, reload now
            self._data_version = None
            return True
        if version == self._data_version and self.reloads and not force:
            return False
        self._data_version = version
        return True

    def refresh(self, *, force: bool = False) -> bool:
        """Reload what changed since the last call (everything with ``force``); True when
        anything was reloaded."""
        registry = self._registry_changed(force)
        policy = self._policy_changed(force)
        if registry:
            self._principals = self._read_principals()
        if policy:
            try:
                self.policy = load_policy(self.keyring.policy)
                self.policy_error = None
            except PolicyError as exc:
                self.policy_error = str(exc)  # keep the last good policy
        if registry or policy:
            self.reloads += 1
            self._decisions.clear()
            return True
        return False

    def _read_principals(self) -> dict[str, Principal]:
        db = self._connection()
        if db is None:
            return {}
        try:
            rows = db.execute("SELECT * FROM principals WHERE state = 'active'").fetchall()
        except sqlite3.OperationalError:
            return {}  # no table yet: nobody is active
        return {r["name"]: principal_from_row(r) for r in rows}

    # ------------------------------------------------------------------ queries
    def principal(self, name: str | None) -> Principal | None:
        """The active principal named ``name`` (None if unknown, pending or revoked)."""
        return self._principals.get(name) if name else None

    def roles(self, name: str | None) -> tuple[str, ...]:
        """The roles of an active principal; () for anyone else."""
        p = self.principal(name)
        return p.roles if p is not None else ()

    def active_keys(self) -> dict[str, str]:
        """Public key (Z85) -> principal name, for the ZAP authenticator."""
        return {p.public_key: p.name for p in self._principals.values()}

    def decide(
        self,
        principal: str | None,
        roles: tuple[str, ...] | list[str] | None,
        service: str,
        operation: str,
        scope: str | None = None,
        key: str | None = None,
        access: Access | None = None,
        *,
        key_prefix: bool = False,
    ) -> Decision:
        """The policy's decision. ``roles`` None means "look them up" (the registry's);
        a principal that is not active is denied (rule ``not-active``). ``access``
        overrides the operation's level (e.g. the compare of a txn is a read);
        ``key_prefix``: see :meth:`plantd.identity.policy.Policy.decide`."""
        if not principal or self.principal(principal) is None:
            return Decision(False, NOT_ACTIVE_RULE)
        use = self.roles(principal) if roles is None else tuple(roles)
        question = (principal, use, service, operation, scope, key, access, key_prefix)
        found = self._decisions.get(question)
        if found is None:
            if len(self._decisions) >= DECISION_CACHE_LIMIT:
                self._decisions.clear()
            found = self._decisions[question] = self.policy.decide(
                principal, use, service, operation, scope, key, access, key_prefix=key_prefix
            )
        return found

    @property
    def has_registry(self) -> bool:
        """True when this host has the principals registry (else only the broker knows)."""
        return self._connection() is not None


#: decisions kept between reloads at most (bounds memory against made-up keys)
DECISION_CACHE_LIMIT = 65536
#: the rule a denial names when the principal is unknown, pending or revoked
NOT_ACTIVE_RULE = "not-active"

__all__ = ["NOT_ACTIVE_RULE", "Authority", "load_policy"]
