"""`plant log tail/query` print any record, even one whose time is out of range.

A record with ``ts`` 1e20 or infinity (anyone can publish on the log bus) made the table
formatter raise OverflowError from time.localtime, ending `plant log tail -f`.
"""

from __future__ import annotations

import pytest

from plantd.cli.log import format_record


@pytest.mark.parametrize("ts", [1e20, float("inf"), "1e400", -1e20])
def test_a_time_out_of_range_is_printed_as_given(ts: object) -> None:
    line = format_record({"ts": ts, "level": "info", "service": "svc", "msg": "hello"})
    assert line == f"{ts} INFO     svc: hello"


def test_a_normal_time_is_formatted() -> None:
    line = format_record({"ts": 0.5, "level": "warning", "service": "svc", "msg": "m"})
    assert line.endswith(".500 WARNING  svc: m")
    assert line[:4].isdigit()
