"""Moved to :mod:`plantd.storage.paging` (shared with the metric module); kept as an alias."""

from plantd.storage.paging import (
    REPLY_BUDGET,
    QueryError,
    fit_page,
    follow_pages,
    invalid_argument,
    parse_limit,
    parse_record_cursor,
    parse_stream,
)

__all__ = [
    "REPLY_BUDGET",
    "QueryError",
    "fit_page",
    "follow_pages",
    "invalid_argument",
    "parse_limit",
    "parse_record_cursor",
    "parse_stream",
]
