"""The broker's routing state machine, driven without sockets (frames in, frames out)."""

from __future__ import annotations

import json

import pytest

from plantd.broker.core import BrokerCore, BrokerSettings
from plantd.protocol import mdp

W1, W2, C1, C2 = b"\x00W1", b"\x00W2", b"\x00C1", b"\x00C2"


def make(**kw: float) -> BrokerCore:
    return BrokerCore(BrokerSettings(**kw), started=0.0)


def take(core: BrokerCore) -> list[list[bytes]]:
    out = list(core.outbox)
    core.outbox.clear()
    return out


def ready(core: BrokerCore, w: bytes, service: bytes = b"svc", now: float = 0.0) -> None:
    core.handle(w, [b"MDPW02", b"\x01", service], now)


def request(core: BrokerCore, c: bytes, service: bytes = b"svc", now: float = 0.0) -> None:
    core.handle(c, [b"MDPC02", b"\x01", service, b"op", b"{}"], now)


def test_request_routed_to_worker_and_reply_back() -> None:
    core = make()
    ready(core, W1)
    request(core, C1)
    assert take(core) == [[W1, b"MDPW02", b"\x02", C1, b"", b"op", b"{}"]]
    core.handle(W1, [b"MDPW02", b"\x03", C1, b"", b"part"], 0.1)
    core.handle(W1, [b"MDPW02", b"\x04", C1, b"", b"done"], 0.1)
    assert take(core) == [
        [C1, b"MDPC02", b"\x02", b"svc", b"part"],
        [C1, b"MDPC02", b"\x03", b"svc", b"done"],
    ]
    assert core.counters.replies == 1 and core.counters.partials == 1


def test_oldest_idle_worker_first() -> None:
    core = make()
    ready(core, W1)
    ready(core, W2)
    request(core, C1)
    request(core, C2)
    targets = [m[0] for m in take(core)]
    assert targets == [W1, W2]
    # W2 finishes first, then W1: the next request goes to W2 (idle longest)
    core.handle(W2, [b"MDPW02", b"\x04", C2, b"", b"r"], 1.0)
    core.handle(W1, [b"MDPW02", b"\x04", C1, b"", b"r"], 1.1)
    take(core)
    request(core, C1, now=2.0)
    assert take(core)[0][0] == W2


def test_queued_request_dispatched_when_worker_arrives() -> None:
    core = make()
    request(core, C1)
    assert take(core) == []
    ready(core, W1, now=0.5)
    assert take(core)[0][:4] == [W1, b"MDPW02", b"\x02", C1]


def test_unknown_service_expires_with_404_and_known_one_with_503() -> None:
    core = make(request_timeout=1.0)
    request(core, C1, b"nope")
    core.tick(0.5)
    assert [m for m in take(core) if m[0] == C1] == []
    core.tick(1.5)
    (reply,) = [m for m in take(core) if m[0] == C1]
    assert reply[:4] == [C1, b"MDPC02", b"\x03", b"nope"]
    assert mdp.decode_error(reply[4:]) == (404, "unknown service 'nope'")
    assert b"nope" not in core.services  # no memory kept for names nobody serves
    # a service that had a worker, now gone: 503
    ready(core, W1, now=2.0)
    core.handle(W1, [b"MDPW02", b"\x06"], 2.0)
    request(core, C1, now=2.0)
    core.tick(3.5)
    (reply,) = [m for m in take(core) if m[0] == C1]
    assert mdp.decode_error(reply[4:]).status == 503


def test_queue_is_bounded() -> None:
    core = make(max_queue=2)
    for _ in range(3):
        request(core, C1)
    (reply,) = take(core)
    assert "queue of service 'svc' is full" in mdp.decode_error(reply[4:]).message


def test_worker_expired_mid_request_client_gets_504() -> None:
    core = make(heartbeat_interval=1.0, heartbeat_liveness=3)
    ready(core, W1)
    request(core, C1)
    core.handle(W1, [b"MDPW02", b"\x05"], 0.1)  # heartbeat while busy: held to 3 s
    take(core)
    core.tick(2.9)
    assert not [m for m in take(core) if m[0] == C1]
    core.tick(3.2)
    out = take(core)
    (reply,) = [m for m in out if m[0] == C1]
    assert mdp.decode_error(reply[4:]).status == 504
    assert [W1, b"MDPW02", b"\x06"] in out
    assert core.counters.workers_expired == 1 and not core.workers


