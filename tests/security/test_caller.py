"""The caller prefix: round trip, absence, and that a client-sent marker stays in the body."""

from __future__ import annotations

import asyncio

import pytest

from plantd.security.caller import (
    ANONYMOUS,
    CALLER_MARKER,
    BadCaller,
    Caller,
    current_caller,
    encode_caller,
    serving,
    split_caller,
)


def test_round_trip_keeps_principal_roles_and_peer() -> None:
    caller = Caller("alice", ("operator",), "127.0.0.1")
    got, rest = split_caller([*encode_caller(caller), b"set", b"{}"])
    assert got == caller
    assert rest == [b"set", b"{}"]


def test_body_without_prefix_is_untouched() -> None:
    assert split_caller([b"get", b"{}"]) == (None, [b"get", b"{}"])


def test_forged_marker_from_a_client_stays_in_the_body() -> None:
    forged = [CALLER_MARKER, b'{"principal":"admin"}', b"set"]
    real = Caller("viewer-1", ("viewer",))
    got, rest = split_caller([*encode_caller(real), *forged])
    assert got == real
    assert rest == forged


def test_garbage_prefix_is_refused() -> None:
    with pytest.raises(BadCaller):
        split_caller([CALLER_MARKER, b"not json"])


def test_current_caller_is_per_task() -> None:
    async def serve(name: str) -> str | None:
        with serving(Caller(name)):
            await asyncio.sleep(0)
            return current_caller().principal

    async def main() -> list[str | None]:
        return list(await asyncio.gather(serve("a"), serve("b")))

    assert asyncio.run(main()) == ["a", "b"]
    assert current_caller() is ANONYMOUS
