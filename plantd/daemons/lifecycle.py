"""The one daemon lifecycle every plantd daemon runs on.

A daemon only implements :meth:`Daemon.run`; :func:`run_daemon` does the rest identically
for all of them: settings layering, logging (file + stderr), pid file, graceful SIGTERM/SIGINT,
the health/metrics HTTP endpoint and cleanup. Writing a new daemon::

    @dataclass
    class EchoSettings(DaemonSettings):
        health_port: int = 8084
        endpoint: str = "tcp://127.0.0.1:9797"

    class EchoDaemon(Daemon[EchoSettings]):
        name = "echo"
        settings_class = EchoSettings

        async def run(self, ctx: DaemonContext) -> None:
            ctx.add_check("worker", lambda: ("pass", {}))
            ctx.set_ready()          # /healthz reports "fail" until this is called
            await ctx.stop.wait()    # return promptly once stop is set

and register its module in :mod:`plantd.daemons`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from plantd import __version__, tracing
from plantd.config import ConfigError, DaemonSettings, Home, load_settings, plantd_home
from plantd.daemons import journald, process
from plantd.daemons.health import Check, HealthRegistry, HealthServer
from plantd.daemons.systemd import Notifier
from plantd.exitcodes import ExitCode
from plantd.vocabulary import LEVEL_NAMES, SERVICE_PREFIX

__all__ = [
    "Daemon",
    "DaemonContext",
    "DaemonSettings",
    "StartupRefused",
    "run_daemon",
    "setup_logging",
]

#: how often readiness is re-evaluated for systemd until the daemon is healthy
READY_POLL_SECONDS = 0.1

#: how often the log-bus handler checks whether the logger arrived (see plantd.logbus)
LOG_BUS_PUMP_SECONDS = 0.2

# How long a daemon gets to return from run() after stop is set before it is cancelled.
STOP_GRACE_SECONDS = 10.0

#: the ``log_level`` setting accepts the canonical names and ``warn``
_LEVELS = {**{name: number for number, name in LEVEL_NAMES.items()}, "warn": logging.WARNING}


class StartupRefused(Exception):
    """A daemon declines to start for a reason the operator must fix (file locked by another
    instance, corrupt database...): logged as one line, no traceback, with its exit code."""

    def __init__(self, message: str, exit_code: int = ExitCode.REJECTED) -> None:
        super().__init__(message)
        self.exit_code = int(exit_code)


SettingsT = TypeVar("SettingsT", bound=DaemonSettings)


class Daemon(ABC, Generic[SettingsT]):
    """Base class: a name, a settings dataclass and an async ``run`` until ``ctx.stop``.

    Generic in its settings type, so ``self.settings`` is typed in every daemon:
    ``class StateDaemon(Daemon[StateSettings])`` with ``settings_class = StateSettings``
    (the class the lifecycle loads from file, environment and flags; a ClassVar cannot be
    generic, so the two are kept equal by hand).
    """

    name: ClassVar[str]
    settings_class: ClassVar[type[DaemonSettings]] = DaemonSettings
    description: ClassVar[str] = ""
    #: service name on the log bus (topic ``<service>.<level>``); default org.plantd.<Name>
    service: ClassVar[str | None] = None

    def __init__(self, settings: SettingsT) -> None:
        self.settings: SettingsT = settings

    @abstractmethod
    async def run(self, ctx: DaemonContext) -> None:
        """Serve until ``ctx.stop`` is set, then clean up and return."""

    def service_name(self) -> str:
        return self.service or SERVICE_PREFIX + self.name.capitalize()

    def log_bus_endpoint(self) -> str | None:
        """Where to publish log records (``settings.log_bus``; empty or "off" disables)."""
        value = str(getattr(self.settings, "log_bus", "") or "").strip()
        return None if value.lower() in ("", "off", "none", "false") else value

    def endpoint(self) -> str | None:
        """The endpoint shown by ``plant daemon status`` (default: ``settings.endpoint``)."""
        value = getattr(self.settings, "endpoint", None)
        return str(value) if value is not None else None


@dataclass
class DaemonContext:
    """Everything the lifecycle hands a running daemon."""

    name: str
    settings: DaemonSettings
    home: Home
    log: logging.Logger
    stop: asyncio.Event
    health: HealthRegistry
    metrics: Any  # prometheus_client.CollectorRegistry
    pid_file: Path
    info: dict[str, Any] = field(default_factory=dict)
    ready: bool = False

    def add_check(self, name: str, check: Check) -> None:
        """Add a health check returning ("pass"|"warn"|"fail", detail dict)."""
        self.health.add_check(name, check)

    def set_ready(self) -> None:
        """Mark the daemon as serving; until then /healthz fails so `start` keeps waiting."""
        self.ready = True
        self.log.info("%s ready", self.name)

    def set_endpoint(self, endpoint: str) -> None:
        """Record the endpoint actually bound (e.g. after binding port 0) in the state file."""
        self.info["endpoint"] = endpoint
        if self.info.get("pid") == os.getpid():
            process.write_pid_info(self.pid_file, self.info)


class _LogfmtFormatter(logging.Formatter):
    """``ts=... level=... daemon=... logger=... msg="..."``: greppable and machine-parsable."""

    def __init__(self, daemon: str) -> None:
        super().__init__()
        self.daemon = daemon

    @staticmethod
    def _quote(value: str) -> str:
        if value and not any(c in value for c in ' "=\n\t'):
            return value
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        msg = record.getMessage()
        if record.exc_info:
            msg = f"{msg}\n{self.formatException(record.exc_info)}"
        return (
            f"ts={ts}.{int(record.msecs):03d} level={record.levelname.lower()} "
            f"daemon={self.daemon} logger={record.name} msg={self._quote(msg)}"
        )


def _same_file(stream: Any, path: Path) -> bool:
    try:
        a = os.fstat(stream.fileno())
        b = path.stat()
    except (OSError, AttributeError, ValueError):
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def parse_log_level(value: str, source: str) -> int:
    level = _LEVELS.get(str(value).strip().lower())
    if level is None:
        raise ConfigError(f"{source}={value!r}: expected one of {', '.join(_LEVELS)}")
    return level


def setup_logging(name: str, level: int, log_file: Path) -> logging.Logger:
    """Log to ``log_file`` and stderr (once, if stderr already is that file when detached), or
    to the journal with structured fields instead of stderr when systemd started us."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    formatter = _LogfmtFormatter(name)
    file_handler = logging.FileHandler(log_file, encoding="utf-8")
    file_handler.setFormatter(formatter)
    root.addHandler(file_handler)
    if journald.journal_stream_is_stderr():  # started by systemd: structured journal entries
        address = os.environ.get("PLANTD_JOURNAL_SOCKET") or journald.JOURNAL_SOCKET
        root.addHandler(journald.JournalHandler(name, address))
    elif not _same_file(sys.stderr, log_file):
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(formatter)
        root.addHandler(stream)
    root.setLevel(level)
    # third-party chatter stays at warning unless we debug
    for noisy in ("aiohttp", "asyncio"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    return logging.getLogger(f"plantd.{name}")


def _install_log_bus(daemon: Daemon[Any], log: logging.Logger) -> Any:
    """Also publish log records on the log bus so `plant bus tail log` and the logger see them.

    Best effort: without a bus (or the logbus module) the daemon still logs to its file.
    Returns the handler (None without one). ``logging.shutdown()`` at the end of
    :func:`run_daemon` closes it, which lingers (bounded) so the last records get out.
    """
    endpoint = daemon.log_bus_endpoint()
    if endpoint is None:
        return None
    try:
        from plantd.logbus import install_log_bus

        return install_log_bus(daemon.service_name(), endpoint)
    except Exception as exc:
        log.warning("log bus %s unavailable: %s", endpoint, exc)
        return None


async def _pump_log_bus(handler: Any, interval: float = LOG_BUS_PUMP_SECONDS) -> None:
    """Let the log handler see the logger arrive and replay its backlog, even while the
    daemon logs nothing (start-up lines of a daemon started before the logger)."""
    while True:
        await asyncio.sleep(interval)
        handler.pump()


async def _announce_ready(
    notifier: Notifier, checks: HealthRegistry, stop: asyncio.Event, name: str
) -> None:
    """Send READY=1 once /healthz would answer 200 (pass or warn): the moment `plant up`
    considers the daemon started, so systemd starts dependent units no earlier."""
    while not stop.is_set():
        status, _ = await checks.evaluate()
        if status in ("pass", "warn"):
            notifier.ready(f"{name} serving (health {status})")
            return
        await asyncio.sleep(READY_POLL_SECONDS)


async def _ping_watchdog(notifier: Notifier, interval: float, stop: asyncio.Event) -> None:
    """WATCHDOG=1 every ``interval`` seconds from the event loop: a loop that hangs stops
    pinging and systemd restarts the daemon."""
    while not stop.is_set():
        notifier.watchdog()
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except TimeoutError:
            pass


def _install_security(name: str, env: Mapping[str, str]) -> None:
    """Load daemon ``name``'s own key (refusing an unsafe secret file, exit 9) and make it
    the process default, so every client, worker and publisher the daemon opens
    authenticates as its principal (plantd.security.settings)."""
    from plantd.security import settings as security

    security.install(security.daemon_security(name, env))


def _err(message: str) -> None:
    print(f"plantd: {message}", file=sys.stderr, flush=True)


def run_daemon(
    name: str,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Run daemon ``name`` in the foreground until SIGTERM/SIGINT; returns an exit code."""
    from plantd import daemons

    env = os.environ if env is None else env
    try:
        cls = daemons.load(name)
        settings = load_settings(cls.settings_class, name, overrides, env)
        level = parse_log_level(settings.log_level, f"PLANTD_{name.upper()}_LOG_LEVEL")
    except (ConfigError, daemons.UnknownDaemon) as exc:
        _err(str(exc))
        return ExitCode.USAGE

    home = plantd_home(env).ensure()
    pid_file = process.pid_file(home, name)
    running = process.check_running(home, name)
    if running is not None and running.pid != os.getpid():
        _err(f"{name} is already running (pid {running.pid})")
        return ExitCode.CONFLICT

    try:
        _install_security(name, env)
    except Exception as exc:  # plantd.security errors: one line, their own exit code
        _err(f"{name} refusing to start: {exc}")
        code = getattr(exc, "exit_code", ExitCode.REJECTED)
        return int(code) if isinstance(code, int) else int(ExitCode.REJECTED)

    log = setup_logging(name, level, home.log / f"{name}.log")
    tracing.set_service_name(f"plantd-{name}")
    tracing.current()  # PLANTD_TRACING/OTEL_*: the SDK is set up now, not by the first request
    daemon = cls(settings)
    try:
        return asyncio.run(_serve(daemon, settings, home, pid_file, log))
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    finally:
        tracing.shutdown()  # export the last spans
        logging.shutdown()


async def _serve(
    daemon: Daemon[Any], settings: DaemonSettings, home: Home, pid_file: Path, log: logging.Logger
) -> int:
    from prometheus_client import (
        CollectorRegistry,
        Gauge,
        Info,
        PlatformCollector,
        ProcessCollector,
    )

    name = daemon.name
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    started = time.time()
    # no `daemon` label: each /metrics is one daemon, and scrape configs commonly put a
    # `daemon` target label on it (a clash Prometheus resolves by renaming to exported_daemon)
    Gauge(
        "plantd_daemon_start_time_seconds",
        "Unix time the daemon started",
        registry=registry,
    ).set(started)
    Info("plantd_daemon", "Which plantd daemon this is", registry=registry).info(
        {"name": name, "version": __version__}
    )
    # the requests this daemon sends (plantd.client.metrics): the proxy's, a module's calls
    from plantd.client.metrics import client_families
    from plantd.telemetry import FamilyCollector

    registry.register(FamilyCollector(client_families))

    checks = HealthRegistry()
    ctx = DaemonContext(
        name=name,
        settings=settings,
        home=home,
        log=log,
        stop=stop,
        health=checks,
        metrics=registry,
        pid_file=pid_file,
    )

    def lifecycle_check() -> tuple[str, dict[str, Any]]:
        if stop.is_set():
            return "fail", {"output": "stopping"}
        if not ctx.ready:
            return "fail", {"output": "starting"}
        return "pass", {"observedValue": round(time.time() - started, 3), "observedUnit": "s"}

    checks.add_check("lifecycle:uptime", lifecycle_check)

    main_task: asyncio.Task[None] | None = None

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second %s: stopping now", signal.Signals(signum).name)
            if main_task is not None:
                main_task.cancel()
            return
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    server = HealthServer(
        f"plantd-{name}",
        checks,
        registry,
        settings.health_host,
        settings.health_port,
        description=daemon.description or f"plantd {name} daemon",
    )
    try:
        port = await server.start()
    except OSError as exc:
        if process.address_in_use(exc):
            log.error(
                "%s cannot start: %s: cannot bind health endpoint %s:%s",
                name,
                process.port_in_use(settings.health_port),
                settings.health_host,
                settings.health_port,
            )
        else:
            log.error(
                "cannot bind health endpoint %s:%s: %s",
                settings.health_host,
                settings.health_port,
                exc.strerror or exc,
            )
        return ExitCode.CONFLICT

    ctx.info.update(
        name=name,
        pid=os.getpid(),
        started=started,
        health_host=settings.health_host,
        health_port=port,
        endpoint=daemon.endpoint(),
        version=__version__,
    )
    process.write_pid_info(pid_file, ctx.info)
    log_bus = _install_log_bus(daemon, log)
    log.info("%s starting (pid %d, version %s)", name, os.getpid(), __version__)

    rc = int(ExitCode.OK)
    notifier = Notifier()
    notifier.status(f"{name} starting")
    main_task = asyncio.create_task(daemon.run(ctx), name=f"{name}.run")
    stop_wait = asyncio.create_task(stop.wait())
    systemd_tasks: list[asyncio.Task[None]] = []  # (and the log-bus pump)
    if log_bus is not None:
        systemd_tasks.append(asyncio.create_task(_pump_log_bus(log_bus), name="log-bus.pump"))
    if notifier.enabled:
        systemd_tasks.append(asyncio.create_task(_announce_ready(notifier, checks, stop, name)))
        if notifier.watchdog_interval is not None:
            systemd_tasks.append(
                asyncio.create_task(_ping_watchdog(notifier, notifier.watchdog_interval, stop))
            )
    try:
        await asyncio.wait({main_task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        notifier.stopping(f"{name} stopping")
        if not main_task.done():
            done, _ = await asyncio.wait({main_task}, timeout=STOP_GRACE_SECONDS)
            if not done:
                log.warning("%s did not stop within %.0fs: cancelling", name, STOP_GRACE_SECONDS)
                main_task.cancel()
                await asyncio.wait({main_task}, timeout=5.0)
        failure = main_task.exception() if main_task.done() and not main_task.cancelled() else None
        if isinstance(failure, StartupRefused):
            log.error("%s refusing to start: %s", name, failure)
            rc = failure.exit_code
        elif failure is not None and process.address_in_use(failure):
            log.error("%s cannot start: %s", name, process.port_conflict(failure))
            rc = int(ExitCode.CONFLICT)
        elif failure is not None:
            log.error("%s failed: %s: %s", name, type(failure).__name__, failure, exc_info=failure)
            rc = int(ExitCode.REJECTED)
        elif not stop.is_set():
            log.warning("%s returned without being asked to stop", name)
    finally:
        stop.set()
        stop_wait.cancel()
        for task in systemd_tasks:
            task.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await server.stop()
        process.remove_pid_file(pid_file, os.getpid())
        log.info("%s stopped (exit %d)", name, rc)
    return rc
