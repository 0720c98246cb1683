"""Majordomo frame codec for every dialect plantd meets. Pure functions, no I/O.

Frames are shown as a DEALER peer sends them; the broker's ROUTER identity frame is not
part of any function here. See ``docs/protocol.md`` and ``../shared/mdp-dialects.md``.

The broker decodes each incoming message with :func:`decode_peer_message`, which recognises
the dialect from the frame shape, and answers with the ``encode_*`` functions for that
dialect. Our own client and worker speak RFC 18 exactly (``encode_request``,
``decode_client_reply``, ``encode_ready`` ...).
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

__all__ = [
    "CLIENT_HEADER",
    "ERROR_MARKER",
    "ERROR_REPLY_DIALECTS",
    "MDPC01",
    "MDPW01",
    "WORKER_HEADER",
    "Dialect",
    "ErrorReply",
    "MalformedMessage",
    "PeerMessage",
]

CLIENT_HEADER = b"MDPC02"
WORKER_HEADER = b"MDPW02"
MDPC01 = b"MDPC01"
MDPW01 = b"MDPW01"
EMPTY = b""

# RFC 18 client commands
C_REQUEST = b"\x01"
C_PARTIAL = b"\x02"
C_FINAL = b"\x03"
# RFC 18 worker commands
W_READY = b"\x01"
W_REQUEST = b"\x02"
W_PARTIAL = b"\x03"
W_FINAL = b"\x04"
W_HEARTBEAT = b"\x05"
W_DISCONNECT = b"\x06"
# RFC 7 (MDP/0.1) worker commands
W01_READY = b"\x01"
W01_REQUEST = b"\x02"
W01_REPLY = b"\x03"
W01_HEARTBEAT = b"\x04"
W01_DISCONNECT = b"\x05"
# majortomo 0.2.0 client commands (worker commands are numbered as RFC 18)
MT_REQUEST = b"\x02"
MT_PARTIAL = b"\x03"
MT_FINAL = b"\x04"

MAX_SERVICE_NAME = 255

#: First body frame of a broker error reply. JSON and operation names never start with NUL,
#: so the marker cannot collide with a plantd reply body.
ERROR_MARKER = b"\x00plantd.error"


class Dialect(IntEnum):
    """Wire dialect a peer used; the broker answers each peer in its own dialect."""

    RFC18 = 0  # ZeroMQ RFC 18, MDP/0.2: our canonical format
    MDP01 = 1  # ZeroMQ RFC 7, MDP/0.1 (zguide, plantd-core)
    MAJORTOMO = 2  # majortomo 0.2.0: leading empty frame, byte commands, client REQUEST 0x02
    GOPLANTD = 3  # Go plantd: ASCII command words, leading empty frame towards the broker


#: Dialects whose clients can tell a broker error from a service reply (RFC 18 clients read
#: the ``ERROR_MARKER`` frame). The others have no error reply: to them an error would look
#: like the service's answer, so the broker never sends one (see docs/protocol.md).
ERROR_REPLY_DIALECTS = frozenset({Dialect.RFC18})


def has_error_reply(dialect: Dialect) -> bool:
    """Whether the broker may answer a ``dialect`` client with an error reply."""
    return dialect in ERROR_REPLY_DIALECTS


class Kind(IntEnum):
    """What a decoded peer message asks the broker to do."""

    REQUEST = 0  # client request: service, body
    READY = 1  # worker registers for service
    REPLY = 2  # worker reply to client: client address, body, final flag
    HEARTBEAT = 3
    DISCONNECT = 4


class MalformedMessage(ValueError):
    """A message that matches no dialect's frame layout. The broker drops it and counts it."""


class InvalidRequest(MalformedMessage):
    """A well-framed client request the broker must refuse (bad service name): unlike other
    malformed input it can be answered, in the client's dialect, with status 400."""

    def __init__(self, message: str, dialect: Dialect, service: bytes) -> None:
        super().__init__(message)
        self.dialect = dialect
        self.service = service


class PeerMessage(NamedTuple):
    """One decoded message from a peer. Fields unused by a kind are empty."""

    kind: Kind
    dialect: Dialect
    service: bytes = b""
    client: bytes = b""
    body: list[bytes] = []
    final: bool = True


