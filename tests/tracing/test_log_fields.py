"""The trace id of a log record reaches the logger's store (queryable) and Loki (structured
metadata, or the JSON line without it): real SQLite store, Loki's push entry format."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from plantd import tracing
from plantd.logbus import LogBusHandler
from plantd.logger.loki import entry
from plantd.logger.store import LogStore, StoreSettings

TP = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def bus_documents() -> list[tuple[str, Any]]:
    """What the log bus handler publishes for one record outside and one inside a trace."""
    sent: list[tuple[str, Any]] = []

    class Keep:
        def publish_nowait(self, topic: str, doc: Any) -> bool:
            sent.append((topic, json.loads(json.dumps(doc))))
            return True

        def close(self) -> None:
            pass

    handler = LogBusHandler("org.plantd.t", "", publisher=Keep())
    log = logging.getLogger("plantd.test.trace_fields")
    log.propagate = False
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        log.info("outside")
        with tracing.continuing(TP):
            log.info("inside", extra={"fields": {"valve": "V1"}})
    finally:
        log.removeHandler(handler)
    return sent


async def test_trace_id_is_stored_and_found_by_text_query(tmp_path: Path) -> None:
    settings = StoreSettings(path=tmp_path / "logger.sqlite", log_backend=None, event_backend=None)
    async with LogStore(settings) as store:
        for topic, doc in bus_documents():
            assert store.add(topic, doc)
        await store.flush()
        found = await store.query({"text": TRACE_ID})
    assert [r["msg"] for r in found] == ["inside"]
    assert found[0]["fields"] == {
        "valve": "V1",
        "trace_id": TRACE_ID,
        "span_id": "00f067aa0ba902b7",
    }


def test_trace_id_is_loki_structured_metadata_or_in_the_json_line() -> None:
    (_, outside), (_, inside) = bus_documents()
    _, line, meta = entry(inside, metadata=True)
    assert line == "inside"
    assert meta["trace_id"] == TRACE_ID and meta["span_id"] == "00f067aa0ba902b7"
    assert "trace_id" not in entry(outside, metadata=True)[2]
    _, line = entry(inside, metadata=False)
    assert json.loads(line)["trace_id"] == TRACE_ID
