"""Route definitions: the one table the router, the request validation and the OpenAPI
document are all made from.

A handler is declared with its method, path, parameters (typed: ``integer``, ``number``,
``boolean``, ``string``), request body and response media types::

    @ROUTES.get("/v1/state/scopes", "List scopes (paged)", tag="state",
                params=[Param("prefix"), LIMIT, AFTER])
    async def scopes(api: Api, req: Request) -> web.StreamResponse: ...

``Request.query`` holds the parameters parsed and checked against their definitions: a bad
value is a 400 problem naming the parameter before the handler runs.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from plantd.proxy.problems import Problem

__all__ = ["JSON", "NDJSON", "SSE", "Param", "Request", "Route", "RouteTable"]

JSON = "application/json"
SSE = "text/event-stream"
NDJSON = "application/x-ndjson"

_TYPES = {"integer": int, "number": float, "boolean": bool, "string": str}


@dataclass(frozen=True)
class Param:
    """A path, query or header parameter."""

    name: str
    type: str = "string"
    where: str = "query"  # query | path | header
    required: bool = False
    description: str = ""
    minimum: float | None = None
    maximum: float | None = None
    enum: tuple[str, ...] | None = None

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": self.type}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.enum is not None:
            schema["enum"] = list(self.enum)
        if self.type == "string" and self.where == "path":
            schema["minLength"] = 1
        return schema

    def parse(self, raw: str) -> Any:
        """``raw`` as this parameter's type; a 400 problem naming it otherwise."""
        try:
            if self.type == "integer":
                value: Any = int(raw)
            elif self.type == "number":
                value = float(raw)
                if value != value or value in (float("inf"), float("-inf")):
                    raise ValueError
            elif self.type == "boolean":
                lowered = raw.lower()
                if lowered not in ("true", "false", "1", "0"):
                    raise ValueError
                value = lowered in ("true", "1")
            else:
                value = raw
        except ValueError:
            raise Problem(
                400,
                "invalid_argument",
                f"{self.where} parameter '{self.name}': expected {self.type}, got {raw[:60]!r}",
                field=self.name,
            ) from None
        if self.minimum is not None and value < self.minimum:
            raise Problem(
                400,
                "invalid_argument",
                f"{self.where} parameter '{self.name}': must be >= {self.minimum:g}",
                field=self.name,
            )
        if self.maximum is not None and value > self.maximum:
            raise Problem(
                400,
                "invalid_argument",
                f"{self.where} parameter '{self.name}': must be <= {self.maximum:g}",
                field=self.name,
                maximum=self.maximum,
            )
        if self.enum is not None and value not in self.enum:
            raise Problem(
                400,
                "invalid_argument",
                f"{self.where} parameter '{self.name}': expected one of {', '.join(self.enum)}",
                field=self.name,
            )
        return value


@dataclass
class Request:
    """What a handler gets: the aiohttp request, its checked parameters and its principal."""

    http: web.Request
    params: dict[str, Any]
    principal: str | None

    async def json_body(self, *, required: bool = True) -> Any:
        """The body as JSON whatever its Content-Type (``curl -d`` sends a form type);
        precise 400/413 problems otherwise."""
        raw = await self.http.read()  # client_max_size raises 413 (turned into a problem)
        if not raw:
            if required:
                raise Problem(400, "bad_request", "request body: a JSON document is required")
            return None
        try:
            return json.loads(raw)
        except UnicodeDecodeError:
            raise Problem(400, "invalid_json", "request body: not UTF-8") from None
        except ValueError as exc:
            raise Problem(400, "invalid_json", f"request body: invalid JSON: {exc}") from None


Handler = Callable[[Any, Request], Awaitable[web.StreamResponse]]


@dataclass
class Route:
    """One endpoint: how to reach it, what it takes and answers, and its handler."""

    method: str
    path: str
    summary: str
    handler: Handler
    tag: str
    params: list[Param] = field(default_factory=list)
    #: JSON Schema of the request body (None: no body)
    body: dict[str, Any] | None = None
    body_required: bool = True
    #: media type -> JSON Schema of the success response
    responses: dict[str, dict[str, Any]] = field(default_factory=dict)
    status: int = 200
    #: other success statuses (e.g. 201 Created) with the same body
    also: tuple[int, ...] = ()
    #: response headers documented on success
    headers: dict[str, str] = field(default_factory=dict)
    description: str = ""
    #: an endpoint that streams without end (SSE): fuzzers leave it out
    endless: bool = False
    #: served without a bearer token (health, metrics, the API document)
    public: bool = False

    @property
    def operation_id(self) -> str:
        return self.handler.__name__.strip("_")

    def parse(self, http: web.Request) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for p in self.params:
            if p.where == "path":
                raw: str | None = http.match_info.get(p.name)
            elif p.where == "header":
                raw = http.headers.get(p.name)
            else:
                raw = http.query.get(p.name)
            if raw is None:
                if p.required:
                    raise Problem(
                        400,
                        "invalid_argument",
                        f"missing {p.where} parameter '{p.name}'",
                        field=p.name,
                    )
                continue
            values[p.name] = p.parse(raw)
        return values


class RouteTable:
    """The declared routes, in declaration order."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(
        self, method: str, path: str, summary: str, **options: Any
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.routes.append(Route(method, path, summary, handler, **options))
            return handler

        return register

    def get(self, path: str, summary: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.add("GET", path, summary, **options)

    def post(self, path: str, summary: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.add("POST", path, summary, **options)

    def put(self, path: str, summary: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.add("PUT", path, summary, **options)

    def delete(self, path: str, summary: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.add("DELETE", path, summary, **options)
