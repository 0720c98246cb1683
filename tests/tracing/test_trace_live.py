"""One `plant call` is one trace across every process it touches (real processes, sockets,
HTTP export to an OTLP receiver in the test process), with security on."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.broker import BrokerProcess, broker_env, start_broker
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.polling import wait_until
from tests.support.processes import kill_pid, run_plant, stop_process

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http")

SERVER, CLIENT = 2, 3  # opentelemetry.proto SpanKind
ERROR = 2  # Status.code


class WorkerProcess:
    """tests/support/trace_worker.py, its stdout (JSON lines) read by a thread."""

    def __init__(self, env: dict[str, str], endpoint: str, service: str, *target: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.trace_worker", endpoint, service, *target],
            env=env,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=Path(__file__).parents[2],
        )
        self.lines: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()
        wait_until(lambda: {"ready": service} in self.lines, 15, what=f"{service} registered")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.lines.append(json.loads(line))

    def records(self) -> list[dict[str, Any]]:
        return [line["doc"] for line in self.lines if "doc" in line]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


@pytest.fixture
def traced_env(plantd_env: dict[str, str], receiver: OtlpReceiver) -> dict[str, str]:
    env = broker_env(plantd_env)
    env.update(
        PLANTD_TRACING="on",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    return env


@pytest.fixture
def traced_stack(traced_env: dict[str, str], plantd_home: Path) -> Iterator[BrokerProcess]:
    broker = start_broker(traced_env, plantd_home)
    workers = [
        WorkerProcess(traced_env, broker.endpoint, "trace.inner"),
        WorkerProcess(traced_env, broker.endpoint, "trace.outer", "trace.inner"),
    ]
    broker.workers = workers  # type: ignore[attr-defined]
    try:
        yield broker
    finally:
        for w in workers:
            stop_process(w.proc)  # SIGTERM: the worker exports its last spans
        kill_pid(broker.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            broker.proc.wait(timeout=5)


def by_id(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    return {s.span_id: s for s in spans}


@pytest.mark.timeout(90)
def test_one_plant_call_is_one_connected_trace(
    traced_stack: BrokerProcess, traced_env: dict[str, str], receiver: OtlpReceiver
) -> None:
    done = run_plant(traced_env, "call", "trace.outer", "relay", '{"n": 1}', "-o", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"relayed": {"n": 1}}

    # client -> broker -> outer worker -> (its client) -> broker -> inner worker
    spans = receiver.wait_for(6)
    trace_ids = {s.trace_id for s in spans}
    assert len(trace_ids) == 1, spans
    (trace_id,) = trace_ids
    index = by_id(spans)

    (root,) = [s for s in spans if not s.parent_id]
    assert (root.service, root.kind, root.name) == ("plant", CLIENT, "trace.outer/relay")

    def child(parent: ReceivedSpan, service: str, kind: int, name: str) -> ReceivedSpan:
        (found,) = [
            s
            for s in spans
            if s.parent_id == parent.span_id and s.service == service and s.kind == kind
        ]
        assert found.name == name
        return found

    broker_outer = child(root, "plantd-broker", SERVER, "trace.outer/relay")
    outer = child(broker_outer, "worker-trace.outer", SERVER, "trace.outer/relay")
    call_inner = child(outer, "worker-trace.outer", CLIENT, "trace.inner/echo")
    broker_inner = child(call_inner, "plantd-broker", SERVER, "trace.inner/echo")
    inner = child(broker_inner, "worker-trace.inner", SERVER, "trace.inner/echo")
    assert {s.service for s in spans} == {
        "plant",
        "plantd-broker",
        "worker-trace.outer",
        "worker-trace.inner",
    }
    assert broker_outer.attributes["plantd.outcome"] == "reply"
    assert broker_outer.attributes["rpc.method"] == "relay"
    assert len(broker_outer.attributes["plantd.worker"]) > 0
    assert outer.attributes["enduser.id"] == "admin"  # the caller the broker authenticated
    assert all(s.status != ERROR for s in spans)
    assert set(index) == {s.span_id for s in spans}  # no span id reused

    # the log records emitted inside the handlers carry the trace and their span
    workers = traced_stack.workers  # type: ignore[attr-defined]
    (outer_log,) = [r for r in workers[1].records() if r["msg"].startswith("relay in")]
    (inner_log,) = [r for r in workers[0].records() if r["msg"].startswith("echo in")]
    assert outer_log["fields"]["trace_id"] == trace_id
    assert outer_log["fields"]["span_id"] == outer.span_id
    assert inner_log["fields"]["trace_id"] == trace_id
    assert inner_log["fields"]["span_id"] == inner.span_id


@pytest.mark.timeout(90)
def test_failed_handler_span_has_error_status(
    traced_stack: BrokerProcess, traced_env: dict[str, str], receiver: OtlpReceiver
) -> None:
    done = run_plant(traced_env, "call", "trace.inner", "fail", "{}", "-o", "json")
    assert done.returncode != 0
    spans = receiver.wait_for(3)
    (worker,) = [s for s in spans if s.service == "worker-trace.inner"]
    assert worker.kind == SERVER and worker.status == ERROR
    # the broker delivered the worker's error reply: its own span is a routed reply
    (broker,) = [s for s in spans if s.service == "plantd-broker"]
    assert broker.attributes["plantd.outcome"] == "reply"
    (failed_log,) = [r for r in traced_stack.workers[0].records() if "exc" in r["fields"]]  # type: ignore[attr-defined]
    assert failed_log["fields"]["trace_id"] == worker.trace_id


@pytest.mark.timeout(90)
def test_http_traceparent_through_the_proxy_continues_the_callers_trace(
    traced_stack: BrokerProcess, plantd_home: Path, receiver: OtlpReceiver
) -> None:
    from tests.support.proxy import ProxyStack, admin_token, start_proxy

    proxy, url = start_proxy(traced_stack, plantd_home)
    try:
        token = admin_token(traced_stack.env, plantd_home)
        stack = ProxyStack(plantd_home, traced_stack, proxy, url, [proxy], token)
        caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        reply = stack.request(
            "POST", "/v1/services/trace.outer/relay", {"n": 2}, headers={"traceparent": caller}
        )
        assert reply.status == 200, reply.body
        spans = receiver.wait_for(6)
    finally:
        proxy.stop()
    assert {s.trace_id for s in spans} == {"0af7651916cd43dd8448eb211c80319c"}
    (first,) = [s for s in spans if s.parent_id == "b7ad6b7169203331"]
    assert (first.service, first.kind, first.name) == ("plantd-proxy", CLIENT, "trace.outer/relay")
    (outer,) = [s for s in spans if s.service == "worker-trace.outer" and s.kind == SERVER]
    assert outer.attributes["enduser.id"] == "admin"  # the token's principal, acted for