class ErrorReply(NamedTuple):
    """A broker error carried in a reply body: ``[ERROR_MARKER, status, message]``."""

    status: int
    message: str


_GO_WORKER_WORDS = {
    b"READY": Kind.READY,
    b"HEARTBEAT": Kind.HEARTBEAT,
    b"DISCONNECT": Kind.DISCONNECT,
    b"FINAL": Kind.REPLY,
    b"PARTIAL": Kind.REPLY,
}


def _check_service(service: bytes) -> bytes:
    if not service or len(service) > MAX_SERVICE_NAME:
        raise MalformedMessage(
            f"service name must be 1-{MAX_SERVICE_NAME} bytes, got {len(service)}"
        )
    return service


def _request(dialect: Dialect, service: bytes, body: list[bytes]) -> PeerMessage:
    if not service or len(service) > MAX_SERVICE_NAME:
        raise InvalidRequest(
            f"service name must be 1-{MAX_SERVICE_NAME} bytes, got {len(service)}",
            dialect,
            service,  # echoed whole: RFC 18 clients match a reply by its service frame
        )
    return PeerMessage(Kind.REQUEST, dialect, service, b"", body)


def decode_peer_message(frames: list[bytes]) -> PeerMessage:
    """Decode what a client or worker sent the broker (routing id already removed).

    Raises :class:`MalformedMessage` for anything that matches no dialect.
    """
    n = len(frames)
    if n < 2:
        raise MalformedMessage(f"too few frames ({n})")
    head = frames[0]
    # RFC 18: no leading empty frame. Checked first: it is the hot path.
    if head == CLIENT_HEADER:
        if frames[1] != C_REQUEST:
            raise MalformedMessage(f"unknown client command {frames[1]!r}")
        if n < 3:
            raise MalformedMessage("REQUEST without service frame")
        return _request(Dialect.RFC18, frames[2], frames[3:])
    if head == WORKER_HEADER:
        return _decode_worker(frames, 1, Dialect.RFC18)
    if head != EMPTY:
        raise MalformedMessage(f"unknown protocol header {head[:16]!r}")
    # every other dialect starts with an empty frame
    if n < 3:
        raise MalformedMessage(f"too few frames ({n})")
    proto = frames[1]
    if proto == CLIENT_HEADER:
        cmd = frames[2]
        if cmd == MT_REQUEST:
            dialect = Dialect.MAJORTOMO
        elif cmd == b"REQUEST":
            dialect = Dialect.GOPLANTD
        else:
            raise MalformedMessage(f"unknown client command {cmd[:16]!r}")
        if n < 4:
            raise MalformedMessage("REQUEST without service frame")
        return _request(dialect, frames[3], frames[4:])
    if proto == WORKER_HEADER:
        cmd = frames[2]
        if len(cmd) == 1:
            return _decode_worker(frames, 2, Dialect.MAJORTOMO)
        return _decode_go_worker(frames)
    if proto == MDPC01:
        return _request(Dialect.MDP01, frames[2], frames[3:])
    if proto == MDPW01:
        return _decode_mdp01_worker(frames)
    raise MalformedMessage(f"unknown protocol header {proto[:16]!r}")


def _decode_worker(frames: list[bytes], at: int, dialect: Dialect) -> PeerMessage:
    """RFC 18 and majortomo worker commands (same numbering); ``at`` indexes the command."""
    cmd = frames[at]
    rest = len(frames) - at - 1
    if cmd == W_FINAL or cmd == W_PARTIAL:
        if rest < 2 or frames[at + 2] != EMPTY:
            raise MalformedMessage("worker reply needs client address and empty frame")
        return PeerMessage(
            Kind.REPLY, dialect, b"", frames[at + 1], frames[at + 3 :], cmd == W_FINAL
        )
    if cmd == W_HEARTBEAT:
        return PeerMessage(Kind.HEARTBEAT, dialect)
    if cmd == W_READY:
        if rest < 1:
            raise MalformedMessage("READY without service frame")
        # frames after the service: capabilities (plantd.security.caller.CALLER_MARKER)
        return PeerMessage(
            Kind.READY, dialect, _check_service(frames[at + 1]), b"", frames[at + 2 :]
        )
    if cmd == W_DISCONNECT:
        return PeerMessage(Kind.DISCONNECT, dialect)
    raise MalformedMessage(f"unknown worker command {cmd[:16]!r}")


