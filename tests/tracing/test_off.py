"""Tracing off (the default): nothing of OpenTelemetry is imported, the trace context is still
passed on, log records carry it; what switches tracing on; on without the extra installed.
None of this needs the SDK: it runs where the tracing extra is not installed too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from plantd import tracing

OFF_SCRIPT = """
import asyncio, json, sys
from plantd import tracing
from plantd.broker.core import BrokerSettings
from plantd.broker.server import BrokerServer
from plantd.client import Client
from plantd.client.worker import Worker

TP = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

async def main():
    server = BrokerServer(BrokerSettings(endpoint="tcp://127.0.0.1:0", heartbeat_interval=0.2))
    endpoint = server.bind()
    stop = asyncio.Event()
    btask = asyncio.create_task(server.run(stop))
    worker = Worker(endpoint, "off.svc", heartbeat_interval=0.2)
    seen = []

    @worker.operation("op")
    async def op(doc):
        seen.append(tracing.current_traceparent())
        return doc

    wtask = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.connected.wait(), 10)
    async with Client(endpoint, timeout=5) as client:
        await client.call("off.svc", "op", {})
        with tracing.continuing(TP):  # a trace this untraced process was asked to continue
            await client.call("off.svc", "op", {})
    await worker.stop()
    await asyncio.gather(wtask, return_exceptions=True)
    stop.set()
    await btask
    otel = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
    print(json.dumps({"otel": otel, "seen": [s and s.decode() for s in seen]}))

asyncio.run(main())
"""


def test_tracing_off_imports_no_opentelemetry_and_still_passes_the_context_on(
    plantd_env: dict[str, str],
) -> None:
    env = dict(plantd_env)
    for name in ("PLANTD_TRACING", "OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", OFF_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["otel"] == []
    assert result["seen"] == [None, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"]


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"PLANTD_TRACING": "on"}, True),
        ({"PLANTD_TRACING": "off", "OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "PLANTD_TRACING": "on"}, False),
        ({"PLANTD_TRACING": "on", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_what_switches_tracing_on(env: dict[str, str], on: bool) -> None:
    assert tracing.tracing_enabled(env) is on


def test_log_record_carries_trace_and_span_id() -> None:
    import logging

    from plantd.logbus import LogBusHandler

    docs: list[Any] = []

    class Keep:
        def publish_nowait(self, topic: str, doc: Any) -> bool:
            docs.append(json.loads(json.dumps(doc)))
            return True

        def close(self) -> None:
            pass

    handler = LogBusHandler("t", "", publisher=Keep())
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "inside", None, None)
    handler.handle(record)
    with tracing.continuing(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"):
        handler.handle(record)
    assert "trace_id" not in docs[0]["fields"]
    assert docs[1]["fields"] == {
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
    }


def test_tracing_on_without_opentelemetry_runs_untraced(plantd_env: dict[str, str]) -> None:
    """A process told to trace where the extra is not installed warns and works untraced."""
    script = (
        "import sys, logging; sys.modules['opentelemetry'] = None\n"
        "logging.basicConfig()\n"
        "from plantd import tracing\n"
        "print(tracing.current())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**plantd_env, "PLANTD_TRACING": "on"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "None"
    assert "pip install 'plantd[tracing]'" in done.stderr