def test_foreign_busy_worker_gets_busy_timeout() -> None:
    core = make(heartbeat_interval=1.0, heartbeat_liveness=3, busy_timeout=10.0)
    ready(core, W1)
    request(core, C1)  # never heartbeats while busy
    core.tick(5.0)
    assert W1 in core.workers
    core.tick(10.5)
    assert W1 not in core.workers


def test_stale_reply_never_delivered() -> None:
    core = make(heartbeat_interval=1.0, heartbeat_liveness=1)
    ready(core, W1)
    request(core, C1)
    core.handle(W1, [b"MDPW02", b"\x05"], 0.0)
    core.tick(1.5)  # expired: C1 got 504
    take(core)
    core.handle(W1, [b"MDPW02", b"\x04", C1, b"", b"late"], 2.0)
    assert take(core) == [[W1, b"MDPW02", b"\x06"]]  # only a DISCONNECT to the worker


def test_out_of_place_worker_commands_get_disconnect() -> None:
    core = make()
    core.handle(W1, [b"MDPW02", b"\x05"], 0.0)  # HEARTBEAT before READY
    assert take(core) == [[W1, b"MDPW02", b"\x06"]]
    ready(core, W1)
    ready(core, W1)  # READY twice
    assert take(core) == [[W1, b"MDPW02", b"\x06"]]
    assert W1 not in core.workers
    ready(core, W2, b"mmi.service")  # mmi. is reserved
    assert take(core) == [[W2, b"MDPW02", b"\x06"]]
    assert W2 not in core.workers


def test_malformed_dropped_and_counted() -> None:
    core = make()
    for frames in ([b"junk"], [b"MDPC02", b"\x09", b"s"], [], [b"MDPW02"]):
        core.handle(C1, frames, 0.0)
    assert take(core) == []
    assert core.counters.malformed == 4


def test_oversized_request_gets_413() -> None:
    core = make(max_message_bytes=1000)
    ready(core, W1)
    core.handle(C1, [b"MDPC02", b"\x01", b"svc", b"x" * 2000], 0.0)
    (reply,) = take(core)
    err = mdp.decode_error(reply[4:])
    assert err.status == 413 and "1000" in err.message
    assert core.counters.oversized == 1


def test_mmi_service_and_extensions() -> None:
    core = make()
    ready(core, W1)
    core.handle(C1, [b"MDPC02", b"\x01", b"mmi.service", b"svc"], 0.0)
    core.handle(C1, [b"MDPC02", b"\x01", b"mmi.service", b"other"], 0.0)
    core.handle(C1, [b"MDPC02", b"\x01", b"mmi.nope", b"x"], 0.0)
    out = take(core)
    assert out == [
        [C1, b"MDPC02", b"\x03", b"mmi.service", b"200"],
        [C1, b"MDPC02", b"\x03", b"mmi.service", b"404"],
        [C1, b"MDPC02", b"\x03", b"mmi.nope", b"501"],
    ]
    core.handle(C1, [b"MDPC02", b"\x01", b"mmi.services"], 1.0)
    core.handle(C1, [b"MDPC02", b"\x01", b"mmi.workers"], 1.0)
    core.handle(C1, [b"MDPC02", b"\x01", b"mmi.broker"], 1.0)
    services, workers, broker = (json.loads(m[-1]) for m in take(core))
    assert services["services"][0] == {
        "name": "svc",
        "workers": 1,
        "idle": 1,
        "busy": 0,
        "queue": 0,
        "requests": 0,
        "failed": 0,
    }
    assert workers["workers"][0]["state"] == "idle"
    assert workers["workers"][0]["last_heartbeat_s"] == 1.0
    assert broker["uptime_s"] == 1.0 and broker["counters"]["mmi"] == 6


