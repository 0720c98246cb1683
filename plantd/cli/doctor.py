"""``plant doctor``: check what usually goes wrong with a plantd installation, and say the fix.

Read-only: it reports stale pid files and taken ports but changes nothing. Each check gives
``ok``, ``warn`` or ``fail``; the exit code is that of the first failing check (3 broker
unreachable, 6 a port taken, 7 a service that does not answer, the key-file code for a
readable secret, 1 anything else), 0 when nothing fails.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from dataclasses import asdict, dataclass
from typing import Any

import typer

from plantd.cli import cli_state, client_settings, output_format
from plantd.cli.exitcodes import ExitCode
from plantd.cli.output import OutputFormat, emit

OUTPUT_OPT = typer.Option(None, "--output", "-o", help="Output format.")
_COLUMNS = ("check", "status", "detail", "fix")

#: SQLite builds before 3.51.3 can corrupt a WAL database on a WAL reset race, except the
#: fixed patch releases of the 3.44 and 3.50 branches
_WAL_RESET_FIXED = (3, 51, 3)
_WAL_RESET_BRANCH_FIXES = ((3, 44, 6), (3, 50, 7))
#: clock skew against the broker above this (beyond the round trip's uncertainty) is a warning:
#: TTLs, log and audit times and metric samples from different hosts stop lining up
SKEW_WARN_S = 0.5


@dataclass
class Finding:
    check: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""
    exit_code: int = ExitCode.OK

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.pop("exit_code")
        return doc


def wal_reset_affected(version: tuple[int, ...]) -> bool:
    """Whether an SQLite ``version`` has the WAL-reset bug (see :data:`_WAL_RESET_FIXED`)."""
    if version >= _WAL_RESET_FIXED:
        return False
    return not any(
        version[:2] == fixed[:2] and version >= fixed for fixed in _WAL_RESET_BRANCH_FIXES
    )


def check_versions() -> list[Finding]:
    import sqlite3  # imported here: a plain `plant state get` must not load it

    import zmq

    out = [Finding("python", "ok", sys.version.split()[0])]
    curve = zmq.has("curve")
    out.append(
        Finding(
            "zmq",
            "ok" if curve else "warn",
            f"pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()}, CURVE "
            + ("available" if curve else "missing"),
            "" if curve else "install a pyzmq wheel built with libsodium (secure mode needs CURVE)",
        )
    )
    affected = wal_reset_affected(sqlite3.sqlite_version_info)
    out.append(
        Finding(
            "sqlite",
            "warn" if affected else "ok",
            f"SQLite {sqlite3.sqlite_version}"
            + (" has the WAL-reset corruption bug" if affected else ""),
            "use a Python built with SQLite >= 3.51.3 (or 3.44.6+, 3.50.7+)" if affected else "",
        )
    )
    return out


def check_home(home: Any) -> list[Finding]:
    root = home.root
    if not root.exists():
        return [Finding("home", "ok", f"{root} does not exist yet (created on first start)")]
    mode = stat.S_IMODE(root.stat().st_mode)
    if not os.access(root, os.W_OK | os.X_OK):
        return [
            Finding(
                "home",
                "fail",
                f"{root} is not writable by this user",
                f"chown the directory or set PLANTD_HOME (mode {mode:o})",
                ExitCode.REJECTED,
            )
        ]
    if mode & 0o022:
        return [
            Finding(
                "home",
                "warn",
                f"{root} is writable by others (mode {mode:o})",
                f"chmod go-w {root}",
            )
        ]
    return [Finding("home", "ok", f"{root} (mode {mode:o})")]


def check_keys(home: Any) -> list[Finding]:
    """Secret key files of the keyring: refused by every daemon when group/others can read them."""
    from plantd.security.errors import IdentityError
    from plantd.security.keys import SECRET_SUFFIX, Keyring, check_secret_file

    ring = Keyring.at_home(home.root)
    if not ring.root.exists():
        return [Finding("keys", "ok", f"no keyring at {ring.root} (plant up creates it)")]
    out = []
    for path in sorted(
        {*ring.root.glob("*" + SECRET_SUFFIX), *ring.secrets_dir.glob("*" + SECRET_SUFFIX)}
    ):
        try:
            check_secret_file(path)
        except IdentityError as exc:
            out.append(
                Finding(
                    f"key {path.name}",
                    "fail",
                    str(exc).split(";")[0],
                    f"chmod 600 {path}",
                    exc.exit_code,
                )
            )
    mode = stat.S_IMODE(ring.root.stat().st_mode)
    if mode & 0o077:
        out.append(
            Finding(
                "keys",
                "warn",
                f"{ring.root} is open to others (mode {mode:o})",
                f"chmod 700 {ring.root}",
            )
        )
    return out or [Finding("keys", "ok", f"{ring.root}: every secret key file is private")]


def check_pid_files(home: Any) -> tuple[list[Finding], set[str]]:
    """Findings and the names of the daemons that run."""
    from plantd.daemons import process

    out, running = [], set()
    for name in process.pid_file_names(home):
        path = process.pid_file(home, name)
        info = process.read_pid_info(path)
        if info is not None and process.is_our_daemon(info):
            running.add(name)
            health = process.probe_health(info)[0]
            bad = health not in ("pass", "warn")
            out.append(
                Finding(
                    f"daemon {name}",
                    "fail" if bad else "ok",
                    f"pid {info.pid}, health {health}",
                    f"see {process.log_file(home, name)}" if bad else "",
                    ExitCode.REJECTED if bad else ExitCode.OK,
                )
            )
        else:
            what = f"pid {info.pid} is not {name}" if info is not None else "unreadable"
            out.append(
                Finding(
                    f"pid file {name}",
                    "warn",
                    f"stale: {path} ({what})",
                    f"plant daemon status {name} removes it",
                )
            )
    return out, running


def _bind_ports(name: str) -> list[tuple[str, int]]:
    """(host, port) the daemon ``name`` binds by its settings: its health port and, for the
    broker, every tcp endpoint."""
    from plantd import daemons
    from plantd.config import load_settings

    cls = daemons.load(name)
    settings = load_settings(cls.settings_class, name)
    out = []
    if getattr(settings, "health_port", 0):
        out.append((str(getattr(settings, "health_host", "127.0.0.1")), int(settings.health_port)))
    if name == "broker":
        for value in vars(settings).values():
            if isinstance(value, str) and value.startswith("tcp://"):
                host, _, port = value[6:].rpartition(":")
                if port.isdigit():
                    out.append((host, int(port)))
    return out


def _taken(host: str, port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0" if host in ("*", "") else host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def check_ports(running: set[str]) -> list[Finding]:
    """Ports a stopped daemon would bind that something else holds."""
    from plantd import daemons
    from plantd.daemons import process

    out = []
    for name in daemons.available():
        if name in running:
            continue
        for host, port in _bind_ports(name):
            if _taken(host, port):
                out.append(
                    Finding(
                        f"port {port}",
                        "fail",
                        f"{name} needs {host}:{port}: {process.port_in_use(port)}",
                        f"stop that process or set PLANTD_{name.upper()}_* to another port",
                        ExitCode.CONFLICT,
                    )
                )
    return out or [Finding("ports", "ok", "every port of a stopped daemon is free")]


def clock_skew(local_before: float, broker_time: float, local_after: float) -> tuple[float, float]:
    """(skew, uncertainty) of the broker's clock against ours: its time against the middle of
    the round trip, give or take half the round trip."""
    return broker_time - (local_before + local_after) / 2, (local_after - local_before) / 2


def _skew_finding(before: float, broker_time: float | None, after: float) -> Finding:
    if broker_time is None:
        return Finding("clock", "warn", "the broker does not report its time (older version)")
    skew, error = clock_skew(before, broker_time, after)
    off = abs(skew) - error > SKEW_WARN_S
    return Finding(
        "clock",
        "warn" if off else "ok",
        f"broker clock {skew:+.3f} s from this host (+/- {error:.3f} s)",
        "synchronise the clocks (chrony or systemd-timesyncd on every host)" if off else "",
    )


def _answers(client: Any, service: str, timeout: float) -> Finding:
    """Whether ``service`` answers a ``health`` request (every SDK module and daemon has one)."""
    from plantd.client.errors import PlantdError, RequestTimeout

    try:
        client.call(service, "health", {}, timeout=timeout)
    except RequestTimeout as exc:
        return Finding(
            f"service {service}",
            "fail",
            f"does not answer within {timeout:g} s: {exc}",
            f"see its daemon's log (plant log query -s {service}) or restart it",
            ExitCode.TIMEOUT,
        )
    except PlantdError as exc:  # an answer all the same (e.g. not authorized to ask)
        return Finding(f"service {service}", "ok", f"answers ({exc})")
    return Finding(f"service {service}", "ok", "answers")


def check_broker(ctx: typer.Context) -> list[Finding]:
    import time

    from plantd.client import SyncClient

    given = cli_state(ctx).timeout  # -t, else a short wait: doctor must answer quickly
    s = client_settings(ctx, timeout=given if given is not None else 1.0)
    try:
        with SyncClient(s.endpoint, timeout=s.timeout) as client:
            services = client.services()
            before = time.time()
            status = client.broker_status()
            after = time.time()
            answers = {
                e.name: _answers(client, e.name, s.timeout)
                for e in services
                if e.workers > 0 and not e.name.startswith("mmi.")
            }
    except Exception as exc:  # any failure means: not reachable from here
        return [
            Finding(
                "broker",
                "fail",
                f"{s.endpoint} unreachable: {exc}",
                "plant up (or plant daemon start broker)",
                ExitCode.UNREACHABLE,
            )
        ]
    out = [
        Finding("broker", "ok", f"{s.endpoint} answers ({len(services)} services)"),
        _skew_finding(before, status.time, after),
    ]
    for entry in services:
        if entry.name.startswith("mmi."):
            continue
        if entry.name in answers:
            out.append(answers[entry.name])
        else:
            out.append(
                Finding(
                    f"service {entry.name}",
                    "warn",
                    "0 workers: requests to it wait",
                    "start the daemon or module serving it",
                )
            )
    return out


def doctor(ctx: typer.Context, output: OutputFormat | None = OUTPUT_OPT) -> None:
    """Check versions, PLANTD_HOME, key files, pid files, ports, the broker, its clock and
    every service; say how to fix each."""
    from plantd.config import plantd_home

    home = plantd_home()
    pid_findings, running = check_pid_files(home)
    findings = [
        *check_versions(),
        *check_home(home),
        *check_keys(home),
        *pid_findings,
        *check_ports(running),
        *check_broker(ctx),
    ]
    emit([f.to_dict() for f in findings], output_format(ctx, output), columns=_COLUMNS)
    failed = [f for f in findings if f.status == "fail"]
    raise typer.Exit(int(failed[0].exit_code or ExitCode.REJECTED) if failed else ExitCode.OK)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
