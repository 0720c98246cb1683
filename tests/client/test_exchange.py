"""The clients' shared request loop without sockets (plantd/client/exchange.py), and the
typed MMI calls of both clients against a real broker."""

from __future__ import annotations

import asyncio

import pytest

from plantd import __version__
from plantd.client import Client, SyncClient, errors
from plantd.client.exchange import Exchange, MmiListing
from plantd.protocol import mdp
from tests.support.broker import BrokerProcess


def reply(service: bytes, *body: bytes, final: bool = True) -> list[bytes]:
    frames = mdp.encode_client_reply(mdp.Dialect.RFC18, service, list(body), final)
    assert frames is not None
    return frames


def test_parts_reset_the_deadline_and_stray_replies_are_dropped() -> None:
    ex = Exchange("svc", (b"op", b"{}"), timeout=2.0, retries=1)
    assert ex.request == mdp.encode_request(b"svc", [b"op", b"{}"])
    ex.sent(100.0)
    assert ex.time_left(101.5) == 0.5
    assert ex.received_frames(reply(b"other", b"late"), 101.5) is None  # not ours
    assert ex.time_left(101.5) == 0.5
    part = ex.received_frames(reply(b"svc", b"p1", final=False), 101.5)
    assert part is not None and part.body == [b"p1"] and not part.final
    assert ex.time_left(101.5) == 2.0  # the wait is per part
    assert not ex.timed_out()  # something was received: a stream is never replayed


def test_retries_only_before_anything_arrived() -> None:
    ex = Exchange(b"svc", (), timeout=1.0, retries=2)
    assert ex.timed_out() and ex.timed_out() and not ex.timed_out()


def test_broker_errors_raise_the_client_exceptions() -> None:
    ex = Exchange("svc", (), timeout=1.0, retries=0)
    with pytest.raises(errors.UnknownService):
        ex.received_frames(reply(b"svc", *mdp.encode_error(404, "no such service")), 0.0)
    with pytest.raises(errors.ProtocolError):
        Exchange("", (), timeout=1.0, retries=0)


def test_listing_follows_pages_and_stops_on_a_stuck_cursor() -> None:
    walk = MmiListing("mmi.workers", typed=True)
    assert walk.body() == ()
    page = {"identity": "ab", "service": "s"}
    assert walk.add({"workers": [page], "more": True, "next": "ab"})
    assert walk.body() == (b'{"after": "ab"}',)
    assert not walk.add({"workers": [page], "more": True, "next": "ab"})  # stuck: stop
    assert [w.identity for w in walk.entries] == ["ab", "ab"]
    with pytest.raises(errors.ProtocolError, match=r"workers\[0\]\.service"):
        MmiListing("mmi.workers", typed=True).add({"workers": [{"identity": "x"}]})


def test_typed_mmi_calls_against_a_broker(broker: BrokerProcess) -> None:
    with SyncClient(broker.endpoint, timeout=5.0) as c:
        assert c.services() == [] and c.workers() == []
        status = c.broker_status()
    assert status.version == __version__ and status.settings["max_message_bytes"] == 1 << 20

    async def main() -> tuple[object, ...]:
        async with Client(broker.endpoint, timeout=5.0) as c:
            return await c.services(), await c.workers(), await c.broker_status()

    services, workers, status2 = asyncio.run(main())
    assert services == [] and workers == [] and status2.version == __version__  # type: ignore[attr-defined]


def test_acting_for_puts_the_act_as_prefix_in_front_of_the_body_but_not_for_mmi() -> None:
    from plantd.security.caller import encode_act_as, split_act_as

    ex = Exchange("org.plantd.State", [b"get", b"{}"], timeout=1, retries=0, acting_for="alice")
    body = ex.request[ex.request.index(b"org.plantd.State") + 1 :]
    assert body[:2] == encode_act_as("alice")
    assert split_act_as(body) == ("alice", [b"get", b"{}"])
    mmi = Exchange("mmi.service", [b"echo"], timeout=1, retries=0, acting_for="alice")
    assert mmi.request[-1] == b"echo" and encode_act_as("alice")[0] not in mmi.request