def test_heartbeats_sent_in_each_workers_dialect() -> None:
    core = make(heartbeat_interval=1.0)
    ready(core, W1)
    core.handle(W2, [b"", b"MDPW02", b"READY", b"go"], 0.0)
    core.tick(1.0)
    assert sorted(take(core)) == sorted([[W1, b"MDPW02", b"\x05"], [W2, b"MDPW02", b"HEARTBEAT"]])


def test_authorizer_sees_every_message() -> None:
    seen: list[bytes] = []

    def deny_clients(sender: bytes, msg: mdp.PeerMessage, origin: object) -> bool:
        seen.append(sender)
        return msg.kind is not mdp.Kind.REQUEST

    core = BrokerCore(BrokerSettings(), started=0.0, authorize=deny_clients)
    ready(core, W1)
    request(core, C1)
    (reply,) = take(core)
    assert mdp.decode_error(reply[4:]).status == 403
    assert seen == [W1, C1]


def test_invalid_service_name_gets_400_in_clients_dialect() -> None:
    """RFC 18 clients get 400; majortomo has no error reply, so its client gets nothing
    (issue 11: it would take the error for the service's answer) and the drop is counted."""
    core = make()
    core.handle(C1, [b"MDPC02", b"\x01", b""], 0.0)
    core.handle(C2, [b"", b"MDPC02", b"\x02", b"x" * 300, b"body"], 0.0)
    (rfc,) = take(core)
    assert rfc[:4] == [C1, b"MDPC02", b"\x03", b""]
    assert mdp.decode_error(rfc[4:]).status == 400
    assert core.counters.malformed == 2 and core.counters.requests_dropped == 1


def test_silent_idle_worker_gets_no_requests() -> None:
    """A ghost (reconnected under a new routing id, or dead) must not swallow a request."""
    core = make(heartbeat_interval=1.0, heartbeat_liveness=3)
    ready(core, W1, now=0.0)
    ready(core, W2, now=0.0)
    core.handle(W2, [b"MDPW02", b"\x05"], 1.9)  # W2 heartbeats, W1 went silent at 0.0
    request(core, C1, now=2.0)
    assert take(core)[0][0] == W2
    core.handle(W2, [b"MDPW02", b"\x04", C1, b"", b"r"], 2.0)
    take(core)
    # only the silent one is idle: the request waits instead of going into the void
    core.handle(W2, [b"MDPW02", b"\x06"], 2.0)
    request(core, C2, now=2.0)
    assert take(core) == []
    core.handle(W1, [b"MDPW02", b"\x05"], 2.1)  # it was alive after all: served now
    assert take(core)[0][:4] == [W1, b"MDPW02", b"\x02", C2]


def test_unroutable_request_goes_to_another_worker() -> None:
    """ZeroMQ could not route a REQUEST (the worker's connection is gone): it never left the
    broker, so the next idle worker gets it and the dead worker is dropped at once."""
    core = make()
    ready(core, W1)
    ready(core, W2)
    request(core, C1, now=1.0)
    [dispatched] = core.outbox
    assert dispatched[0] == W1
    core.outbox.clear()
    core.unroutable(dispatched, 1.0)
    assert take(core) == [[W2, b"MDPW02", b"\x02", C1, b"", b"op", b"{}"]]
    assert W1 not in core.workers and core.counters.unroutable == 1
    core.handle(W2, [b"MDPW02", b"\x04", C1, b"", b"done"], 1.1)
    assert take(core) == [[C1, b"MDPC02", b"\x03", b"svc", b"done"]]


def test_unroutable_request_waits_in_queue_without_other_worker() -> None:
    core = make()
    ready(core, W1)
    request(core, C1, now=1.0)
    [dispatched] = take(core)
    core.unroutable(dispatched, 1.0)
    assert take(core) == [] and len(core.services[b"svc"].queue) == 1
    ready(core, W2, now=1.5)  # a restarted worker takes it
    assert take(core) == [[W2, b"MDPW02", b"\x02", C1, b"", b"op", b"{}"]]


