"""Golden frames for every dialect, and fuzzing of the decoder."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plantd.protocol import mdp
from plantd.protocol.mdp import Dialect, Kind, MalformedMessage

# --- RFC 18: what our own client and worker put on the wire -----------------------------


def test_rfc18_client_request_golden() -> None:
    assert mdp.encode_request(b"echo", [b"op", b"{}"]) == [
        b"MDPC02",
        b"\x01",
        b"echo",
        b"op",
        b"{}",
    ]


def test_rfc18_client_replies_golden() -> None:
    assert mdp.encode_client_reply(Dialect.RFC18, b"svc", [b"x"], final=True) == [
        b"MDPC02",
        b"\x03",
        b"svc",
        b"x",
    ]
    assert mdp.encode_client_reply(Dialect.RFC18, b"svc", [b"x"], final=False) == [
        b"MDPC02",
        b"\x02",
        b"svc",
        b"x",
    ]
    assert mdp.decode_client_reply([b"MDPC02", b"\x02", b"svc", b"a"]) == (b"svc", [b"a"], False)
    assert mdp.decode_client_reply([b"MDPC02", b"\x03", b"svc"]) == (b"svc", [], True)


def test_rfc18_worker_commands_golden() -> None:
    assert mdp.encode_ready(b"svc") == [b"MDPW02", b"\x01", b"svc"]
    assert mdp.encode_worker_reply(b"C", [b"b"], final=False) == [
        b"MDPW02",
        b"\x03",
        b"C",
        b"",
        b"b",
    ]
    assert mdp.encode_worker_reply(b"C", [b"b"]) == [b"MDPW02", b"\x04", b"C", b"", b"b"]
    assert mdp.HEARTBEAT == [b"MDPW02", b"\x05"]
    assert mdp.DISCONNECT == [b"MDPW02", b"\x06"]
    assert mdp.encode_worker_request(Dialect.RFC18, b"C", [b"b"]) == [
        b"MDPW02",
        b"\x02",
        b"C",
        b"",
        b"b",
    ]
    cmd = mdp.decode_worker_command([b"MDPW02", b"\x02", b"C", b"", b"op", b"{}"])
    assert cmd == (Kind.REQUEST, b"C", [b"op", b"{}"])


# --- the broker recognises each dialect from the frames ---------------------------------

DECODE_CASES = [
    # (frames, kind, dialect, service, client, body, final)
    ([b"MDPC02", b"\x01", b"s", b"b"], Kind.REQUEST, Dialect.RFC18, b"s", b"", [b"b"], True),
    (
        [b"", b"MDPC02", b"\x02", b"s", b"b"],
        Kind.REQUEST,
        Dialect.MAJORTOMO,
        b"s",
        b"",
        [b"b"],
        True,
    ),
    (
        [b"", b"MDPC02", b"REQUEST", b"s", b"b"],
        Kind.REQUEST,
        Dialect.GOPLANTD,
        b"s",
        b"",
        [b"b"],
        True,
    ),
    ([b"", b"MDPC01", b"s", b"b"], Kind.REQUEST, Dialect.MDP01, b"s", b"", [b"b"], True),
    ([b"MDPW02", b"\x01", b"s"], Kind.READY, Dialect.RFC18, b"s", b"", [], True),
    ([b"", b"MDPW02", b"\x01", b"s"], Kind.READY, Dialect.MAJORTOMO, b"s", b"", [], True),
    ([b"", b"MDPW02", b"READY", b"s"], Kind.READY, Dialect.GOPLANTD, b"s", b"", [], True),
    ([b"", b"MDPW01", b"\x01", b"s"], Kind.READY, Dialect.MDP01, b"s", b"", [], True),
    ([b"MDPW02", b"\x04", b"C", b"", b"r"], Kind.REPLY, Dialect.RFC18, b"", b"C", [b"r"], True),
    ([b"MDPW02", b"\x03", b"C", b"", b"r"], Kind.REPLY, Dialect.RFC18, b"", b"C", [b"r"], False),
    (
        [b"", b"MDPW02", b"\x04", b"C", b"", b"r"],
        Kind.REPLY,
        Dialect.MAJORTOMO,
        b"",
        b"C",
        [b"r"],
        True,
    ),
    ([b"", b"MDPW02", b"FINAL", b"C", b"r"], Kind.REPLY, Dialect.GOPLANTD, b"", b"C", [b"r"], True),
    (
        [b"", b"MDPW02", b"FINAL", b"C", b"", b"r"],
        Kind.REPLY,
        Dialect.GOPLANTD,
        b"",
        b"C",
        [b"r"],
        True,
    ),
    (
        [b"", b"MDPW02", b"PARTIAL", b"C", b"r"],
        Kind.REPLY,
        Dialect.GOPLANTD,
        b"",
        b"C",
        [b"r"],
        False,
    ),
    (
        [b"", b"MDPW01", b"\x03", b"C", b"", b"r"],
        Kind.REPLY,
        Dialect.MDP01,
        b"",
        b"C",
        [b"r"],
        True,
    ),
    ([b"MDPW02", b"\x05"], Kind.HEARTBEAT, Dialect.RFC18, b"", b"", [], True),
    ([b"", b"MDPW02", b"HEARTBEAT"], Kind.HEARTBEAT, Dialect.GOPLANTD, b"", b"", [], True),
    ([b"", b"MDPW01", b"\x04"], Kind.HEARTBEAT, Dialect.MDP01, b"", b"", [], True),
    ([b"MDPW02", b"\x06"], Kind.DISCONNECT, Dialect.RFC18, b"", b"", [], True),
    ([b"", b"MDPW01", b"\x05"], Kind.DISCONNECT, Dialect.MDP01, b"", b"", [], True),
]


@pytest.mark.parametrize(
    ("frames", "kind", "dialect", "service", "client", "body", "final"), DECODE_CASES
)
def test_decode_every_dialect(frames, kind, dialect, service, client, body, final) -> None:
    msg = mdp.decode_peer_message(frames)
    assert (msg.kind, msg.dialect, msg.service, msg.client, msg.body, msg.final) == (
        kind,
        dialect,
        service,
        client,
        body,
        final,
    )


def test_encode_for_each_dialect_golden() -> None:
    assert mdp.encode_client_reply(Dialect.MAJORTOMO, b"s", [b"r"]) == [
        b"",
        b"MDPC02",
        b"\x04",
        b"r",
    ]
    assert mdp.encode_client_reply(Dialect.MAJORTOMO, b"s", [b"r"], False) == [
        b"",
        b"MDPC02",
        b"\x03",
        b"r",
    ]
    assert mdp.encode_client_reply(Dialect.GOPLANTD, b"s", [b"r"]) == [
        b"MDPC02",
        b"FINAL",
        b"s",
        b"r",
    ]
    assert mdp.encode_client_reply(Dialect.MDP01, b"s", [b"r"]) == [b"", b"MDPC01", b"s", b"r"]
    assert mdp.encode_client_reply(Dialect.MDP01, b"s", [b"r"], final=False) is None
    assert mdp.encode_worker_request(Dialect.MAJORTOMO, b"C", [b"b"]) == [
        b"",
        b"MDPW02",
        b"\x02",
        b"C",
        b"",
        b"b",
    ]
    assert mdp.encode_worker_request(Dialect.GOPLANTD, b"C", [b"b"]) == [
        b"MDPW02",
        b"REQUEST",
        b"C",
        b"",
        b"b",
    ]
    assert mdp.encode_worker_request(Dialect.MDP01, b"C", [b"b"]) == [
        b"",
        b"MDPW01",
        b"\x02",
        b"C",
        b"",
        b"b",
    ]
    assert mdp.encode_worker_heartbeat(Dialect.GOPLANTD) == [b"MDPW02", b"HEARTBEAT"]
    assert mdp.encode_worker_disconnect(Dialect.MDP01) == [b"", b"MDPW01", b"\x05"]


MALFORMED = [
    [],
    [b"MDPC02"],
    [b"XXXX02", b"\x01", b"s"],
    [b"MDPC02", b"\x05", b"s"],  # a worker command on the client path
    [b"MDPC02", b"\x01"],  # no service
    [b"MDPC02", b"\x01", b""],  # empty service
    [b"MDPC02", b"\x01", b"x" * 256],  # service name too long
    [b"MDPW02", b"\x09"],  # unknown command byte
    [b"MDPW02", b"\x04", b"C"],  # reply without empty frame
    [b"MDPW02", b"\x04", b"C", b"x", b"body"],  # reply with non-empty delimiter
    [b"MDPW02", b"\x01"],  # READY without service
    [b"", b"MDPC02", b"\x01", b"s"],  # majortomo uses 0x02 for REQUEST
    [b"", b"MDPW02", b"NOPE"],
    [b"", b"ZZZ"],
    [b""],
]


@pytest.mark.parametrize("frames", MALFORMED)
def test_malformed_raises_codec_error(frames: list[bytes]) -> None:
    with pytest.raises(MalformedMessage):
        mdp.decode_peer_message(frames)


def test_error_body_round_trip() -> None:
    body = mdp.encode_error(503, "no worker")
    assert body[0] == mdp.ERROR_MARKER
    assert mdp.decode_error(body) == (503, "no worker")
    assert mdp.decode_error([b'{"success": true}']) is None


frames_st = st.lists(st.binary(max_size=64 * 1024), min_size=0, max_size=12)
headers = st.sampled_from(
    [b"", b"MDPC02", b"MDPW02", b"MDPC01", b"MDPW01", b"\x01", b"\x04", b"READY"]
)
structured_st = st.lists(st.one_of(headers, st.binary(max_size=8)), min_size=0, max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.one_of(frames_st, structured_st))
def test_fuzz_decode_only_raises_codec_error(frames: list[bytes]) -> None:
    try:
        msg = mdp.decode_peer_message(frames)
    except MalformedMessage:
        return
    assert isinstance(msg.kind, Kind)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(list(Dialect)),
    st.binary(min_size=1, max_size=255),
    st.lists(st.binary(max_size=64), max_size=4),
)
def test_worker_request_round_trip(dialect: Dialect, client: bytes, body: list[bytes]) -> None:
    """What the broker sends a worker, the worker's decoder reads back (RFC 18 worker)."""
    frames = mdp.encode_worker_request(Dialect.RFC18, client, body)
    assert mdp.decode_worker_command(frames) == (Kind.REQUEST, client, body)
    # and a reply in each dialect decodes to the same client/body at the broker
    reply = {
        Dialect.RFC18: mdp.encode_worker_reply(client, body),
        Dialect.MAJORTOMO: [b"", b"MDPW02", b"\x04", client, b"", *body],
        Dialect.GOPLANTD: [b"", b"MDPW02", b"FINAL", client, b"", *body],
        Dialect.MDP01: [b"", b"MDPW01", b"\x03", client, b"", *body],
    }[dialect]
    msg = mdp.decode_peer_message(reply)
    assert (msg.kind, msg.dialect, msg.client, msg.body) == (Kind.REPLY, dialect, client, body)


@settings(max_examples=200, deadline=None)
@given(
    st.binary(min_size=1, max_size=255), st.lists(st.binary(max_size=64), max_size=4), st.booleans()
)
def test_client_reply_round_trip(service: bytes, body: list[bytes], final: bool) -> None:
    frames = mdp.encode_client_reply(Dialect.RFC18, service, body, final)
    assert frames is not None
    assert mdp.decode_client_reply(frames) == (service, body, final)


def test_only_rfc18_clients_get_error_replies() -> None:
    """MDP/0.1, majortomo and Go plantd clients would take an error frame for the answer."""
    assert [d for d in Dialect if mdp.has_error_reply(d)] == [Dialect.RFC18]


def test_worker_heartbeat_recognised_in_every_dialect() -> None:
    assert all(mdp.is_worker_heartbeat(mdp.encode_worker_heartbeat(d)) for d in Dialect)
    assert not mdp.is_worker_heartbeat(mdp.encode_worker_disconnect(Dialect.RFC18))
    assert not mdp.is_worker_heartbeat([b"MDPC02", b"\x03", b"svc", b"x"])
