"""The proxy daemon: ``plant daemon start proxy`` (part of ``plant up``).

Runs the HTTP/JSON gateway (:mod:`plantd.proxy.app`) on the shared daemon lifecycle: one
:class:`plantd.client.Client` to the broker for every request, bearer tokens from this host's
keyring, ``/healthz`` and ``/metrics`` both on the lifecycle's health port and on the API port.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from aiohttp import web

from plantd import __version__
from plantd.client.client import Client
from plantd.config import ConfigError
from plantd.daemons.lifecycle import Daemon, DaemonContext, StartupRefused
from plantd.exitcodes import ExitCode
from plantd.proxy.api import ROUTES, Api
from plantd.proxy.app import Cors, Observer, build_app
from plantd.proxy.auth import TokenGate
from plantd.proxy.openapi import openapi_document
from plantd.proxy.ratelimit import RateLimiter
from plantd.proxy.settings import ProxySettings, parse_listen
from plantd.security.keys import Keyring

__all__ = ["ProxyDaemon"]


class ProxyDaemon(Daemon[ProxySettings]):
    name = "proxy"
    settings_class = ProxySettings
    description = "plantd proxy: HTTP/JSON gateway with OpenAPI"

    def endpoint(self) -> str | None:
        return f"http://{self.settings.listen}"

    async def run(self, ctx: DaemonContext) -> None:
        from prometheus_client import Counter, generate_latest

        s = self.settings
        try:
            host, port = parse_listen(s.listen)
        except ConfigError as exc:
            raise StartupRefused(str(exc), ExitCode.USAGE) from None
        requests = Counter(
            "plantd_proxy_requests",
            "HTTP requests answered, by route and status",
            ["method", "route", "status"],
            registry=ctx.metrics,
        )

        async def health() -> tuple[int, bytes]:
            status, checks = await ctx.health.evaluate()
            body = {"status": status, "version": __version__, "serviceId": "plantd-proxy",
                    "checks": checks}  # fmt: skip
            return (503 if status == "fail" else 200), json.dumps(body).encode()

        server = f"http://{s.listen}"
        document = openapi_document(ROUTES.routes, server=server)
        page = resources.files("plantd.proxy").joinpath("assets/docs.html").read_bytes()
        gate = TokenGate(Keyring.at_home(ctx.home.root).root, require=s.require_token)
        client = Client(s.endpoint, timeout=s.timeout)
        api = Api(
            client=client,
            state_bus=s.state_bus_sub,
            timeout=s.timeout,
            health=health,
            metrics=lambda: generate_latest(ctx.metrics),
            stopping=ctx.stop,
            openapi=lambda: document,
            docs_page=page,
        )
        app = build_app(
            api,
            ROUTES.routes,
            gate=gate,
            limiter=RateLimiter(s.rate_limit, s.rate_burst),
            cors=Cors(list(s.cors_origins)),
            max_body=s.max_body_bytes,
            observer=Observer(
                lambda method, route, status: requests.labels(method, route, str(status)).inc()
            ),
        )
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port, reuse_address=True)
            await site.start()
            bound = _bound_port(runner, port)
            ctx.set_endpoint(f"http://{host}:{bound}")
            ctx.add_check("proxy:broker", self._broker_check(client))
            ctx.log.info(
                "proxy listening on http://%s:%d (loopback only until identity enforcement;"
                " tokens %s)",
                host,
                bound,
                "required" if gate.required() else "not required: none issued",
            )
            ctx.set_ready()
            await ctx.stop.wait()
        finally:
            await runner.cleanup()
            await client.close()
            gate.close()

    @staticmethod
    def _broker_check(client: Client) -> Any:
        from plantd.client.reply import probe_async

        async def check() -> tuple[str, dict[str, Any]]:
            reason = await probe_async(client.endpoint)
            if reason is not None:
                return "warn", {"output": reason}
            return "pass", {"observedValue": client.endpoint}

        return check


def _bound_port(runner: web.AppRunner, asked: int) -> int:
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return int(addr[1])
    return asked


DAEMON = ProxyDaemon