def test_unroutable_heartbeat_of_busy_worker_fails_its_request() -> None:
    """The request was delivered earlier; only the heartbeat bounced: its outcome is
    unknown, so the client gets a 'worker lost' error now instead of after the timeouts."""
    core = make()
    ready(core, W1)
    request(core, C1, now=1.0)
    take(core)
    core.unroutable([W1, b"MDPW02", b"\x05"], 1.2)
    [reply] = take(core)
    err = mdp.decode_error(reply[4:])
    assert reply[0] == C1 and err is not None and "connection is gone" in err.message
    assert W1 not in core.workers


def test_unroutable_client_reply_is_only_counted() -> None:
    core = make()
    ready(core, W1)
    core.unroutable([C1, b"MDPC02", b"\x03", b"svc", b"late"], 1.0)
    assert take(core) == [] and W1 in core.workers and core.counters.unroutable == 1


# --- issue 11: per-dialect semantics, fair byte-bounded queues, expiry, warnings ------------


def old_request(core: BrokerCore, c: bytes, service: bytes = b"svc", now: float = 0.0) -> None:
    core.handle(c, [b"", b"MDPC01", service, b"op"], now)


def test_mdp01_client_never_gets_an_error_reply() -> None:
    """Queue full, expiry and a lost worker: RFC 18 gets the error, MDP/0.1 nothing at all."""
    core = make(max_queue=1, request_timeout=1.0, max_wait=10.0)
    ready(core, W1)
    old_request(core, C1)  # dispatched to W1
    old_request(core, C1)  # queued
    old_request(core, C1)  # queue full: dropped
    request(core, C2)  # queue full: 503
    out = take(core)
    assert [m[0] for m in out] == [W1, C2]
    assert mdp.decode_error(out[1][4:]).status == 503
    assert core.counters.queue_full == 2 and core.counters.requests_dropped == 1
    core.handle(W1, [b"MDPW02", b"\x06"], 0.5)  # the worker leaves mid-request
    assert take(core) == []
    assert core.counters.lost_mid_request == 1 and core.counters.requests_dropped == 2
    core.tick(5.0)  # past request_timeout: an MDP/0.1 request is held, not expired
    assert take(core) == [] and len(core.services[b"svc"].queue) == 1
    ready(core, W2, now=6.0)  # ... and served by the next worker
    assert take(core)[0][:4] == [W2, b"MDPW02", b"\x02", C1]


def test_mdp01_request_dropped_silently_after_max_wait() -> None:
    core = make(request_timeout=1.0, max_wait=10.0)
    old_request(core, C1, b"nobody")
    core.tick(9.0)
    assert take(core) == [] and core.counters.requests_expired == 0
    core.tick(10.5)
    assert take(core) == []
    assert core.counters.requests_expired == 1 and core.counters.requests_dropped == 1
    assert b"nobody" not in core.services


def test_expiry_texts_no_worker_vs_all_busy() -> None:
    core = make(request_timeout=2.0)
    ready(core, W1)
    ready(core, W2)
    request(core, C1)
    request(core, C1)
    request(core, C2, now=0.5)  # both workers busy: queued
    take(core)
    core.tick(2.4)
    assert take(core) == []
    core.tick(2.6)
    (reply,) = [m for m in take(core) if m[0] == C2]  # (the rest: heartbeats)
    err = mdp.decode_error(reply[4:])
    assert reply[0] == C2 and err == (503, "all 2 workers of service 'svc' busy for 2s")
    core.handle(W1, [b"MDPW02", b"\x06"], 3.0)
    core.handle(W2, [b"MDPW02", b"\x06"], 3.0)
    take(core)
    request(core, C2, now=3.0)
    core.tick(5.1)
    (reply,) = [m for m in take(core) if m[0] == C2]
    assert mdp.decode_error(reply[4:]) == (503, "no worker for service 'svc' within 2s")


