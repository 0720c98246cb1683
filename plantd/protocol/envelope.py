"""The reply envelope every plantd service sends, defined once (I/O-free).

A plantd reply body is one JSON document:

* success: ``{"success": true, "data": ...}``
* refusal: ``{"success": false, "error": "<one line for people>", "code": "<wire code>", ...}``
  where extra fields say more (``field`` names the argument at fault, ``revision``...).

Wire error codes are stable strings; the ones every service may send are named below. How a
client turns them into exceptions is :func:`plantd.client.reply.decode_document`
(``RequestRejected`` keeps ``code``), and how the CLI turns those into exit codes is
:data:`plantd.exitcodes.ERROR_CODE_EXITS`.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BAD_REQUEST",
    "CONFLICT",
    "INTERNAL",
    "INVALID_ARGUMENT",
    "INVALID_JSON",
    "NOT_FOUND",
    "REPLY_TOO_LARGE",
    "UNKNOWN_OPERATION",
    "error_doc",
    "is_refusal",
    "ok",
]

#: the request could not be understood at all (empty body, not an object)
BAD_REQUEST = "bad_request"
#: the request body is not JSON
INVALID_JSON = "invalid_json"
#: an argument is invalid; ``field`` names it
INVALID_ARGUMENT = "invalid_argument"
#: the service has no such operation
UNKNOWN_OPERATION = "unknown_operation"
#: the handler failed unexpectedly
INTERNAL = "internal"
#: the reply would exceed the broker's message limit
REPLY_TOO_LARGE = "reply_too_large"
#: the thing asked for does not exist (key, scope, ...)
NOT_FOUND = "not_found"
#: a compare-and-set lost: someone else wrote first (``revision`` says the current one)
CONFLICT = "conflict"


def ok(data: Any) -> dict[str, Any]:
    """The success document carrying ``data``."""
    return {"success": True, "data": data}


def error_doc(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The refusal document: ``message`` for people, ``code`` for programs, ``extra`` fields."""
    return {"success": False, "error": message, "code": code, **extra}


def is_refusal(doc: Any) -> bool:
    """Whether ``doc`` is a refusal document (``{"success": false, ...}``)."""
    return isinstance(doc, dict) and doc.get("success") is False
