"""The sans-I/O halves of several brokers: which broker a client uses next and when
(plantd/client/failover.py), the endpoint list setting (plantd/config.py), and which bus
messages reach the application (plantd/client/dedup.py)."""

from __future__ import annotations

import pytest

from plantd.client.dedup import BusDedup
from plantd.client.exchange import Exchange
from plantd.client.failover import Brokers
from plantd.config import ClientSettings, ConfigError, load_settings, parse_endpoints

A, B, C = "tcp://127.0.0.1:1", "tcp://127.0.0.1:2", "tcp://127.0.0.1:3"


def test_sticks_to_a_broker_that_answers_and_moves_on_when_it_fails() -> None:
    b = Brokers([A, B, C], backoff_min=1.0, backoff_max=4.0)
    assert b.pick(0.0) == (A, 0.0)
    b.succeeded(A)
    assert b.pick(1.0) == (A, 0.0) and b.failovers == 0
    b.failed(A, 10.0, "refused")
    assert b.current == B and b.failovers == 1
    assert b.pick(10.0) == (B, 0.0)
    assert [s.state for s in b.states()] == ["down", "unknown", "unknown"]
    assert b.states()[0].reason == "refused"
    b.succeeded(B)
    assert b.pick(100.0) == (B, 0.0)  # sticky: A is not preferred again by itself


def test_a_failed_broker_is_skipped_for_a_doubling_backoff() -> None:
    b = Brokers([A, B], backoff_min=1.0, backoff_max=4.0)
    b.failed(A, 0.0, "x")  # A backs off until 1.0
    b.failed(B, 0.0, "x")  # B until 1.0
    endpoint, wait = b.pick(0.5)
    assert wait == pytest.approx(0.5)  # everyone is backing off: wait for the first
    b.failed(endpoint, 1.0, "x")  # second failure: 2 s
    other = B if endpoint == A else A
    assert b.pick(1.0) == (other, 0.0)
    for n in range(10):
        b.failed(A, 100.0 + n, "x")
    assert b.state(A).retry_at == pytest.approx(109.0 + 4.0)  # capped at backoff_max
    b.succeeded(A)
    assert b.state(A).failures == 0 and b.state(A).state == "up"


def test_one_broker_never_moves() -> None:
    b = Brokers([A])
    b.failed(A, 0.0, "x")
    assert b.current == A and not b.several and b.failovers == 0
    assert b.pick(0.0)[0] == A


def test_a_request_fails_over_once_per_other_broker_and_never_after_a_reply() -> None:
    ex = Exchange("svc", (), timeout=1.0, retries=0, failovers=2)
    assert ex.failover() and ex.failover() and not ex.failover()
    ex = Exchange("svc", (), timeout=1.0, retries=0, failovers=2)
    ex.received = True  # a stream was half read: it cannot be replayed elsewhere
    assert not ex.failover()


def test_endpoint_lists_parse_in_one_place_with_errors_naming_the_setting() -> None:
    assert parse_endpoints(f" {A} , {B}") == (A, B)
    assert parse_endpoints([A, "ipc:///tmp/x"]) == (A, "ipc:///tmp/x")
    env = {"PLANTD_CLIENT_ENDPOINT": f"{A}, {B}"}
    assert load_settings(ClientSettings, "client", env=env).endpoint == f"{A},{B}"
    for bad, says in [
        (f"{A},,{B}", "item 2 is empty"),
        ("http://host:9797", "is not tcp://HOST:PORT"),
        ("tcp://host", "needs HOST:PORT"),
        ("tcp://host:99999", "needs HOST:PORT"),
        (f"{A},{A}", "listed twice"),
        ("", "item 1 is empty"),
    ]:
        with pytest.raises(ConfigError) as err:
            load_settings(ClientSettings, "client", env={"PLANTD_CLIENT_ENDPOINT": bad})
        assert str(err.value).startswith("PLANTD_CLIENT_ENDPOINT=") and says in str(err.value)


def test_state_events_from_two_buses_are_delivered_once() -> None:
    d = BusDedup()
    ev1 = {"scope": "s", "key": "a", "op": "set", "revision": 7, "value": 1}
    ev2 = {"scope": "s", "key": "b", "op": "set", "revision": 7, "value": 2}  # same txn
    got = [d.accept(b"s", b"", e) for e in (ev1, ev1, ev2, ev2)]
    assert got == [True, False, True, False] and d.duplicates == 2 and d.gaps == 0


def test_sequence_numbers_deduplicate_per_source_and_count_gaps() -> None:
    d = BusDedup(window=4)

    def rec(seq: int, pid: int = 1) -> dict[str, object]:
        return {"service": "x", "host": "h", "pid": pid, "seq": seq, "msg": "m"}

    # broker A delivers 1..3, broker B lags one behind
    order = [1, 2, 1, 3, 2, 3]
    assert [d.accept(b"log", b"", rec(s)) for s in order] == [True, True, False, True, False, False]
    assert d.accept(b"log", b"", rec(1, pid=2))  # another process: its own sequence
    assert [d.accept(b"log", b"", rec(s)) for s in (5, 9, 10)] == [True, True, True]
    assert d.gaps == 2  # 4 and 6 passed the window unseen; 7 and 8 may still come
    assert d.accept(b"log", b"", rec(8)) and d.gaps == 2
    assert not d.accept(b"log", b"", rec(4))  # too late: counted missing, never delivered
    assert d.late + d.duplicates >= 1


def test_one_broker_reports_a_gap_at_once_and_keeps_identical_payloads() -> None:
    d = BusDedup(window=0, by_content=False)
    assert d.accept(b"log", b"", {"pid": 1, "seq": 1})
    assert d.accept(b"log", b"", {"pid": 1, "seq": 3}) and d.gaps == 1
    assert d.accept(b"ev", b"{}", {}) and d.accept(b"ev", b"{}", {})  # no copies to drop


def test_other_payloads_deduplicate_by_content() -> None:
    d = BusDedup()
    assert d.accept(b"m.t", b'{"v":1}', {"v": 1})
    assert not d.accept(b"m.t", b'{"v":1}', {"v": 1})
    assert d.accept(b"m.u", b'{"v":1}', {"v": 1})  # another topic
