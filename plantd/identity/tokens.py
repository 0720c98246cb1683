"""API tokens: bearer secrets issued per principal, for HTTP clients of the proxy.

A token is ``plantd_<id>_<secret>``: ``id`` (12 hex characters) names the row, ``secret`` is
32 random bytes (base64url). Only the SHA-256 of the secret is stored (the secret has 256 bits
of entropy, so a plain hash is as good as a slow one and costs microseconds per request), in
``tokens.db`` next to the registry (``$PLANTD_HOME/identity/tokens.db``, see
:class:`plantd.security.keys.Keyring`). The token itself is shown once, at creation.

A token resolves to the principal it was issued to, until it expires or is revoked
(:meth:`TokenStore.verify`). Revocation keeps the row (``list`` shows it), so an id is never
reused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from plantd.security.errors import IdentityError, InvalidArgument, NotFound
from plantd.security.keys import Keyring

__all__ = [
    "TOKEN_PREFIX",
    "InvalidToken",
    "Token",
    "TokenStore",
    "parse_duration",
    "tokens_path",
]

TOKEN_PREFIX = "plantd_"
_TOKEN_RE = re.compile(r"plantd_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_ID_RE = re.compile(r"[0-9a-f]{12}")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    principal TEXT NOT NULL,
    hash TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL,
    revoked_at REAL
);
"""


class InvalidToken(IdentityError):
    """A bearer token that is malformed, unknown, expired or revoked (one reason, no secret)."""

    code = "unauthorized"
    exit_code = 5  # ExitCode.AUTH


def tokens_path(keyring: Keyring) -> Path:
    """Where the token table lives: beside the principal registry."""
    return keyring.root / "tokens.db"


def parse_duration(text: str, field: str = "expires") -> float:
    """``30d``, ``12h``, ``90m``, ``3600`` (seconds) -> seconds; InvalidArgument naming
    ``field`` otherwise."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdwy]?)\s*", text)
    if not m or float(m.group(1)) <= 0:
        raise InvalidArgument(
            f"{field}: {text!r} is not a duration (a positive number with s, m, h, d, w or y)",
            field,
        )
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class Token:
    """A stored token (never its secret)."""

    id: str
    principal: str
    created: float
    expires: float | None = None
    revoked_at: float | None = None

    def state(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires is not None and self.expires <= now:
            return "expired"
        return "active"

    def to_json(self, now: float) -> dict[str, Any]:
        return {**asdict(self), "state": self.state(now)}


def _row(row: sqlite3.Row) -> Token:
    return Token(row["id"], row["principal"], row["created"], row["expires"], row["revoked_at"])


class TokenStore:
    """The token table of one keyring; each method is one short SQLite transaction."""

    def __init__(self, keyring: Keyring, *, clock: Callable[[], float] = time.time) -> None:
        self.keyring = keyring
        self.path = tokens_path(keyring)
        self._clock = clock
        keyring.ensure()
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self.path.chmod(0o600)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> TokenStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(self, principal: str, expires_in: float | None = None) -> tuple[Token, str]:
        """A new token for ``principal``: the stored row and the token text (shown once)."""
        if expires_in is not None and expires_in <= 0:
            raise InvalidArgument("expires: must be positive", "expires")
        now = self._clock()
        while True:
            token_id = secrets.token_hex(6)
            secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii").rstrip("=")
            expires = None if expires_in is None else now + expires_in
            try:
                self._db.execute(
                    "INSERT INTO tokens (id, principal, hash, created, expires) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (token_id, principal, _hash(secret), now, expires),
                )
            except sqlite3.IntegrityError:  # an id collision: draw again
                continue
            return Token(token_id, principal, now, expires), f"{TOKEN_PREFIX}{token_id}_{secret}"

    def list_tokens(self, principal: str | None = None) -> list[Token]:
        sql, args = "SELECT * FROM tokens", tuple[str, ...]()
        if principal is not None:
            sql, args = sql + " WHERE principal = ?", (principal,)
        return [_row(r) for r in self._db.execute(sql + " ORDER BY created, id", args)]

    def revoke(self, token_id: str) -> Token:
        """Revoke token ``token_id`` (already revoked: returned as it is)."""
        if not _ID_RE.fullmatch(token_id):
            raise InvalidArgument(f"id: {token_id!r} is not a token id (12 hex digits)", "id")
        self._db.execute(
            "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (self._clock(), token_id),
        )
        row = self._db.execute("SELECT * FROM tokens WHERE id = ?", (token_id,)).fetchone()
        if row is None:
            raise NotFound(f"no token with id {token_id!r}")
        return _row(row)

    def any_active(self) -> bool:
        """Whether any token is usable now (the proxy then requires one)."""
        row = self._db.execute(
            "SELECT 1 FROM tokens WHERE revoked_at IS NULL AND (expires IS NULL OR expires > ?)"
            " LIMIT 1",
            (self._clock(),),
        ).fetchone()
        return row is not None

    def verify(self, token: str) -> Token:
        """The active token ``token`` is, or :class:`InvalidToken` saying why."""
        m = _TOKEN_RE.fullmatch(token.strip())
        if m is None:
            raise InvalidToken("bearer token is malformed (expected plantd_<id>_<secret>)")
        row = self._db.execute("SELECT * FROM tokens WHERE id = ?", (m.group(1),)).fetchone()
        if row is None or not hmac.compare_digest(row["hash"], _hash(m.group(2))):
            raise InvalidToken("bearer token is not known")
        found = _row(row)
        state = found.state(self._clock())
        if state != "active":
            raise InvalidToken(f"bearer token {found.id} is {state}")
        return found
