"""The broker's ``broker:services`` health: a service that cannot serve says so (stalled:
requests wait and no worker finishes; wedged: a busy worker gone silent). Driven through the
real core state machine with explicit times."""

from __future__ import annotations

from plantd.broker.core import BrokerCore, BrokerSettings
from plantd.broker.daemon import service_problems

W1, C1, C2 = b"\x00W1", b"\x00C1", b"\x00C2"


def _core() -> BrokerCore:
    return BrokerCore(
        BrokerSettings(heartbeat_interval=1.0, heartbeat_liveness=3, request_timeout=2.0),
        started=0.0,
    )


def _request(core: BrokerCore, client: bytes, now: float, service: bytes = b"svc") -> None:
    core.handle(client, [b"MDPC02", b"\x01", service, b"op", b"{}"], now)


def test_a_stalled_service_and_a_wedged_worker_are_reported() -> None:
    core = _core()
    core.handle(W1, [b"MDPW02", b"\x01", b"svc"], 0.0)  # READY
    _request(core, C1, 0.0)  # W1 takes it
    _request(core, C2, 0.5)  # waits: no idle worker
    assert service_problems(core, 1.0) == []  # busy for a moment: normal
    core.handle(W1, [b"MDPW02", b"\x05"], 2.0)  # W1 heartbeats while busy
    (stalled,) = service_problems(core, 3.0)
    assert stalled == "svc: 1 requests waiting, 1 of 1 workers busy, none finished for 2s"
    problems = service_problems(core, 5.5)  # and W1 has been silent since 2.0
    assert any("silent for 3.5s" in p for p in problems)
    core.handle(W1, [b"MDPW02", b"\x04", C1, b"", b"done"], 5.6)  # it finishes: C2 goes to it
    assert service_problems(core, 5.7) == []


def test_names_only_clients_asked_for_are_not_a_problem() -> None:
    core = _core()
    _request(core, C1, 0.0, b"no.such.service")
    assert service_problems(core, 1.5) == []
