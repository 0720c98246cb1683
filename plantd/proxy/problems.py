"""RFC 9457 problem details: every error the proxy answers, with the CLI's codes.

A problem is ``application/problem+json``: ``type`` (``urn:plantd:problem:<code>``),
``title``, ``status``, ``detail`` (one line naming what was wrong), plus ``code`` (the wire
error code, as services send it) and ``exit_code`` (what ``plant`` would exit with for the
same failure, :mod:`plantd.exitcodes`) and the refusal's extra fields (``field``,
``current_revision`` ...). The HTTP status follows from the exit code, so the proxy and the
CLI classify every failure alike; no handler ever answers a bare 500 with a traceback.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from aiohttp import web

from plantd.exitcodes import ExitCode, exit_code_for, exit_code_for_error

__all__ = ["PROBLEM_CONTENT_TYPE", "PROBLEM_SCHEMA", "Problem", "problem_for"]

PROBLEM_CONTENT_TYPE = "application/problem+json"

#: exit code -> HTTP status
_STATUS = {
    ExitCode.REJECTED: 422,
    ExitCode.USAGE: 400,
    ExitCode.UNREACHABLE: 502,
    ExitCode.NOT_FOUND: 404,
    ExitCode.AUTH: 403,
    ExitCode.CONFLICT: 409,
    ExitCode.TIMEOUT: 504,
    ExitCode.UNKNOWN_SERVICE: 503,
}
#: wire codes whose HTTP status is more precise than their exit code's
_CODE_STATUS = {
    "unauthorized": 401,
    "limit_exceeded": 413,
    "reply_too_large": 502,
    "unknown_service": 404,
}
#: HTTP status -> the exit code a client of the proxy should treat it as
_EXIT = {
    400: ExitCode.USAGE,
    401: ExitCode.AUTH,
    403: ExitCode.AUTH,
    404: ExitCode.NOT_FOUND,
    405: ExitCode.USAGE,
    406: ExitCode.USAGE,
    409: ExitCode.CONFLICT,
    412: ExitCode.CONFLICT,
    413: ExitCode.USAGE,
    415: ExitCode.USAGE,
    428: ExitCode.USAGE,
    429: ExitCode.REJECTED,
    502: ExitCode.UNREACHABLE,
    503: ExitCode.UNKNOWN_SERVICE,
    504: ExitCode.TIMEOUT,
}

#: JSON Schema of a problem document (the OpenAPI ``Problem`` component)
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "code", "exit_code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "code": {"type": "string", "description": "wire error code (as services send it)"},
        "exit_code": {"type": "integer", "description": "what `plant` exits with for this"},
        "field": {"type": "string", "description": "the argument at fault"},
    },
    "additionalProperties": True,
}


class Problem(Exception):
    """An error answer: raise it from a handler (or build it with :func:`problem_for`)."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        exit_code: int | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = " ".join(detail.split())
        self.exit_code = int(exit_code if exit_code is not None else _EXIT.get(status, 1))
        self.headers = headers or {}
        self.extra = {k: v for k, v in extra.items() if v is not None}

    def document(self, instance: str | None = None) -> dict[str, Any]:
        try:
            title = HTTPStatus(self.status).phrase
        except ValueError:
            title = "Error"
        doc: dict[str, Any] = {
            **self.extra,
            "type": f"urn:plantd:problem:{self.code}",
            "title": title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
            "exit_code": self.exit_code,
        }
        if instance is not None:
            doc["instance"] = instance
        return doc

    def response(self, instance: str | None = None) -> web.Response:
        return web.Response(
            status=self.status,
            body=json.dumps(self.document(instance), default=str).encode(),
            content_type=PROBLEM_CONTENT_TYPE,
            headers=self.headers,
        )


def refusal(doc: dict[str, Any]) -> Problem:
    """The problem of a service refusal ``{"success": false, "code", "error", ...}``."""
    code = str(doc.get("code", "rejected"))
    exit_code = exit_code_for_error(code)
    status = _CODE_STATUS.get(code, _STATUS.get(exit_code, 422))
    extra = {k: v for k, v in doc.items() if k not in ("success", "error", "code", "status")}
    return Problem(status, code, str(doc.get("error") or code), exit_code=int(exit_code), **extra)


def problem_for(exc: BaseException) -> Problem:
    """The problem of any exception the client or a handler raises (never a traceback)."""
    if isinstance(exc, Problem):
        return exc
    doc = getattr(exc, "doc", None)
    if isinstance(doc, dict) and isinstance(getattr(exc, "code", None), str):
        return refusal({**doc, "code": exc.code, "error": str(exc)})  # type: ignore[attr-defined]
    exit_code = exit_code_for(exc)
    code = {
        ExitCode.UNREACHABLE: "broker_unreachable",
        ExitCode.TIMEOUT: "timeout",
        ExitCode.UNKNOWN_SERVICE: "service_unavailable",
        ExitCode.AUTH: "forbidden",
        ExitCode.USAGE: "bad_request",
        ExitCode.NOT_FOUND: "not_found",
        ExitCode.CONFLICT: "conflict",
    }.get(exit_code, "bad_gateway")
    status = _STATUS.get(exit_code, 502)
    if type(exc).__name__ == "UnknownService":
        code, status = "unknown_service", 404
    elif exit_code == ExitCode.REJECTED:  # a broker/protocol failure behind the proxy
        status = 502
    return Problem(status, code, str(exc) or type(exc).__name__, exit_code=int(exit_code))