def _decode_go_worker(frames: list[bytes]) -> PeerMessage:
    """Go plantd worker: ``"" MDPW02 WORD ...``; the empty frame after the client may be absent."""
    word = frames[2]
    kind = _GO_WORKER_WORDS.get(word)
    if kind is None:
        raise MalformedMessage(f"unknown worker command {word[:16]!r}")
    if kind is Kind.READY:
        if len(frames) < 4:
            raise MalformedMessage("READY without service frame")
        return PeerMessage(Kind.READY, Dialect.GOPLANTD, _check_service(frames[3]))
    if kind is Kind.REPLY:
        if len(frames) < 4:
            raise MalformedMessage("worker reply needs client address")
        body_at = 5 if len(frames) > 4 and frames[4] == EMPTY else 4
        return PeerMessage(
            Kind.REPLY, Dialect.GOPLANTD, b"", frames[3], frames[body_at:], word == b"FINAL"
        )
    return PeerMessage(kind, Dialect.GOPLANTD)


def _decode_mdp01_worker(frames: list[bytes]) -> PeerMessage:
    cmd = frames[2]
    if cmd == W01_REPLY:
        if len(frames) < 5 or frames[4] != EMPTY:
            raise MalformedMessage("worker reply needs client address and empty frame")
        return PeerMessage(Kind.REPLY, Dialect.MDP01, b"", frames[3], frames[5:], True)
    if cmd == W01_HEARTBEAT:
        return PeerMessage(Kind.HEARTBEAT, Dialect.MDP01)
    if cmd == W01_READY:
        if len(frames) < 4:
            raise MalformedMessage("READY without service frame")
        return PeerMessage(Kind.READY, Dialect.MDP01, _check_service(frames[3]))
    if cmd == W01_DISCONNECT:
        return PeerMessage(Kind.DISCONNECT, Dialect.MDP01)
    raise MalformedMessage(f"unknown worker command {cmd[:16]!r}")


# --- broker -> client -------------------------------------------------------------------


def encode_client_reply(
    dialect: Dialect, service: bytes, body: list[bytes], final: bool = True
) -> list[bytes] | None:
    """Reply to a client in its dialect; ``None`` where the dialect cannot carry a PARTIAL."""
    if dialect is Dialect.RFC18:
        return [CLIENT_HEADER, C_FINAL if final else C_PARTIAL, service, *body]
    if dialect is Dialect.MAJORTOMO:
        return [EMPTY, CLIENT_HEADER, MT_FINAL if final else MT_PARTIAL, *body]
    if dialect is Dialect.GOPLANTD:
        return [CLIENT_HEADER, b"FINAL" if final else b"PARTIAL", service, *body]
    if not final:  # MDP/0.1 has exactly one reply per request
        return None
    return [EMPTY, MDPC01, service, *body]


# --- broker -> worker -------------------------------------------------------------------


def encode_worker_request(dialect: Dialect, client: bytes, body: list[bytes]) -> list[bytes]:
    """Hand a client's request to a worker in the worker's dialect."""
    if dialect is Dialect.RFC18:
        return [WORKER_HEADER, W_REQUEST, client, EMPTY, *body]
    if dialect is Dialect.MAJORTOMO:
        return [EMPTY, WORKER_HEADER, W_REQUEST, client, EMPTY, *body]
    if dialect is Dialect.GOPLANTD:
        return [WORKER_HEADER, b"REQUEST", client, EMPTY, *body]
    return [EMPTY, MDPW01, W01_REQUEST, client, EMPTY, *body]


