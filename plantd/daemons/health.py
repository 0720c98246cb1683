"""Health (``/healthz``, application/health+json) and metrics (``/metrics``) HTTP endpoint.

Every daemon serves the same two routes so process managers, Kubernetes probes and
Prometheus treat all of them alike. The body follows the IETF "Health Check Response Format
for HTTP APIs" draft: ``status`` is the worst of all checks, ``checks`` maps each check name
to a list of observations.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from plantd import __version__

Status = Literal["pass", "warn", "fail"]
CheckResult = tuple[str, dict[str, Any]]
Check = Callable[[], CheckResult | Awaitable[CheckResult]]

HEALTH_CONTENT_TYPE = "application/health+json"
_RANK = {"pass": 0, "warn": 1, "fail": 2}
_log = logging.getLogger("plantd.health")


class HealthRegistry:
    """Named checks; each returns ("pass"|"warn"|"fail", detail dict)."""

    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}

    def add_check(self, name: str, check: Check) -> None:
        """Register (or replace) a check; it may be sync or async and must be quick."""
        self._checks[name] = check

    def remove_check(self, name: str) -> None:
        self._checks.pop(name, None)

    async def evaluate(
        self, timeout: float = 2.0
    ) -> tuple[Status, dict[str, list[dict[str, Any]]]]:
        """Run every check; a check that raises or hangs counts as ``fail``."""
        overall: Status = "pass"
        results: dict[str, list[dict[str, Any]]] = {}
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for name, check in list(self._checks.items()):
            try:
                result = check()
                if inspect.isawaitable(result):
                    result = await asyncio.wait_for(result, timeout)
                status, detail = result
                if status not in _RANK:
                    raise ValueError(f"invalid status {status!r}")
                entry = {"status": status, "time": now, **(detail or {})}
            except Exception as exc:  # a broken check must not break the endpoint
                status = "fail"
                entry = {"status": "fail", "time": now, "output": f"{type(exc).__name__}: {exc}"}
            results[name] = [entry]
            if _RANK[status] > _RANK[overall]:
                overall = status  # type: ignore[assignment]
        return overall, results


class HealthServer:
    """aiohttp server for /healthz and /metrics bound to ``host:port`` (0 = ephemeral)."""

    def __init__(
        self,
        service_id: str,
        checks: HealthRegistry,
        registry: CollectorRegistry,
        host: str = "127.0.0.1",
        port: int = 0,
        description: str = "",
    ) -> None:
        self.service_id = service_id
        self.checks = checks
        self.registry = registry
        self.host = host
        self.port = port
        self.description = description
        self._runner: web.AppRunner | None = None

    async def _healthz(self, _request: web.Request) -> web.Response:
        status, checks = await self.checks.evaluate()
        body = {
            "status": status,
            "version": __version__,
            "releaseId": __version__,
            "serviceId": self.service_id,
            "description": self.description,
            "checks": checks,
        }
        return web.Response(
            status=503 if status == "fail" else 200,
            body=json.dumps(body).encode(),
            headers={"Content-Type": HEALTH_CONTENT_TYPE, "Cache-Control": "no-cache"},
        )

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def start(self) -> int:
        """Bind and serve; returns the actual port (useful when 0 was asked)."""
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        for addr in self._runner.addresses:
            if isinstance(addr, tuple) and len(addr) >= 2:
                self.port = int(addr[1])
                break
        _log.info("health endpoint listening on http://%s:%d/healthz", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
