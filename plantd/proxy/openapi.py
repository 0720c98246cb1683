"""The OpenAPI 3.1 document of the proxy, generated from :data:`plantd.proxy.api.ROUTES`.

Nothing here is written beside the handlers: paths, parameters, bodies and media types come
from the same route definitions the router serves and validates with, so the document
cannot drift from what is served. Every operation documents its success responses and a
``default`` problem details response (``application/problem+json``).
"""

from __future__ import annotations

from typing import Any

from plantd import __version__
from plantd.proxy.problems import PROBLEM_CONTENT_TYPE, PROBLEM_SCHEMA
from plantd.proxy.routes import Route

__all__ = ["openapi_document"]

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def _operation(route: Route, secured: bool) -> dict[str, Any]:
    content = {media: {"schema": schema} for media, schema in route.responses.items()}
    success: dict[str, Any] = {"description": "success", "content": content}
    if route.headers:
        success["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in route.headers.items()
        }
    responses: dict[str, Any] = {str(route.status): success}
    for status in route.also:
        responses[str(status)] = success
    responses["default"] = {
        "description": "a problem (RFC 9457); `code` and `exit_code` as the CLI's",
        "content": {PROBLEM_CONTENT_TYPE: {"schema": _PROBLEM_REF}},
    }
    op: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
        "responses": responses,
    }
    if route.description:
        op["description"] = route.description
    if route.params:
        op["parameters"] = [
            {
                "name": p.name,
                "in": p.where,
                "required": p.required or p.where == "path",
                "schema": p.schema(),
                **({"description": p.description} if p.description else {}),
            }
            for p in route.params
        ]
    if route.body is not None:
        op["requestBody"] = {
            "required": route.body_required,
            "content": {"application/json": {"schema": route.body}},
        }
    if route.endless:
        op["x-endless-stream"] = True
    if route.public or not secured:
        op["security"] = []
    return op


def openapi_document(routes: list[Route], *, server: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document describing ``routes``."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, True)
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "plantd proxy",
            "version": __version__,
            "description": "HTTP/JSON gateway to a plantd installation (MDP services, state, "
            "logs, metrics). Errors are RFC 9457 problem details.",
        },
        "paths": paths,
        "components": {
            "schemas": {"Problem": PROBLEM_SCHEMA},
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an API token: `plant identity token create NAME`",
                }
            },
        },
        "security": [{"bearer": []}],
        "tags": [{"name": t} for t in dict.fromkeys(r.tag for r in routes)],
    }
    if server is not None:
        doc["servers"] = [{"url": server}]
    return doc