def test_queue_that_keeps_moving_is_not_expired() -> None:
    """Requests behind a long queue wait while the service completes requests; when it stalls
    they are dropped without a (late) error; one that saw no progress gets its 503 on time."""
    core = make(request_timeout=2.0, max_wait=60.0)
    ready(core, W1)
    for _ in range(5):
        request(core, C1, now=0.0)
    take(core)
    now = 0.0
    for _ in range(3):  # one completion every 1.5 s: the queue moves
        now += 1.5
        core.handle(W1, [b"MDPW02", b"\x04", C1, b"", b"r"], now)
        core.tick(now)
    out = take(core)
    assert not [m for m in out if m[0] == C1 and mdp.decode_error(m[4:])]
    assert core.counters.requests_expired == 0 and len(core.services[b"svc"].queue) == 1
    request(core, C2, now=now)  # arrives after the last progress
    core.tick(now + 2.1)  # stalled: the held request is dropped, the new one gets 503
    out = [m for m in take(core) if m[0] != W1]
    assert [m[0] for m in out] == [C2]
    assert core.counters.requests_expired == 2 and core.counters.requests_dropped == 1


def test_queue_is_fair_between_clients_and_bounded_in_bytes() -> None:
    core = make(max_client_queue_bytes=3 * 300, max_queue_bytes=10_000)
    ready(core, W1)
    request(core, C1)  # dispatched
    for _ in range(4):  # three fit in C1's share, the fourth is refused
        request(core, C1)
    request(core, C2)
    out = take(core)
    assert [m[0] for m in out] == [W1, C1]
    assert "this client's share" in mdp.decode_error(out[1][4:]).message
    served = []
    for i in range(4):  # round robin: C1, C2, C1, C1
        client = core.workers[W1].busy.client
        served.append(client)
        core.handle(W1, [b"MDPW02", b"\x04", client, b"", b"r"], 0.1 * i)
    assert served == [C1, C1, C2, C1]


def test_oversized_final_reply_frees_the_worker() -> None:
    core = make(max_message_bytes=1 << 20)
    ready(core, W1)
    request(core, C1)
    request(core, C2)
    take(core)
    core.handle(W1, [b"MDPW02", b"\x04", C1, b"", b"x" * (2 << 20)], 0.1)
    err, nxt = take(core)
    assert err[0] == C1
    size = 2 * (1 << 20) + len(b"MDPW02\x04") + len(C1)
    assert mdp.decode_error(err[4:]) == (
        413,
        f"reply of {size} bytes from svc exceeds the 1 MiB limit",
    )
    assert nxt[:4] == [W1, b"MDPW02", b"\x02", C2]  # the worker took the next request
    assert core.counters.oversized_replies == 1 and W1 in core.workers


def test_oversized_partial_discards_the_rest_without_disconnect() -> None:
    core = make(max_message_bytes=1000)
    ready(core, W1)
    request(core, C1)
    take(core)
    core.handle(W1, [b"MDPW02", b"\x03", C1, b"", b"x" * 2000], 0.1)
    (err,) = take(core)
    assert mdp.decode_error(err[4:]).status == 413
    core.handle(W1, [b"MDPW02", b"\x03", C1, b"", b"more"], 0.2)
    core.handle(W1, [b"MDPW02", b"\x03", C1, b"", b"x" * 2000], 0.2)
    core.handle(W1, [b"MDPW02", b"\x04", C1, b"", b"end"], 0.3)
    assert take(core) == []  # discarded: no reply to C1, no DISCONNECT to W1
    assert W1 in core.workers and core.workers[W1].busy is None
    assert core.counters.oversized_replies == 2 and core.counters.errors == 1
    request(core, C2, now=0.4)
    assert take(core)[0][:4] == [W1, b"MDPW02", b"\x02", C2]


def paged(core: BrokerCore, name: bytes, body: dict | None = None) -> list[bytes]:
    frames = [b"MDPC02", b"\x01", name] + ([json.dumps(body).encode()] if body else [])
    core.handle(C1, frames, 1.0)
    (reply,) = take(core)
    return reply


def test_mmi_listings_page_by_cursor_limit_and_bytes() -> None:
    core = make(max_message_bytes=4000)  # page budget 1000 bytes: about 7 workers
    for i in range(20):
        ready(core, b"\x00W%02d" % i, b"svc%02d" % i)
    seen: list[str] = []
    after = None
    for _ in range(20):
        doc = json.loads(paged(core, b"mmi.workers", {"after": after} if after else None)[-1])
        seen += [w["identity"] for w in doc["workers"]]
        assert 1 <= len(doc["workers"]) < 20
        if not doc["more"]:
            assert doc["next"] is None
            break
        after = doc["next"]
        assert after == seen[-1]
    assert seen == sorted(w.hex() for w in core.workers)
    doc = json.loads(paged(core, b"mmi.services", {"limit": 3, "after": "svc05"})[-1])
    assert [s["name"] for s in doc["services"]] == ["svc06", "svc07", "svc08"]
    assert doc == {**doc, "more": True, "next": "svc08"}


