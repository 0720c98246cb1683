"""Read a paged plantd operation to the end: pages or items, async or blocking.

Paging contract (docs/protocol.md, docs/state.md): a reply's ``data`` carries ``more`` and
``next``; the next request is the same document with ``after = next``. With ``stream=True``
the request carries ``"stream": true`` and the service sends every page as a reply part of
ONE request (read with ``stream()``), no round trip per page.

    async for key in pages(client, "org.plantd.State", "list-keys", {"service": "s"}, "keys"):
        ...
    for page in pages_sync(sync_client, "org.plantd.State", "export", {}, stream=True):
        ...

``item_field`` names the list in each page to yield item by item (a JSON object is yielded
as its ``(name, value)`` pairs); without it whole pages (the ``data`` objects) are yielded.
``page_size`` sets each request's ``limit``; ``total`` stops after that many items of
``item_field`` (or of ``count_field`` when whole pages are yielded), asking the last page for
no more than are left. Memory stays at one page. The client objects are taken as parameters
(``Client`` or ``SyncClient``), so this module imports neither.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from plantd.client import errors
from plantd.client.reply import call_body, decode_document

__all__ = ["MAX_PAGES", "pages", "pages_sync"]

#: a guard against a service whose cursor never advances
MAX_PAGES = 10_000_000


def _data(doc: Any) -> dict[str, Any]:
    data = doc.get("data", doc) if isinstance(doc, dict) else None
    if not isinstance(data, dict):
        raise errors.ProtocolError(f"paged reply has no data object: {str(doc)[:80]}")
    return data


def _items(data: dict[str, Any], field: str | None) -> Iterator[Any]:
    if field is None:
        yield data
        return
    value = data.get(field)
    if isinstance(value, dict):
        yield from value.items()
    elif value is not None:
        yield from value


class _Pager:
    """The requests of one paged read, without I/O: the first, then one per page with
    ``after`` = the page's ``next``, each ``limit`` = ``page_size`` or the items still wanted."""

    def __init__(
        self, doc: dict[str, Any], page_size: int | None, total: int | None, field: str | None
    ) -> None:
        self.page_size, self.left, self.field = page_size, total, field
        self.pages = 0
        self.next: dict[str, Any] | None = self._limited(doc)

    def _limited(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        sizes = [n for n in (self.page_size, self.left) if n is not None]
        if self.left is not None and self.left <= 0:
            return None
        return {**doc, "limit": min(sizes)} if sizes else doc

    def feed(self, data: dict[str, Any]) -> None:
        """Read a page's ``more``/``next`` (and its item count against ``total``)."""
        doc, self.next = self.next or {}, None
        self.pages += 1
        if self.left is not None and self.field is not None:
            self.left -= len(data.get(self.field) or ())
        if not data.get("more"):
            return
        nxt = data.get("next")
        if nxt is None or nxt == doc.get("after") or self.pages >= MAX_PAGES:
            raise errors.ProtocolError(f"paged reply says more but its cursor is stuck at {nxt!r}")
        self.next = self._limited({**doc, "after": nxt})


async def pages(
    client: Any,
    service: str,
    operation: str,
    doc: dict[str, Any] | None = None,
    item_field: str | None = None,
    *,
    stream: bool = False,
    timeout: float | None = None,
    page_size: int | None = None,
    total: int | None = None,
    count_field: str | None = None,
) -> AsyncIterator[Any]:
    """Every page (or every item of ``item_field``) of ``operation`` with a ``Client``."""
    request = dict(doc or {})
    if stream:
        body = call_body(operation, {**request, "stream": True})
        async for part in client.stream(service, *body, timeout=timeout):
            for item in _items(_data(decode_document(part)), item_field):
                yield item
        return
    pager = _Pager(request, page_size, total, item_field or count_field)
    while pager.next is not None:
        data = _data(await client.call(service, operation, pager.next, timeout=timeout))
        pager.feed(data)
        for item in _items(data, item_field):
            yield item


def pages_sync(
    client: Any,
    service: str,
    operation: str,
    doc: dict[str, Any] | None = None,
    item_field: str | None = None,
    *,
    stream: bool = False,
    timeout: float | None = None,
    page_size: int | None = None,
    total: int | None = None,
    count_field: str | None = None,
) -> Iterator[Any]:
    """:func:`pages` with a blocking ``SyncClient``."""
    request = dict(doc or {})
    if stream:
        body = call_body(operation, {**request, "stream": True})
        for part in client.stream(service, *body, timeout=timeout):
            yield from _items(_data(decode_document(part)), item_field)
        return
    pager = _Pager(request, page_size, total, item_field or count_field)
    while pager.next is not None:
        data = _data(client.call(service, operation, pager.next, timeout=timeout))
        pager.feed(data)
        yield from _items(data, item_field)
