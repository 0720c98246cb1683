"""Unit tests of the Textual-free layer: parsing, CAS replies, rates, log buffer."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC
from pathlib import Path

import pytest

from plantd.tui.logstore import LogFilter, LogStore
from plantd.tui.model import (
    RateTracker,
    format_updated,
    heartbeat_status,
    parse_value,
    sparkline,
    worker_rows,
)
from plantd.tui.source import (
    Conflict,
    LogRecord,
    ServiceError,
    SourceSettings,
    WorkerInfo,
    parse_key_entry,
    parse_log_record,
    parse_state_change,
    state_reply,
)


def test_source_layer_does_not_import_textual() -> None:
    code = (
        "import sys, plantd.tui.source, plantd.tui.logstore, plantd.tui.model, plantd.tui.keywindow;"
        "bad = [m for m in sys.modules if m.startswith(('textual', 'zmq'))];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_state_reply_conflict_and_errors() -> None:
    assert state_reply({"success": True, "data": {"k": 1}}) == {"k": 1}
    with pytest.raises(Conflict) as exc:
        state_reply({"success": False, "code": "conflict", "error": "stale", "revision": 7})
    assert exc.value.revision == 7
    with pytest.raises(ServiceError):
        state_reply({"success": False, "error": "nope"})


def test_log_record_from_topic() -> None:
    r = parse_log_record("org.plantd.State.warning", {"msg": "x", "ts": "2023-11-14T22:13:20Z"})
    assert (r.service, r.level, r.ts) == ("org.plantd.State", "warning", 1_700_000_000.0)


def test_settings_from_env() -> None:
    s = SourceSettings.from_env(
        env={"PLANTD_CLIENT_ENDPOINT": "tcp://127.0.0.1:1", "PLANTD_CLIENT_TIMEOUT": "bad"}
    )
    assert (s.endpoint, s.timeout) == ("tcp://127.0.0.1:1", 3.0)
    assert SourceSettings.from_env("tcp://127.0.0.1:2", env={}).endpoint == "tcp://127.0.0.1:2"


def test_settings_buses_fall_back_to_broker_settings(tmp_path: Path) -> None:
    """Like `plant state watch`: no PLANTD_CLIENT_*_BUS means the broker's bus backends."""
    env = {
        "XDG_CONFIG_HOME": str(tmp_path),
        "PLANTD_HOME": str(tmp_path),
        "PLANTD_BROKER_STATE_BACKEND": "tcp://127.0.0.1:5001",
        "PLANTD_BROKER_LOG_BACKEND": "tcp://127.0.0.1:5002",
    }
    s = SourceSettings.from_env(env=env)
    assert (s.state_bus, s.log_bus) == ("tcp://127.0.0.1:5001", "tcp://127.0.0.1:5002")
    s = SourceSettings.from_env(env={**env, "PLANTD_CLIENT_LOG_BUS": "tcp://127.0.0.1:6"})
    assert (s.state_bus, s.log_bus) == ("tcp://127.0.0.1:5001", "tcp://127.0.0.1:6")
    broken = {**env, "PLANTD_BROKER_CONFIG": str(tmp_path / "missing.yaml")}
    assert SourceSettings.from_env(env=broken).log_bus == "tcp://127.0.0.1:14001"


def test_real_state_service_wire_format() -> None:
    """What org.plantd.State really sends: null keys on scope events, epoch timestamps."""
    change = parse_state_change(
        "s",
        {
            "scope": "s",
            "key": None,
            "op": "create-scope",
            "value": None,
            "revision": 3,
            "ts": 1_700_000_000.5,
        },
    )
    assert (change.key, change.op, change.revision) == ("", "create-scope", 3)
    entry = parse_key_entry(
        {
            "key": "k",
            "value": 1,
            "create_revision": 1,
            "mod_revision": 4,
            "version": 2,
            "updated": 1_700_000_000.25,
            "expires": None,
        }
    )
    assert format_updated(entry.updated, UTC) == "2023-11-14 22:13:20"
    assert format_updated("2023-11-14T22:10:00Z", UTC) == "2023-11-14 22:10:00"
    assert format_updated("", UTC) == "" and format_updated("yesterday") == "yesterday"


def test_rates_and_sparkline() -> None:
    rates = RateTracker()
    assert rates.update("a", 100, 10.0) == 0.0
    assert rates.update("a", 150, 12.0) == 25.0
    assert rates.update("a", 10, 13.0) == 0.0  # counter reset: no negative rate
    assert rates.update("b", None, 13.0, rate=4.0) == 4.0
    assert sparkline([0, 5, 10]) == "▁▅█"
    assert sparkline([]) == ""


def test_heartbeat_classification() -> None:
    assert heartbeat_status(1.0, 2.5, 3) == "ok"
    assert heartbeat_status(4.0, 2.5, 3) == "late"
    assert heartbeat_status(7.5, 2.5, 3) == "expired"
    assert heartbeat_status(None, 2.5, 3) == "?"


def test_parse_value() -> None:
    assert parse_value("13") == 13
    assert parse_value('"13"') == "13"
    assert parse_value("hello world") == "hello world"
    assert parse_value('{"a": [1]}') == {"a": [1]}


def rec(seq: int | None, service: str = "s", pid: int = 1, level: str = "info") -> LogRecord:
    return LogRecord(0.0, level, service, "m", "h", pid, "", {}, seq)


def test_logstore_gaps_per_producer_and_restart() -> None:
    store = LogStore(100)
    for seq in (1, 2, 5, 6):
        store.push(rec(seq))
    store.push(rec(1, pid=2))
    store.push(rec(3, pid=2))
    store.push(rec(1))  # producer restarted: not a gap
    assert store.missed == 2 + 1


def test_logstore_bounded_and_overflow_counted() -> None:
    store = LogStore(10)
    for i in range(25):
        store.push(rec(i))
    assert store.dropped == 15 and store.pending == 10
    added, evicted = store.drain()
    assert (added, evicted, len(store.records)) == (10, 0, 10)
    for i in range(25, 30):
        store.push(rec(i))
    assert store.drain() == (5, 5)


def test_logstore_filter() -> None:
    store = LogStore(10)
    store.push(rec(1, level="debug"))
    store.push(rec(2, service="t", level="error"))
    store.drain()
    store.set_filter(LogFilter(min_level="warn"))
    assert [r.seq for r in store.view] == [2]
    store.set_filter(LogFilter(service="s"))
    assert [r.seq for r in store.view] == [1]


def test_worker_rows_fold_healthy_workers_and_keep_problems_first() -> None:
    workers = [WorkerInfo(f"s{i}", "org.plantd.State", 0.1 * i, "idle") for i in range(5)]
    workers[1] = WorkerInfo("s1", "org.plantd.State", 0.3, "busy")
    workers += [
        WorkerInfo("late", "org.plantd.State", 4.0, "idle"),
        WorkerInfo("e1", "org.plantd.module.Echo", 0.2, "idle"),
    ]
    statuses = {w.identity: heartbeat_status(w.heartbeat_age, 2.5, 3) for w in workers}
    rows = worker_rows(workers, statuses, fold_healthy=True)
    assert [(r.worker, r.status) for r in rows] == [
        ("late", "late"),  # a problem is never folded and comes first
        ("5 workers", "ok"),  # then by service name
        ("e1", "ok"),  # a lone healthy worker stays itself
    ]
    group = rows[1]
    assert (group.service, group.state, group.age) == ("org.plantd.State", "1 busy", 0.4)
    each = worker_rows(workers, statuses, fold_healthy=False)
    assert len(each) == len(workers) and each[0].worker == "late"
