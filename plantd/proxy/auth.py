"""Who is calling: bearer API tokens (:mod:`plantd.identity.tokens`) resolved to a principal.

The proxy requires a token once any active token exists in the keyring (or always, with
``require_token``); until then it serves anonymously on loopback. A verified token is cached
for ``CACHE_SECONDS``, so a revocation takes effect within that time without a SQLite read
per request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from plantd.identity.tokens import InvalidToken, TokenStore, tokens_path
from plantd.proxy.problems import Problem
from plantd.security.keys import Keyring

__all__ = ["CACHE_SECONDS", "TokenGate"]

CACHE_SECONDS = 1.0


class TokenGate:
    """Checks ``Authorization: Bearer <token>`` against the keyring's token table."""

    def __init__(
        self,
        identity_dir: Path,
        *,
        require: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keyring = Keyring(identity_dir)
        self.require = require
        self._clock = clock
        self._store: TokenStore | None = None
        self._required: tuple[bool, float] | None = None
        self._cache: dict[str, tuple[str, float]] = {}  # token -> (principal, checked at)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def _tokens(self) -> TokenStore | None:
        if self._store is None and tokens_path(self.keyring).exists():
            self._store = TokenStore(self.keyring)
        return self._store

    def required(self) -> bool:
        """Whether a request needs a token now (cached for ``CACHE_SECONDS``)."""
        if self.require:
            return True
        now = self._clock()
        if self._required is not None and now - self._required[1] < CACHE_SECONDS:
            return self._required[0]
        store = self._tokens()
        needed = store is not None and store.any_active()
        self._required = (needed, now)
        return needed

    def principal(self, http: web.Request) -> str | None:
        """The principal the request's token resolves to; None when anonymous is allowed;
        a 401 problem otherwise."""
        header = http.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            if self.required():
                raise _unauthorized("an API token is required (Authorization: Bearer <token>)")
            return None
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("Authorization: expected 'Bearer <token>'")
        try:
            return self.verify(token.strip())
        except InvalidToken as exc:
            raise _unauthorized(str(exc)) from None

    def verify(self, token: str) -> str:
        """The principal an active ``token`` was issued to (cached for ``CACHE_SECONDS``);
        :class:`InvalidToken` saying why not. The web console (``plant web``) shares it."""
        now = self._clock()
        hit = self._cache.get(token)
        if hit is not None and now - hit[1] < CACHE_SECONDS:
            return hit[0]
        store = self._tokens()
        if store is None:
            raise InvalidToken("bearer token is not known (no tokens issued on this host)")
        try:
            found = store.verify(token)
        except InvalidToken:
            self._cache.pop(token, None)
            raise
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[token] = (found.principal, now)
        return found.principal


def _unauthorized(detail: str) -> Problem:
    return Problem(
        401, "unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="plantd"'}
    )
