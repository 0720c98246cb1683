"""The HTTP/JSON endpoints of the proxy, declared in :data:`ROUTES` (:mod:`.routes`).

Every handler translates one HTTP request into MDP requests with the async client
(:class:`plantd.client.Client`, :class:`plantd.client.state.StateClient`) and the reply back;
refusals and transport failures become problem details (:mod:`.problems`). List-like
endpoints pass the service's paging through unchanged: ``limit`` and ``after`` in the query,
``more`` and ``next`` in the reply (the shared paging contract).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from plantd.client import errors
from plantd.client.client import Client
from plantd.client.reply import decode_document
from plantd.client.state import StateClient, reply_data
from plantd.proxy.problems import Problem, problem_for
from plantd.proxy.routes import JSON, NDJSON, SSE, Param, Request, RouteTable
from plantd.proxy.sse import KEEPALIVE_SECONDS, EventStream, last_event_id
from plantd.vocabulary import LOGGER_SERVICE, METRIC_SERVICE, STATE_SERVICE

__all__ = ["ROUTES", "Api"]

ROUTES = RouteTable()

OBJECT: dict[str, Any] = {"type": "object", "additionalProperties": True}
ANY: dict[str, Any] = {}
PAGE: dict[str, Any] = {
    "type": "object",
    "required": ["more"],
    "properties": {"more": {"type": "boolean"}, "next": {}},
    "additionalProperties": True,
}
#: one Server-Sent Event (``data`` is a JSON document)
SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "event": {"type": "string"},
        "data": {"type": "string"},
    },
}
ETAG = {"ETag": "the key's mod_revision, quoted"}

LIMIT = Param("limit", "integer", minimum=1, description="page size (the service caps it)")
NAME_AFTER = Param("after", description="cursor: the `next` of the previous page")
JSON_AFTER = Param("after", description="cursor: the `next` of the previous page, as JSON")
TIMEOUT = Param(
    "timeout", "number", minimum=0.05, maximum=300, description="seconds to wait for a reply"
)
SCOPE = Param("scope", where="path", required=True, description="state scope")
KEY = Param("key", where="path", required=True, description="key in the scope")
LOG_FILTERS = [
    Param("since", description="epoch seconds or ISO-8601"),
    Param("until", description="epoch seconds or ISO-8601"),
    Param("level", description="minimum level (debug, info, warning, error, critical)"),
    Param("service", description="service name, or a glob with * ? ["),
    Param("text", description="substring of the message or fields (case-insensitive)"),
    Param("host"),
    Param("pid", "integer", minimum=0),
    Param("logger"),
    Param("source", enum=("log", "event")),
]
#: how often a log tail asks the logger for new records
TAIL_POLL_SECONDS = 0.25


@dataclass
class Api:
    """What the handlers share: the MDP client, the state bus and the daemon's health."""

    client: Client
    state_bus: str
    timeout: float
    health: Callable[[], Awaitable[tuple[int, bytes]]]
    metrics: Callable[[], bytes]
    stopping: asyncio.Event
    openapi: Callable[[], dict[str, Any]]
    docs_page: bytes

    @property
    def state(self) -> StateClient:
        return StateClient(self.client)

    async def call(self, service: str, operation: str, doc: dict[str, Any]) -> Any:
        """The ``data`` of a service call (refusals raise, see :func:`problem_for`)."""
        return reply_data(await self.client.call(service, operation, doc, timeout=self.timeout))


def ok(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(data, separators=(",", ":"), default=str).encode(),
        content_type=JSON,
        headers=headers,
    )


def _filled(params: dict[str, Any], *names: str) -> dict[str, Any]:
    return {n: params[n] for n in names if params.get(n) not in (None, "")}


