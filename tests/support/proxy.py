"""A real stack behind the proxy: broker, state, logger and metric daemons plus the proxy
daemon, on random ports in one PLANTD_HOME, and a small HTTP client for it."""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.broker import BrokerProcess, daemon_env, start_broker
from tests.support.broker import broker_env as make_broker_env
from tests.support.ports import free_port
from tests.support.processes import Daemon, clean_env, kill_daemons_in, kill_pid, read_pid_file
from tests.support.state import state_settings


@dataclass
class HttpReply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class ProxyStack:
    home: Path
    broker: BrokerProcess
    proxy: Daemon
    url: str
    daemons: list[Daemon]
    #: an API token of the admin principal, sent with every request unless ``headers``
    #: carry their own Authorization (None: requests go out anonymous)
    token: str | None = None

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @property
    def env(self) -> dict[str, str]:
        """For ``plant`` runs against this stack's broker."""
        return dict(self.broker.env, PLANTD_HOME=str(self.home))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> HttpReply:
        """One HTTP request; error statuses are returned, not raised."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for name, value in {**self.auth, **(headers or {})}.items():
            req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return HttpReply(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as exc:
            return HttpReply(exc.code, dict(exc.headers), exc.read())


def proxy_env(broker: BrokerProcess, **extra: str) -> dict[str, str]:
    """Proxy settings attached to ``broker`` on a free loopback port."""
    port = free_port()
    return daemon_env(
        broker,
        "proxy",
        listen=f"127.0.0.1:{port}",
        state_bus_sub=broker.bus("state")[1],
        timeout="3",
        **extra,
    )


def admin_token(env: dict[str, str], home: Path) -> str:
    """A fresh API token of the ``admin`` principal (``plant identity token create``)."""
    import subprocess

    from tests.support.processes import PLANT

    out = subprocess.run(
        [*PLANT, "identity", "token", "create", "admin", "-o", "json"],
        env=dict(env, PLANTD_HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return str(json.loads(out.stdout)["token"])


def start_proxy(broker: BrokerProcess, home: Path, **extra: str) -> tuple[Daemon, str]:
    """The proxy daemon, healthy; (process, base URL)."""
    d = Daemon("proxy", proxy_env(broker, **extra), home)
    info = read_pid_file(home, "proxy") or {}
    return d, str(info["endpoint"])


@contextlib.contextmanager
def proxy_stack(home: Path, **proxy_settings: str) -> Iterator[ProxyStack]:
    """Broker, state, logger, metric and proxy daemons in ``home``; all killed at the end."""
    home.mkdir(parents=True, exist_ok=True)
    broker = start_broker(make_broker_env(clean_env(home)), home)
    daemons: list[Daemon] = []
    try:
        state_front, _ = broker.bus("state")
        _, log_back = broker.bus("log")
        _, event_back = broker.bus("event")
        metric_front, metric_back = broker.bus("metric")
        daemons.append(
            Daemon(
                "state", state_settings(daemon_env(broker, "state", state_bus=state_front)), home
            )
        )
        daemons.append(
            Daemon(
                "logger",
                daemon_env(broker, "logger", log_bus_sub=log_back, event_bus_sub=event_back,
                           flush_interval="0.02"),
                home,
            )
        )  # fmt: skip
        daemons.append(
            Daemon(
                "metric",
                daemon_env(broker, "metric", metric_bus=metric_front, metric_bus_sub=metric_back,
                           host_interval="0", flush_interval="0.05",
                           signals="sine period=10 rate=5 channel=temp units=C device=sim"),
                home,
            )
        )  # fmt: skip
        proxy, url = start_proxy(broker, home, **proxy_settings)
        daemons.append(proxy)
        # security is on: anonymous HTTP acts as the proxy's own principal (read-only); the
        # tests act as admin through a token, as an operator's script would
        yield ProxyStack(home, broker, proxy, url, daemons, admin_token(broker.env, home))
    finally:
        for d in reversed(daemons):
            d.stop()
        kill_pid(broker.pid)
        kill_daemons_in(home)


@dataclass
class SseEvent:
    id: str | None
    event: str | None
    data: Any


class SseReader:
    """A Server-Sent Events stream read with bounded waits (http.client, socket timeout)."""

    def __init__(self, url: str, path: str, headers: dict[str, str] | None = None) -> None:
        import http.client
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10.0)
        self.conn.request("GET", path, headers={"Accept": "text/event-stream", **(headers or {})})
        self.response = self.conn.getresponse()
        self.status = self.response.status

    def take(self, n: int, timeout: float = 15.0) -> list[SseEvent]:
        """The next ``n`` events (comments skipped); raises if they do not come in time."""
        import time

        events: list[SseEvent] = []
        fields: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while len(events) < n:
            assert time.monotonic() < deadline, f"only {len(events)} of {n} events"
            line = self.response.fp.readline().decode()
            assert line, f"stream ended after {len(events)} of {n} events"
            line = line.rstrip("\n")
            if line == "":
                if "data" in fields:
                    events.append(
                        SseEvent(fields.get("id"), fields.get("event"), json.loads(fields["data"]))
                    )
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
        return events

    def close(self) -> None:
        self.conn.close()
