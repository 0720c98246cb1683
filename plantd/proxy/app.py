"""The aiohttp application of the proxy: the routes of :data:`plantd.proxy.api.ROUTES` behind
one middleware that authenticates, rate-limits, answers CORS and turns every failure into a
problem document (:mod:`.problems`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Handler

from plantd import tracing
from plantd.protocol.tracecontext import parse_traceparent
from plantd.proxy.api import Api
from plantd.proxy.auth import TokenGate
from plantd.proxy.problems import Problem, problem_for
from plantd.proxy.ratelimit import RateLimiter
from plantd.proxy.routes import Request, Route
from plantd.security.caller import acting_for

__all__ = ["Cors", "build_app"]

_log = logging.getLogger("plantd.proxy")
#: aiohttp's own HTTP errors (no route, wrong method, body too large) as problem codes
_HTTP_CODES = {
    404: "no_such_endpoint",
    405: "method_not_allowed",
    413: "body_too_large",
}


@dataclass
class Cors:
    """Origins allowed to call from a browser page ("*" = any); empty = CORS off."""

    origins: list[str] = field(default_factory=list)

    def allow(self, origin: str | None) -> str | None:
        if not self.origins or not origin:
            return None
        if "*" in self.origins:
            return "*"
        return origin if origin in self.origins else None


@dataclass
class Observer:
    """Counts each answered request for ``/metrics`` (method, route template, status)."""

    count: Callable[[str, str, int], None] = lambda method, path, status: None


def _route_handler(
    api: Api, route: Route
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(http: web.Request) -> web.StreamResponse:
        params = route.parse(http)
        principal = http.get("principal")
        # every MDP request of this handler goes out for the token's principal: the broker
        # and the services decide (and audit) as that principal, not as the proxy; and in the
        # caller's trace when it sent a W3C traceparent header (an invalid one is ignored)
        with acting_for(principal), tracing.continuing(_traceparent(http)):
            return await route.handler(api, Request(http, params, principal))

    handle.__name__ = route.operation_id
    return handle


def _traceparent(http: web.Request) -> bytes | None:
    value = http.headers.get("traceparent")
    return parse_traceparent(value.strip().encode("ascii", "replace")) if value else None


def build_app(
    api: Api,
    routes: list[Route],
    *,
    gate: TokenGate,
    limiter: RateLimiter,
    cors: Cors,
    max_body: int,
    observer: Observer | None = None,
) -> web.Application:
    """The application serving ``routes`` with ``api``."""
    observe = observer or Observer()
    public = {(r.method, r.path) for r in routes if r.public}

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.monotonic()
        resource = request.match_info.route.resource
        template = resource.canonical if resource is not None else "unmatched"
        allow = cors.allow(request.headers.get("Origin"))
        try:
            if request.method == "OPTIONS" and allow is not None:
                response: web.StreamResponse = web.Response(status=204, headers={
                    "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
                    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match, "
                    "If-None-Match, Last-Event-ID, traceparent",
                    "Access-Control-Max-Age": "600",
                })  # fmt: skip
            else:
                if (request.method, template) not in public:
                    principal = gate.principal(request)
                    request["principal"] = principal
                    key = principal_key(request, principal)
                    wait = limiter.take(key)
                    if wait > 0:
                        raise Problem(
                            429, "rate_limited",
                            f"rate limit of {limiter.rate:g} requests/s (burst {limiter.burst:g})"
                            f" exceeded; retry in {wait:.2f}s",
                            headers={"Retry-After": str(max(1, round(wait + 0.5)))},
                        )  # fmt: skip
                response = await handler(request)
        except Problem as exc:
            response = exc.response(request.path)
        except web.HTTPException as exc:
            code = _HTTP_CODES.get(exc.status, "bad_request")
            detail = exc.text or exc.reason
            if exc.status == 413:
                detail = f"request body exceeds the limit of {max_body} bytes"
            elif exc.status == 404:
                detail = f"no endpoint {request.method} {request.path} (see /openapi.json)"
            elif exc.status == 405:
                detail = f"{request.method} is not allowed on {request.path}"
            response = Problem(exc.status, code, detail).response(request.path)
        except asyncio.CancelledError:
            raise
        except (ConnectionResetError, ConnectionError) as exc:
            _log.debug("client left %s %s: %s", request.method, request.path, exc)
            raise
        except Exception as exc:
            problem = problem_for(exc)
            if problem.status >= 500 and not _expected(exc):
                _log.warning(
                    "%s %s failed: %s: %s", request.method, request.path, type(exc).__name__, exc
                )
            response = problem.response(request.path)
        if allow is not None and not response.prepared:
            response.headers["Access-Control-Allow-Origin"] = allow
            response.headers["Vary"] = "Origin"
            response.headers["Access-Control-Expose-Headers"] = "ETag, Retry-After"
        observe.count(request.method, template, response.status)
        if time.monotonic() - started > 5.0:
            _log.info("%s %s took %.1fs", request.method, request.path, time.monotonic() - started)
        return response

    app = web.Application(middlewares=[guard], client_max_size=max_body)
    for route in routes:
        app.router.add_route(route.method, route.path, _route_handler(api, route))
    return app


def principal_key(http: web.Request, principal: str | None) -> str:
    """What the rate limit counts by: the token, else the client's address."""
    auth = http.headers.get("Authorization", "")
    if principal is not None and auth:
        return "token:" + auth.partition(" ")[2].strip()[:20]  # plantd_<id>_
    return "addr:" + (http.remote or "?")


def _expected(exc: BaseException) -> bool:
    from plantd.client import errors

    return isinstance(exc, errors.PlantdError)