def test_mmi_paging_arguments_are_checked() -> None:
    core = make()
    cases = [
        ({"limit": 1001}, "field 'limit' must be an integer from 1 to 1000"),
        ({"limit": 0}, "field 'limit'"),
        ({"limit": True}, "field 'limit'"),
        ({"after": 7}, "field 'after'"),
        ([1], "field 'body'"),
    ]
    for body, text in cases:
        err = mdp.decode_error(paged(core, b"mmi.workers", body)[4:])  # type: ignore[arg-type]
        assert err.status == 400 and text in err.message
    core.handle(C1, [b"MDPC02", b"\x01", b"mmi.services", b"{bad"], 1.0)
    (reply,) = take(core)
    assert "field 'body' is not JSON" in mdp.decode_error(reply[4:]).message


def test_alerts_one_line_per_kind_per_interval_with_counts() -> None:
    from plantd.broker.alerts import Alerts

    alerts = Alerts(interval=10.0)
    alerts.note("queue_full", "first")
    assert alerts.due(0.0) == ["requests refused or dropped: queue full: 1 (latest: first)"]
    for i in range(500):
        alerts.note("queue_full", f"n{i}")
    alerts.note("expired", "x")
    assert alerts.due(5.0) == ["requests expired waiting for a worker: 1 (latest: x)"]
    assert alerts.due(9.9) == []
    (line,) = alerts.due(10.0)
    assert line == "requests refused or dropped: queue full: 500 in the last 10s (latest: n499)"
    assert alerts.due(30.0) == []


def test_backlog_keeps_order_and_bounds_bytes() -> None:
    from plantd.broker.backlog import Backlog, footprint

    msg = [C1, b"MDPC02", b"\x03", b"svc", b"r"]
    backlog = Backlog(limit=3 * footprint(msg))
    assert all(backlog.hold([*msg[:-1], b"%d" % i], 0.0) for i in range(3))
    assert not backlog.hold(msg, 0.0)  # over the bound: the caller counts it dropped
    for _, held in backlog.peers():
        assert [m[-1] for m in held] == [b"0", b"1", b"2"]
    backlog.sent(C1, 1.0)
    assert backlog.stalled(5.0, after=5.0) == [] and backlog.stalled(6.0, after=5.0) == [C1]
    assert [m[-1] for m in backlog.drop(C1)] == [b"1", b"2"] and not backlog and backlog.bytes == 0


def test_undeliverable_counted_by_direction() -> None:
    core = make()
    ready(core, W1)
    core.undeliverable([W1, b"MDPW02", b"\x05"], "backlog full")
    core.undeliverable([C1, b"MDPC02", b"\x03", b"svc", b"r"], "backlog full")
    assert core.counters.worker_sends_dropped == 1 and core.counters.replies_dropped == 1
    assert core.alerts.due(0.0)[0].startswith("messages dropped: peer not reading: 2")


@pytest.mark.parametrize(
    "frames",
    [
        [b"", b"MDPC01", b"gone", b"op"],
        [b"", b"MDPC02", b"\x02", b"gone", b"op"],
        [b"", b"MDPC02", b"REQUEST", b"gone", b"op"],
    ],
    ids=["mdp01", "majortomo", "goplantd"],
)
def test_clients_without_error_reply_get_nothing_for_unknown_service(frames: list) -> None:
    core = make(request_timeout=1.0, max_wait=5.0)
    core.handle(C1, frames, 0.0)
    core.tick(2.0)
    assert take(core) == []  # no 404 after request_timeout: still held
    core.tick(5.5)
    assert take(core) == [] and core.counters.requests_dropped == 1
    assert core.counters.errors == 0
