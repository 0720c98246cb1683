"""A worker process for the tracing tests (``python -m tests.support.trace_worker``).

``ENDPOINT SERVICE [TARGET]``: serves SERVICE; operation ``echo`` logs one line and answers
the document it got; ``relay`` (with TARGET) calls TARGET's ``echo`` through the broker and
answers what it got; ``fail`` raises. Every log record's log-bus document (the real
``LogBusHandler.emit``, with a publisher that prints instead of publishing) goes to stdout as
one JSON line, so a test can read the fields a record carries. SIGTERM: stop, export spans.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from typing import Any

from plantd import tracing
from plantd.client import Client
from plantd.client.worker import Worker
from plantd.logbus import LogBusHandler

log = logging.getLogger("trace_worker")


class PrintingPublisher:
    def publish_nowait(self, topic: str, doc: Any) -> bool:
        print(json.dumps({"topic": topic, "doc": doc}), flush=True)
        return True

    def close(self) -> None:
        pass


async def serve(endpoint: str, service: str, target: str | None) -> None:
    worker = Worker(endpoint, service, heartbeat_interval=0.25)
    client = Client(endpoint, timeout=5.0)

    @worker.operation("echo")
    async def echo(doc: Any) -> Any:
        log.info("echo in %s", service)
        return doc

    @worker.operation("relay")
    async def relay(doc: Any) -> Any:
        log.info("relay in %s to %s", service, target)
        return {"relayed": await client.call(str(target), "echo", doc)}

    @worker.operation("fail")
    async def fail(doc: Any) -> Any:
        raise RuntimeError("asked to fail")

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    task = asyncio.create_task(worker.run())
    await worker.connected.wait()
    print(json.dumps({"ready": service}), flush=True)
    await stop.wait()
    await worker.stop()
    await asyncio.wait_for(task, 5)
    await client.close()


def main() -> None:
    endpoint, service = sys.argv[1], sys.argv[2]
    target = sys.argv[3] if len(sys.argv) > 3 else None
    tracing.set_service_name(f"worker-{service}")
    handler = LogBusHandler(service, "", publisher=PrintingPublisher())
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    try:
        asyncio.run(serve(endpoint, service, target))
    finally:
        tracing.shutdown()


if __name__ == "__main__":
    main()
