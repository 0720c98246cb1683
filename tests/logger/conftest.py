"""Fixtures for the logger and metric tests: a real in-process broker, real bus proxies and
modules run in the test's event loop.

Everything binds 127.0.0.1 on ports chosen by the OS (``:0``) so parallel runs never collide,
and every fixture stops what it started.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from plantd.broker.bus import BusProxy
from plantd.module import Module

M = TypeVar("M", bound=Module)


@dataclass
class Bus:
    name: str
    frontend: str
    backend: str


@pytest.fixture
def make_bus() -> Iterator[object]:
    """Start a bus proxy on ephemeral ports: ``make_bus("log") -> Bus``."""
    proxies: list[BusProxy] = []

    def start(name: str) -> Bus:
        proxy = BusProxy(name, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*")
        proxy.start()
        proxies.append(proxy)
        assert proxy.bound_frontend and proxy.bound_backend
        return Bus(name, proxy.bound_frontend, proxy.bound_backend)

    yield start
    for proxy in proxies:
        proxy.stop()


@pytest.fixture
def log_bus(make_bus) -> Bus:  # type: ignore[no-untyped-def]
    return make_bus("log")


@pytest.fixture
def event_bus(make_bus) -> Bus:  # type: ignore[no-untyped-def]
    return make_bus("event")


@pytest.fixture
async def loop_broker() -> AsyncIterator[str]:
    """A real broker running in the test's event loop; yields its endpoint."""
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


async def eventually(predicate, timeout: float = 5.0, interval: float = 0.02):  # type: ignore[no-untyped-def]
    """Poll an (async or sync) predicate until truthy; returns its value or fails the test."""
    import inspect
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def running_module(module: M, home: Path) -> AsyncIterator[M]:
    """Run ``module`` (Module.run: setup, worker, teardown) in this event loop, without the
    daemon lifecycle; yields it once ready and registered with the broker."""
    import logging

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
        await eventually(registered, 10)
        yield module
    finally:
        ctx.stop.set()
        await asyncio.wait_for(task, 10)
