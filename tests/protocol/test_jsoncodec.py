"""plantd.protocol.jsoncodec agrees with the standard library value for value."""

from __future__ import annotations

import datetime
import json
import math
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plantd.protocol import jsoncodec

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()  # unbounded: big integers must survive
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(JSON_VALUES)
def test_round_trip_equals_stdlib(value: object) -> None:
    text = json.dumps(value)
    assert jsoncodec.loads(text.encode()) == json.loads(text)
    assert jsoncodec.loads(text) == json.loads(text)
    assert json.loads(jsoncodec.dumps(value)) == value
    assert json.loads(jsoncodec.dumps_strict(value)) == value


@pytest.mark.parametrize(
    "text",
    [
        "123456789012345678901234567890",
        "-9223372036854775809",
        "18446744073709551616",
        '{"a":[1,99999999999999999999999]}',
        '"12345678901234567890 inside a string"',
    ],
)
def test_big_integers_stay_exact(text: str) -> None:
    assert jsoncodec.loads(text.encode()) == json.loads(text)
    assert type(jsoncodec.loads(text)) is type(json.loads(text))
    value = json.loads(text)
    assert json.loads(jsoncodec.dumps(value)) == value
    assert json.loads(jsoncodec.dumps_strict(value)) == value


@pytest.mark.parametrize(
    "data", [b"{", b'{"a":1,}', b"\xff", b"[1] x", b"", b'{"a":"\\x"}', b"nul"]
)
def test_invalid_json_raises_as_stdlib(data: bytes) -> None:
    with pytest.raises(ValueError) as ours:
        jsoncodec.loads(data)
    with pytest.raises(ValueError) as std:
        json.loads(data)
    assert type(ours.value) is type(std.value)
    assert str(ours.value) == str(std.value)


def test_nan_and_lone_surrogates_parse_as_stdlib_does() -> None:
    assert math.isnan(jsoncodec.loads(b'{"v":NaN}')["v"])
    assert jsoncodec.loads(b'"\\ud800"') == "\ud800"


def test_strict_refuses_what_is_not_a_json_value() -> None:
    @dataclass
    class Point:
        x: int

    for bad in (float("nan"), [1, float("inf")], {"t": datetime.datetime(2026, 1, 1)}):
        with pytest.raises((TypeError, ValueError)):
            jsoncodec.dumps_strict(bad)
    with pytest.raises(TypeError):
        jsoncodec.dumps_strict(Point(1))
    assert jsoncodec.dumps_strict({"n": None}) == b'{"n":null}'


def test_dumps_is_compact_utf8_with_default() -> None:
    assert jsoncodec.dumps({"a": [1, "é"]}) == '{"a":[1,"é"]}'.encode()
    assert jsoncodec.dumps({"t": {1, 2}.__class__}, default=str) == b'{"t":"<class \'set\'>"}'
    assert jsoncodec.dumps({1: "int key"}) == b'{"1":"int key"}'  # as json.dumps does
    assert jsoncodec.dumps(float("nan")) == b"null"  # valid JSON, never the NaN literal


def test_too_deep_nesting_is_a_value_error_not_a_crash() -> None:
    deep = b"[" * 5000 + b"]" * 5000
    with pytest.raises(ValueError, match="nested too deeply"):
        jsoncodec.loads(deep)
    value: list = []
    for _ in range(5000):
        value = [value]
    with pytest.raises(ValueError, match="nested"):
        jsoncodec.dumps_strict(value)
    with pytest.raises(ValueError, match="nested too deeply"):
        jsoncodec.dumps(value)
    # parsed (the stdlib goes past orjson's 255 levels), but not accepted as a value to store:
    # what is stored must fit in a reply, wrapped in a few more levels
    deep = jsoncodec.loads(b"[" * 300 + b"]" * 300)
    with pytest.raises(ValueError, match=f"deeper than {jsoncodec.MAX_DEPTH} levels"):
        jsoncodec.dumps_strict(deep)
    ok = jsoncodec.loads(b"[" * 250 + b"]" * 250)
    assert jsoncodec.loads(jsoncodec.dumps({"data": {"value": ok}})) == {"data": {"value": ok}}
