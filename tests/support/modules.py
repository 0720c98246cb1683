"""Modules and a broker run in the test's event loop (no daemon processes): fast, real
sockets, the module's own run/setup/teardown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

from plantd.module import Module
from tests.support.bus import Bus
from tests.support.polling import wait_until_async

M = TypeVar("M", bound=Module)


@contextlib.asynccontextmanager
async def running_broker() -> AsyncIterator[str]:
    """A real broker running in this event loop; yields its endpoint."""
    from plantd.broker.core import BrokerSettings
    from plantd.broker.server import BrokerServer

    server = BrokerServer(
        BrokerSettings(endpoint="tcp://127.0.0.1:0", heartbeat_interval=0.2, request_timeout=2.0)
    )
    endpoint = server.bind()
    stop = asyncio.Event()
    task = asyncio.create_task(server.run(stop))
    try:
        yield endpoint
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 5)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def running_module(module: M, home: Path) -> AsyncIterator[M]:
    """Run ``module`` (Module.run: setup, worker, teardown) in this event loop, without the
    daemon lifecycle; yields it once ready and registered with the broker."""
    from plantd.config import Home
    from plantd.daemons.health import HealthRegistry
    from plantd.daemons.lifecycle import DaemonContext

    ctx = DaemonContext(
        name=module.name,
        settings=module.settings,
        home=Home(home),
        log=logging.getLogger(f"plantd.test.{module.name}"),
        stop=asyncio.Event(),
        health=HealthRegistry(),
        metrics=None,
        pid_file=home / f"{module.name}.pid",
    )
    task = asyncio.create_task(module.run(ctx))

    async def registered() -> bool:
        if task.done():
            task.result()  # setup failed: raise it here
        status, _ = await ctx.health.evaluate()
        return ctx.ready and status == "pass"

    try:
        await wait_until_async(registered, 10, what=f"{module.name} ready and registered")
        yield module
    finally:
        ctx.stop.set()
        await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def running_logger(
    tmp_path: Path, loop_broker: str, log_bus: Bus | None, event_bus: Bus | None, **kw: Any
) -> AsyncIterator[Any]:
    """The logger module (store + MDP operations) in this event loop; yields its LogStore."""
    from plantd.logger.daemon import LoggerModule, LoggerSettings

    settings = LoggerSettings(
        endpoint=loop_broker,
        heartbeat_interval=0.2,
        database=tmp_path / "logger.sqlite",
        log_bus_sub=log_bus.backend if log_bus else "",
        event_bus_sub=event_bus.backend if event_bus else "",
        flush_interval=0.02,
        **kw,
    )
    async with running_module(LoggerModule(settings), tmp_path) as module:
        yield module.store


def bus_logger(name: str, handler: logging.Handler) -> logging.Logger:
    """A logger whose only handler is ``handler`` (a LogBusHandler), at DEBUG."""
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


async def join(store: Any, logger: logging.Logger) -> None:
    """PUB/SUB joins asynchronously: log until the store sees something (bounded)."""
    for i in range(200):
        logger.debug("warm-up %d", i)
        await asyncio.sleep(0.02)
        if store.received:
            return
    raise AssertionError("log bus never delivered")
