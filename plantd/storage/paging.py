"""Paged replies of the logger and metric services (the shared contract of docs/protocol.md).

A page is bounded twice: by ``limit`` (records) and by bytes (:data:`REPLY_BUDGET`, well below
the broker's 1 MiB message limit), so no request can make a reply the broker or the worker SDK
refuses. Cursors are keys of the query's own order (``[ts, id]`` for records, names for
channels): stable while rows keep arriving, since a page starts strictly after the last row the
client has seen, whatever arrived in between.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from plantd.protocol import jsoncodec
from plantd.protocol.envelope import INVALID_ARGUMENT, error_doc, ok

__all__ = [
    "REPLY_BUDGET",
    "QueryError",
    "bad_field",
    "describe",
    "fit_page",
    "follow_pages",
    "invalid_argument",
    "json_type",
    "parse_limit",
    "parse_record_cursor",
    "parse_stream",
    "serve_pages",
]

#: bytes of records in one reply (the envelope adds well under 1 KiB); the broker limit is 1 MiB
REPLY_BUDGET = 768 * 1024


_JSON_TYPES = {
    dict: "object",
    list: "array",
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


class QueryError(ValueError):
    """A request argument is invalid: ``invalid_argument`` naming ``field`` (``extra``: more
    fields of the error reply, e.g. the ``maximum`` of ``limit``)."""

    def __init__(self, message: str, field: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.field = field
        self.extra = extra


def json_type(value: Any) -> str:
    """The JSON name of ``value``'s type ("object", "string", ...), for error messages."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


def describe(value: Any) -> str:
    """A request value in an error message: its JSON type and (the start of) its JSON text."""
    return f"{json_type(value)} {json.dumps(value, default=str)[:60]}"


def bad_field(name: str, expected: str, value: Any) -> QueryError:
    """The error of field ``name`` holding ``value`` where ``expected`` was wanted."""
    return QueryError(f"field '{name}' must be {expected}, got {describe(value)}", name)


def invalid_argument(exc: QueryError) -> dict[str, Any]:
    """The error reply for ``exc`` (``field`` names the argument, as the state service does)."""
    field = {"field": exc.field} if exc.field else {}
    return error_doc(INVALID_ARGUMENT, str(exc), **field, **exc.extra)


def parse_limit(params: dict[str, Any], default: int, maximum: int) -> int:
    """``limit``: an integer 1..maximum (absent = ``default``); QueryError naming ``limit``
    and its ``maximum``. Every paged service reads its page size here."""
    limit = params.get("limit")
    if limit is None:
        return default
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= maximum:
        raise QueryError(
            f"field 'limit' must be >= 1 and <= {maximum} (the maximum page size),"
            f" got {describe(limit)}",
            "limit",
            maximum=maximum,
        )
    return limit


def parse_record_cursor(value: Any, shape: str = "[ts, id]") -> tuple[float, int] | None:
    """``after`` of a record stream ordered by time: ``[ts, id]``, a previous page's ``next``."""
    if value is None:
        return None
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and isinstance(value[0], int | float)
        and not isinstance(value[0], bool)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    ):
        return float(value[0]), value[1]
    raise bad_field("after", f"the {shape} cursor of a previous page's next", value)


def parse_stream(params: dict[str, Any]) -> tuple[bool, int | None]:
    """``stream`` (bool) and ``max_records`` (total records of a stream, absent = all)."""
    stream = params.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_field("stream", "true or false", stream)
    total = params.get("max_records")
    if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total < 1):
        raise bad_field("max_records", "an integer >= 1", total)
    return stream, total


def fit_page(
    docs: Sequence[dict[str, Any]],
    budget: int = REPLY_BUDGET,
    shrink: Callable[[dict[str, Any], int], dict[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], bool]:
    """The leading ``docs`` whose JSON fits in ``budget`` bytes, and whether any were cut.

    A first document larger than the whole budget would make every page empty: it goes out
    through ``shrink(doc, budget)`` (which must make it fit) instead of never.
    """
    out: list[dict[str, Any]] = []
    size = 0
    for doc in docs:
        n = len(jsoncodec.dumps(doc, default=str)) + 1
        if size + n > budget:
            if out or shrink is None:
                return out, True
            doc = shrink(doc, budget)
            n = len(jsoncodec.dumps(doc, default=str)) + 1
            if n > budget:
                raise ValueError("shrink() did not make the document fit the budget")
        out.append(doc)
        size += n
    return out, False


async def follow_pages(
    page: Callable[[Any, int], Awaitable[dict[str, Any]]],
    items: str,
    limit: int,
    after: Any,
    total: int | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Pages of ``page(after, limit)`` following ``next``, up to ``total`` items if given.

    The last page says ``more: false`` unless ``total`` ended the run first (then its
    ``next`` continues where the stream stopped).
    """
    sent = 0
    while True:
        want = limit if total is None else min(limit, total - sent)
        doc = await page(after, want)
        sent += len(doc[items])
        yield doc
        if not doc["more"] or (total is not None and sent >= total):
            return
        after = tuple(doc["next"])


async def serve_pages(
    doc: Any,
    page: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
    pages: Callable[[dict[str, Any], int | None], AsyncIterator[dict[str, Any]]],
) -> AsyncIterator[dict[str, Any]]:
    """The replies of a paged operation: ``page(params)``, or with ``stream: true`` every
    ``pages(params, max_records)`` as a reply part. A bad argument is raised before the first
    page (arguments are checked first) and answered as ``invalid_argument``."""
    params = doc if isinstance(doc, dict) else {}
    try:
        stream, total = parse_stream(params)
        if not stream:
            yield ok(await page(params))
            return
        async for one in pages(params, total):
            yield ok(one)
    except QueryError as exc:
        yield invalid_argument(exc)
