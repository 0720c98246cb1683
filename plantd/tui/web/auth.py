"""Who may open the web console: the proxy's API tokens, exchanged once for a session cookie.

While no active token exists on this host the console is open (loopback only, like the
proxy). Once one does, every page, asset and websocket needs a session: the operator pastes a
token into the login form (``POST /login``), which answers with a random session id in an
``HttpOnly; SameSite=Strict`` cookie. The token stays on the server (never in the cookie, a
URL or the access log) and is checked again on every request (with the proxy's
:class:`~plantd.proxy.auth.TokenGate`, so revoking or expiring it locks the browser out within
a second). A websocket from another site's page is refused whatever the mode: browsers let any
page open one to 127.0.0.1, and the console behind it can write.
"""

from __future__ import annotations

import html
import secrets
import string
from collections import OrderedDict
from importlib import resources
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from plantd.identity.tokens import InvalidToken
from plantd.proxy.auth import TokenGate

__all__ = ["COOKIE", "WebAuth"]

COOKIE = "plantd_web"
#: sessions kept at most (oldest dropped first): a bound, not a feature
MAX_SESSIONS = 1000
_LOGIN = string.Template(resources.files(__package__).joinpath("login.html").read_text("utf-8"))


class WebAuth:
    """Token login and the per-request check, as an aiohttp middleware plus two routes."""

    def __init__(self, identity_dir: Path, *, require: bool = False) -> None:
        self.identity_dir = identity_dir
        self.gate = TokenGate(identity_dir, require=require)
        self._sessions: OrderedDict[str, str] = OrderedDict()  # session id -> token

    def close(self) -> None:
        self.gate.close()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/login", self.handle_login_page),
            web.post("/login", self.handle_login),
            web.post("/logout", self.handle_logout),
        ]

    def principal(self, request: web.Request) -> str | None:
        """The principal of the request's session (None: no valid session)."""
        token = self._sessions.get(request.cookies.get(COOKIE, ""))
        if token is None:
            return None
        try:
            return self.gate.verify(token)
        except InvalidToken:
            self._sessions.pop(request.cookies.get(COOKIE, ""), None)
            return None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/ws" and not same_origin(request):
            raise web.HTTPForbidden(text="websocket refused: opened by a page of another site")
        if request.path in ("/login", "/logout") or not self.gate.required():
            return await handler(request)
        principal = self.principal(request)
        if principal is None:
            if request.method == "GET" and request.path == "/":
                return login_page("", status=401)
            raise web.HTTPUnauthorized(text="a session is required: log in at /login")
        request["principal"] = principal
        return await handler(request)

    async def handle_login_page(self, request: web.Request) -> web.StreamResponse:
        if not self.gate.required():
            raise web.HTTPSeeOther("/")
        return login_page("")

    async def handle_login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        token = form.get("token")
        if not isinstance(token, str) or not token.strip():
            return login_page("token: paste an API token (plant identity token create NAME)", 400)
        try:
            self.gate.verify(token.strip())
        except InvalidToken as exc:
            return login_page(str(exc).removeprefix("bearer "), status=401)
        session = secrets.token_urlsafe(32)
        self._sessions[session] = token.strip()
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        response = web.HTTPSeeOther("/")
        response.set_cookie(COOKIE, session, path="/", httponly=True, samesite="Strict")
        return response

    async def handle_logout(self, request: web.Request) -> web.StreamResponse:
        self._sessions.pop(request.cookies.get(COOKIE, ""), None)
        response = web.HTTPSeeOther("/login")
        response.del_cookie(COOKIE, path="/")
        return response


def login_page(error: str, status: int = 200) -> web.Response:
    text = _LOGIN.substitute(error=html.escape(error))
    return web.Response(text=text, status=status, content_type="text/html")


def same_origin(request: web.Request) -> bool:
    """No ``Origin`` (not a browser) or this server's own origin."""
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"