_HEARTBEAT = {
    Dialect.RFC18: [WORKER_HEADER, W_HEARTBEAT],
    Dialect.MAJORTOMO: [EMPTY, WORKER_HEADER, W_HEARTBEAT],
    Dialect.GOPLANTD: [WORKER_HEADER, b"HEARTBEAT"],
    Dialect.MDP01: [EMPTY, MDPW01, W01_HEARTBEAT],
}
_DISCONNECT = {
    Dialect.RFC18: [WORKER_HEADER, W_DISCONNECT],
    Dialect.MAJORTOMO: [EMPTY, WORKER_HEADER, W_DISCONNECT],
    Dialect.GOPLANTD: [WORKER_HEADER, b"DISCONNECT"],
    Dialect.MDP01: [EMPTY, MDPW01, W01_DISCONNECT],
}


def encode_worker_heartbeat(dialect: Dialect) -> list[bytes]:
    return list(_HEARTBEAT[dialect])


def is_worker_heartbeat(frames: list[bytes]) -> bool:
    """Whether a broker-to-worker message is a HEARTBEAT (in any dialect)."""
    return frames in _HEARTBEAT.values()


def encode_worker_disconnect(dialect: Dialect) -> list[bytes]:
    return list(_DISCONNECT[dialect])


# --- our RFC 18 client ------------------------------------------------------------------


class ClientReply(NamedTuple):
    service: bytes
    body: list[bytes]
    final: bool


def encode_request(service: bytes, body: list[bytes]) -> list[bytes]:
    return [CLIENT_HEADER, C_REQUEST, service, *body]


def decode_client_reply(frames: list[bytes]) -> ClientReply:
    """Decode a broker reply as an RFC 18 client receives it."""
    if len(frames) < 3 or frames[0] != CLIENT_HEADER:
        raise MalformedMessage("reply is not an MDP/0.2 client message")
    cmd = frames[1]
    if cmd == C_FINAL:
        return ClientReply(frames[2], frames[3:], True)
    if cmd == C_PARTIAL:
        return ClientReply(frames[2], frames[3:], False)
    raise MalformedMessage(f"unknown reply command {cmd[:16]!r}")


# --- our RFC 18 worker ------------------------------------------------------------------


def encode_ready(service: bytes) -> list[bytes]:
    return [WORKER_HEADER, W_READY, service]


def encode_worker_reply(client: bytes, body: list[bytes], final: bool = True) -> list[bytes]:
    return [WORKER_HEADER, W_FINAL if final else W_PARTIAL, client, EMPTY, *body]


HEARTBEAT = [WORKER_HEADER, W_HEARTBEAT]
DISCONNECT = [WORKER_HEADER, W_DISCONNECT]


class WorkerCommand(NamedTuple):
    kind: Kind  # REQUEST, HEARTBEAT or DISCONNECT
    client: bytes = b""
    body: list[bytes] = []


def decode_worker_command(frames: list[bytes]) -> WorkerCommand:
    """Decode a broker message as an RFC 18 worker receives it."""
    if len(frames) < 2 or frames[0] != WORKER_HEADER:
        raise MalformedMessage("not an MDP/0.2 worker message")
    cmd = frames[1]
    if cmd == W_REQUEST:
        if len(frames) < 4 or frames[3] != EMPTY:
            raise MalformedMessage("REQUEST needs client address and empty frame")
        return WorkerCommand(Kind.REQUEST, frames[2], frames[4:])
    if cmd == W_HEARTBEAT:
        return WorkerCommand(Kind.HEARTBEAT)
    if cmd == W_DISCONNECT:
        return WorkerCommand(Kind.DISCONNECT)
    raise MalformedMessage(f"unknown worker command {cmd[:16]!r}")


# --- error replies ----------------------------------------------------------------------


def encode_error(status: int, message: str) -> list[bytes]:
    """Body of a broker error reply (travels as a normal FINAL to the client)."""
    return [ERROR_MARKER, str(status).encode(), message.encode()]


def decode_error(body: list[bytes]) -> ErrorReply | None:
    """Return the error a reply body carries, or ``None`` for an ordinary reply."""
    if len(body) >= 3 and body[0] == ERROR_MARKER:
        try:
            status = int(body[1])
        except ValueError:
            status = 500
        return ErrorReply(status, body[2].decode("utf-8", "replace"))
    return None