def _json_cursor(params: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    raw = params.get("after")
    if raw in (None, ""):
        return doc
    try:
        doc["after"] = json.loads(raw)
    except ValueError:
        raise Problem(
            400,
            "invalid_argument",
            "query parameter 'after': expected the JSON `next` of the previous page, got"
            f" {raw[:60]!r}",
            field="after",
        ) from None
    return doc


# --------------------------------------------------------------------------- service plane


@ROUTES.get("/healthz", "Health of the proxy", tag="daemon", public=True,
            responses={"application/health+json": OBJECT}, also=(503,))  # fmt: skip
async def healthz(api: Api, req: Request) -> web.StreamResponse:
    status, body = await api.health()
    return web.Response(status=status, body=body, content_type="application/health+json")


@ROUTES.get("/metrics", "Prometheus metrics of the proxy", tag="daemon", public=True,
            responses={"text/plain": {"type": "string"}})  # fmt: skip
async def metrics(api: Api, req: Request) -> web.StreamResponse:
    return web.Response(body=api.metrics(), content_type="text/plain", charset="utf-8")


@ROUTES.get("/openapi.json", "This API as an OpenAPI 3.1 document", tag="daemon", public=True,
            responses={JSON: OBJECT})  # fmt: skip
async def openapi(api: Api, req: Request) -> web.StreamResponse:
    return ok(api.openapi())


@ROUTES.get("/docs", "Browsable API documentation (local assets only)", tag="daemon",
            public=True, responses={"text/html": {"type": "string"}})  # fmt: skip
async def docs(api: Api, req: Request) -> web.StreamResponse:
    return web.Response(body=api.docs_page, content_type="text/html", charset="utf-8")


@ROUTES.get("/v1/services", "Services the broker knows (mmi.services)", tag="broker",
            responses={JSON: OBJECT})  # fmt: skip
async def services(api: Api, req: Request) -> web.StreamResponse:
    return ok(await api.client.mmi_all("mmi.services", timeout=api.timeout))


@ROUTES.get("/v1/workers", "Connected workers (mmi.workers)", tag="broker",
            responses={JSON: OBJECT})  # fmt: skip
async def workers(api: Api, req: Request) -> web.StreamResponse:
    return ok(await api.client.mmi_all("mmi.workers", timeout=api.timeout))


@ROUTES.get("/v1/broker", "Broker status (mmi.broker)", tag="broker", responses={JSON: OBJECT})
async def broker(api: Api, req: Request) -> web.StreamResponse:
    return ok(await api.client.mmi("mmi.broker", timeout=api.timeout))


@ROUTES.post(
    "/v1/services/{service}/{operation}",
    "Call any service operation",
    tag="broker",
    params=[
        Param("service", where="path", required=True, description="MDP service name"),
        Param("operation", where="path", required=True, description="operation name"),
        TIMEOUT,
    ],
    body=ANY,
    body_required=False,
    responses={JSON: ANY, NDJSON: {"type": "string"}},
    description="The body (default `{}`) is sent as `[operation, JSON]`; the reply document "
    "comes back as it is. A service that streams (PARTIAL replies) is answered with "
    "`application/x-ndjson`, one reply document per line, as the parts arrive.",
)
async def call_service(api: Api, req: Request) -> web.StreamResponse:
    from plantd.client.reply import call_body, service_name

    service, operation = req.params["service"], req.params["operation"]
    if service.startswith("mmi."):
        raise Problem(
            400, "invalid_argument", "path parameter 'service': mmi.* is the broker's; use"
            " /v1/services, /v1/workers or /v1/broker", field="service",
        )  # fmt: skip
    try:
        service_name(service)
    except errors.ProtocolError as exc:
        raise Problem(400, "invalid_argument", f"path parameter 'service': {exc}",
                      field="service") from None  # fmt: skip
    body = await req.json_body(required=False)
    timeout = req.params.get("timeout", api.timeout)
    parts = api.client.stream(service, *call_body(operation, body), timeout=timeout)
    first = await anext(parts)
    try:
        second = await anext(parts)
    except StopAsyncIteration:
        doc = decode_document(first)
        return ok(doc)
    # a streaming reply: every part as one NDJSON line, as it arrives
    resp = web.StreamResponse(headers={"Content-Type": NDJSON, "Cache-Control": "no-cache"})
    await resp.prepare(req.http)
    try:
        for part in (first, second):
            await resp.write(_ndjson(part))
        async for part in parts:
            await resp.write(_ndjson(part))
    except errors.PlantdError as exc:  # too late for a status: the last line says it
        await resp.write(json.dumps(problem_for(exc).document()).encode() + b"\n")
    await resp.write_eof()
    return resp


def _ndjson(part: list[bytes]) -> bytes:
    body = part[-1] if part else b"null"
    try:
        doc = json.loads(body)
    except ValueError:
        doc = {"success": False, "code": "bad_gateway", "error": "reply part is not JSON"}
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


# --------------------------------------------------------------------------- state


def _etag(revision: Any) -> str:
    return f'"{revision}"'


def _if_match(http: web.Request) -> int | str | None:
    """``If-Match``: a revision (``"5"``, ``5``, ``W/"5"``), ``*`` or None."""
    raw = http.headers.get("If-Match")
    if raw is None:
        return None
    text = raw.strip()
    if text == "*":
        return "*"
    text = text.removeprefix("W/").strip('"')
    if not text.isdigit():
        raise Problem(400, "invalid_argument",
                      f"header 'If-Match': expected a revision (an ETag), got {raw[:40]!r}",
                      field="If-Match")  # fmt: skip
    return int(text)


def _if_none_match(http: web.Request) -> bool:
    raw = http.headers.get("If-None-Match")
    if raw is None:
        return False
    if raw.strip() != "*":
        raise Problem(400, "invalid_argument",
                      "header 'If-None-Match': only '*' (create only) is supported",
                      field="If-None-Match")  # fmt: skip
    return True


def _precondition_failed(exc: errors.RequestRejected) -> Problem:
    current = exc.doc.get("current_revision", exc.doc.get("revision", 0))
    problem = problem_for(exc)
    return Problem(
        412,
        "conflict",
        f"precondition failed: {exc}",
        exit_code=problem.exit_code,
        headers={"ETag": _etag(current)} if current else {},
        **{**problem.extra, "current_revision": current},
    )


@ROUTES.get("/v1/state/scopes", "List scopes (paged)", tag="state",
            params=[Param("prefix"), LIMIT, NAME_AFTER], responses={JSON: PAGE})  # fmt: skip
async def list_scopes(api: Api, req: Request) -> web.StreamResponse:
    return ok(await api.call(STATE_SERVICE, "list-scopes",
                             _filled(req.params, "prefix", "limit", "after")))  # fmt: skip


@ROUTES.delete("/v1/state/scopes/{scope}", "Delete a scope and every key in it", tag="state",
               params=[SCOPE], responses={JSON: OBJECT})  # fmt: skip
async def delete_scope(api: Api, req: Request) -> web.StreamResponse:
    return ok(await api.call(STATE_SERVICE, "delete-scope", {"service": req.params["scope"]}))


@ROUTES.get(
    "/v1/state/scopes/{scope}/keys",
    "List the keys of a scope (paged)",
    tag="state",
    params=[SCOPE, Param("prefix"), Param("glob"), Param("values", "boolean"), LIMIT, NAME_AFTER],
    responses={JSON: PAGE},
)
async def list_keys(api: Api, req: Request) -> web.StreamResponse:
    doc = {
        "service": req.params["scope"],
        **_filled(req.params, "prefix", "glob", "limit", "after"),
    }
    if "values" in req.params:
        doc["values"] = req.params["values"]
    return ok(await api.call(STATE_SERVICE, "list-keys", doc))


@ROUTES.get("/v1/state/scopes/{scope}/keys/{key}", "Get a key (ETag = its mod_revision)",
            tag="state", params=[SCOPE, KEY], responses={JSON: OBJECT}, headers=ETAG)  # fmt: skip
async def get_key(api: Api, req: Request) -> web.StreamResponse:
    data = await api.call(STATE_SERVICE, "state-get",
                          {"service": req.params["scope"], "key": req.params["key"]})  # fmt: skip
    return ok(data, headers={"ETag": _etag(data.get("mod_revision"))})


@ROUTES.put(
    "/v1/state/scopes/{scope}/keys/{key}",
    "Set a key (If-Match: compare-and-set; If-None-Match: * create only)",
    tag="state",
    params=[
        SCOPE,
        KEY,
        Param("ttl", "number", minimum=0.001, description="seconds until the key expires"),
        Param("If-Match", where="header", description="the ETag (mod_revision) it must have"),
        Param("If-None-Match", where="header", enum=("*",), description="'*': only if absent"),
    ],
    body=ANY,
    responses={JSON: OBJECT},
    also=(201,),
    headers=ETAG,
    description="The body is the new value (any JSON). 201 when the key was created. A failed "
    "precondition is 412 with `current_revision` (also as the ETag).",
)
async def set_key(api: Api, req: Request) -> web.StreamResponse:
    value = await req.json_body()
    doc: dict[str, Any] = {"service": req.params["scope"], "key": req.params["key"], "value": value}
    if "ttl" in req.params:
        doc["ttl"] = req.params["ttl"]
    match, absent = _if_match(req.http), _if_none_match(req.http)
    if match is not None and absent:
        raise Problem(400, "invalid_argument", "If-Match and If-None-Match: send one of them",
                      field="If-Match")  # fmt: skip
    try:
        if match == "*":
            current = await api.call(STATE_SERVICE, "state-get",
                                     {"service": doc["service"], "key": doc["key"]})  # fmt: skip
            doc["prev_revision"] = current["mod_revision"]
        elif match is not None:
            doc["prev_revision"] = match
        if absent:
            doc["if_absent"] = True
        data = await api.call(STATE_SERVICE, "state-set", doc)
    except errors.RequestRejected as exc:
        if exc.code == "conflict" or (match == "*" and exc.code == "not_found"):
            raise _precondition_failed(exc) from None
        raise
    status = 201 if data.get("version") == 1 else 200
    return ok(data, status, headers={"ETag": _etag(data.get("mod_revision"))})


@ROUTES.delete(
    "/v1/state/scopes/{scope}/keys/{key}",
    "Delete a key (If-Match: only at that revision)",
    tag="state",
    params=[SCOPE, KEY, Param("If-Match", where="header", description="the ETag it must have")],
    responses={JSON: OBJECT},
)
async def delete_key(api: Api, req: Request) -> web.StreamResponse:
    doc: dict[str, Any] = {"service": req.params["scope"], "key": req.params["key"]}
    match = _if_match(req.http)
    if match == "*":
        match = None  # the key must exist: delete says not_found otherwise
    if match is not None:
        doc["prev_revision"] = match
    try:
        return ok(await api.call(STATE_SERVICE, "delete", doc))
    except errors.RequestRejected as exc:
        if exc.code == "conflict":
            raise _precondition_failed(exc) from None
        raise


@ROUTES.post(
    "/v1/state/txn",
    "Several sets, deletes and checks as one revision",
    tag="state",
    body={
        "type": "object",
        "required": ["ops"],
        "properties": {
            "ops": {"type": "array", "items": {"type": "object"}},
            "scope": {"type": "string"},
            "request_id": {"type": "string"},
        },
    },
    responses={JSON: OBJECT},
    description="`ops`: `{op: set|delete|check, scope?, key, value?, ttl?, prev_revision?, "
    "if_absent?}`; `scope` is the default scope of the ops. A failed compare is 409 with "
    "`index`, and nothing is applied.",
)
async def txn(api: Api, req: Request) -> web.StreamResponse:
    body = await req.json_body()
    if not isinstance(body, dict):
        raise Problem(400, "invalid_argument", "request body: expected a JSON object",
                      field="body")  # fmt: skip
    doc = {k: v for k, v in body.items() if k != "scope"}
    if "scope" in body:
        doc["service"] = body["scope"]
    return ok(await api.call(STATE_SERVICE, "txn", doc))


@ROUTES.get(
    "/v1/state/watch",
    "Committed changes as Server-Sent Events (id = revision)",
    tag="state",
    params=[
        Param("scope", description="only this scope"),
        Param("key", description="only this key"),
        Param("since", "integer", minimum=0, description="replay the changes after this revision"),
        Param("Last-Event-ID", where="header", description="resume after this revision"),
    ],
    responses={SSE: SSE_EVENT},
    endless=True,
    description="Each event: `id` = revision, `event` = op (set, delete, create-scope, "
    "delete-scope), `data` = the change. Without `since`/`Last-Event-ID` from now on. A "
    "reconnect with `Last-Event-ID` continues after that revision: no gap, no duplicate "
    "(the events of one txn share a revision).",
)
async def watch(api: Api, req: Request) -> web.StreamResponse:
    since = last_event_id(req.http, req.params.get("since"))
    # one history page first: a bad scope or a compacted start is a problem, not a stream
    await api.state.watch_page(since, scope=req.params.get("scope"), limit=1)
    stream = await EventStream(req.http).open()
    w = api.state.watch(since, bus=api.state_bus, scope=req.params.get("scope"),
                        key=req.params.get("key"))  # fmt: skip
    await stream.comment(f"watching from revision {since if since is not None else 'now'}")

    async def events() -> AsyncIterator[tuple[Any, str | None, int | None]]:
        async for ev in w:
            yield dict(ev.data), ev.op, ev.revision

    await _pump(api, stream, events())
    return stream.response


async def _pump(
    api: Api, stream: EventStream, events: AsyncIterator[tuple[Any, str | None, int | None]]
) -> None:
    """Send ``events`` until the client leaves or the daemon stops; keep-alives while idle."""
    it = aiter(events)
    pending: asyncio.Task[Any] | None = None
    stop = asyncio.ensure_future(api.stopping.wait())
    try:
        while True:
            pending = pending or asyncio.ensure_future(anext(it))
            done, _ = await asyncio.wait({pending, stop}, timeout=KEEPALIVE_SECONDS,
                                         return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            if stop in done:
                return
            if pending not in done:
                await stream.comment()
                continue
            task, pending = pending, None
            try:
                data, event, event_id = task.result()
            except StopAsyncIteration:
                return
            except errors.PlantdError as exc:
                await stream.send(problem_for(exc).document(), event="error")
                return
            await stream.send(data, event=event, id=event_id)
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    finally:
        stop.cancel()
        if pending is not None:
            pending.cancel()
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except (RuntimeError, errors.PlantdError):
                pass


# --------------------------------------------------------------------------- logs


@ROUTES.get(
    "/v1/logs",
    "Query stored log records and events (paged)",
    tag="logs",
    params=[*LOG_FILTERS, Param("order", enum=("asc", "desc")), LIMIT, JSON_AFTER],
    responses={JSON: PAGE},
)
async def query_logs(api: Api, req: Request) -> web.StreamResponse:
    names = [p.name for p in LOG_FILTERS] + ["order", "limit"]
    doc = _json_cursor(req.params, _filled(req.params, *names))
    return ok(await api.call(LOGGER_SERVICE, "query", doc))


@ROUTES.get(
    "/v1/logs/tail",
    "Follow the stored log as Server-Sent Events (id = the record's cursor)",
    tag="logs",
    params=[
        *LOG_FILTERS[2:],
        Param("lines", "integer", minimum=0, maximum=1000, description="records before now (10)"),
        Param("Last-Event-ID", where="header", description="resume after this record"),
    ],
    responses={SSE: SSE_EVENT},
    endless=True,
    description="Each event: `id` = `[ts, id]` of the record (what `after` takes), `event` = "
    "`record`, `data` = the record. A reconnect with `Last-Event-ID` continues after it.",
)
async def tail_logs(api: Api, req: Request) -> web.StreamResponse:
    names = [p.name for p in LOG_FILTERS[2:]]
    filters = _filled(req.params, *names)
    raw = req.http.headers.get("Last-Event-ID")
    cursor: Any = None
    backlog: list[dict[str, Any]] = []
    if raw:
        cursor = _json_cursor({"after": raw}, {})["after"]
        # a bad cursor or filter is a problem before the stream opens
        await api.call(LOGGER_SERVICE, "query", {**filters, "order": "asc", "limit": 1,
                                                 "after": cursor})  # fmt: skip
    else:
        lines = req.params.get("lines", 10)
        newest = await api.call(LOGGER_SERVICE, "query",
                                {**filters, "order": "desc", "limit": max(lines, 1)})  # fmt: skip
        records = list(newest.get("records") or [])
        if records:
            cursor = [records[0]["ts"], records[0]["id"]]
        backlog = list(reversed(records[:lines]))
    stream = await EventStream(req.http).open()

    async def events() -> AsyncIterator[tuple[Any, str | None, Any]]:
        nonlocal cursor
        for record in backlog:
            yield record, "record", _record_id(record)
        while True:
            doc = {**filters, "order": "asc", "limit": 1000}
            if cursor is not None:
                doc["after"] = cursor
            page = await api.call(LOGGER_SERVICE, "query", doc)
            for record in page.get("records") or []:
                cursor = [record["ts"], record["id"]]
                yield record, "record", _record_id(record)
            if not page.get("more"):
                await asyncio.sleep(TAIL_POLL_SECONDS)

    await _pump(api, stream, events())
    return stream.response


def _record_id(record: dict[str, Any]) -> str:
    return json.dumps([record["ts"], record["id"]], separators=(",", ":"))


# --------------------------------------------------------------------------- metrics


@ROUTES.get("/v1/metric/channels", "Known metric channels (paged)", tag="metric",
            params=[LIMIT, JSON_AFTER], responses={JSON: PAGE})  # fmt: skip
async def metric_channels(api: Api, req: Request) -> web.StreamResponse:
    doc = _json_cursor(req.params, _filled(req.params, "limit"))
    return ok(await api.call(METRIC_SERVICE, "list", doc))


@ROUTES.get(
    "/v1/metric/latest",
    "Latest sample of each channel (paged)",
    tag="metric",
    params=[Param("device", description="glob"), Param("channel", description="glob"), LIMIT,
            JSON_AFTER],
    responses={JSON: PAGE},
)  # fmt: skip
async def metric_latest(api: Api, req: Request) -> web.StreamResponse:
    doc = _json_cursor(req.params, _filled(req.params, "device", "channel", "limit"))
    return ok(await api.call(METRIC_SERVICE, "latest", doc))


@ROUTES.get(
    "/v1/metric/range",
    "Samples of one channel over time (paged)",
    tag="metric",
    params=[
        Param("device", required=True),
        Param("channel", required=True),
        Param("since", description="epoch seconds or ISO-8601"),
        Param("until", description="epoch seconds or ISO-8601"),
        Param("order", enum=("asc", "desc")),
        LIMIT,
        JSON_AFTER,
    ],
    responses={JSON: PAGE},
)
async def metric_range(api: Api, req: Request) -> web.StreamResponse:
    names = ("device", "channel", "since", "until", "order", "limit")
    doc = _json_cursor(req.params, _filled(req.params, *names))
    return ok(await api.call(METRIC_SERVICE, "range", doc))
