"""Background daemon management for the CLI: pid files, detached start, stop, status.

The daemon itself writes two files once its health endpoint is bound: the pid file
(``$PLANTD_HOME/run/<name>.pid``, the pid alone on one line, as ``kill $(cat ...)``,
systemd's ``PIDFile=`` and every supervisor expect) and the state file next to it
(``run/<name>.json``: ``{name, pid, started, health_host, health_port, endpoint, version}``).
They are the only channel between the CLI and a daemon, so both are written atomically and
validated defensively: a pid that is dead, a zombie, or not a plantd process for that daemon
marks them stale and they are removed. A JSON pid file left by an older plantd is still read,
so an upgrade does not orphan running daemons.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from plantd.config import Home, env_var, plantd_home
from plantd.exitcodes import ExitCode

__all__ = [
    "AlreadyRunning",
    "DaemonError",
    "DaemonStatus",
    "PidInfo",
    "PortInUse",
    "StartFailed",
    "check_running",
    "probe_health",
    "start",
    "status",
    "stop",
]

POLL_INTERVAL = 0.1


class DaemonError(Exception):
    """Process management failed; ``log_tail`` carries the daemon's last log lines."""

    def __init__(self, message: str, log_tail: list[str] | None = None) -> None:
        super().__init__(message)
        self.log_tail = log_tail or []


class AlreadyRunning(DaemonError):
    """A live daemon of that name already owns the pid file."""

    exit_code = ExitCode.CONFLICT


class StartFailed(DaemonError):
    """The daemon exited or did not become healthy in time."""

    exit_code = ExitCode.REJECTED


class PortInUse(StartFailed):
    """The daemon could not bind a port another process holds."""

    exit_code = ExitCode.CONFLICT


#: the port of a bind address in an error message (zmq: ``(addr='tcp://127.0.0.1:9797')``)
_ADDR_PORT = re.compile(r"addr='[^']*:(\d+)'")
#: the message of a logfmt line (``... msg="..."``)
_LOG_MSG = re.compile(r'msg="((?:[^"\\]|\\.)*)"')


def address_in_use(exc: BaseException) -> bool:
    """``exc`` is a failed bind of an address another socket holds (OSError or ZMQError)."""
    return getattr(exc, "errno", None) == errno.EADDRINUSE


def port_holder(port: int) -> str | None:
    """``pid N (name)`` of the process listening on TCP ``port``, if psutil can tell."""
    import psutil

    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return None
    for conn in conns:
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
            if conn.pid is None:
                return None
            try:
                return f"pid {conn.pid} ({psutil.Process(conn.pid).name()})"
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                return f"pid {conn.pid}"
    return None


def port_in_use(port: int | None, address: str | None = None) -> str:
    """One line naming the taken port and, where psutil can tell, who holds it."""
    where = f"port {port}" if port else "a port"
    if address:
        where += f" ({address})"
    holder = port_holder(port) if port else None
    return f"{where} is in use" + (f" by {holder}" if holder else "")


def _port_conflict_line(log_lines: list[str]) -> str | None:
    """The daemon's "cannot start: port N ... is in use" message among its last log lines."""
    for line in reversed(log_lines):
        found = _LOG_MSG.search(line)
        if found and "cannot start: port" in found[1] and "is in use" in found[1]:
            return found[1]
    return None


def port_conflict(exc: BaseException) -> str:
    """:func:`port_in_use` for a failed bind whose message names the address (zmq does)."""
    found = _ADDR_PORT.search(str(exc))
    address = found.group(0)[6:-1] if found else None
    return port_in_use(int(found.group(1)) if found else None, address)


@dataclass
class PidInfo:
    name: str
    pid: int
    started: float = 0.0
    health_host: str = "127.0.0.1"
    health_port: int = 0
    endpoint: str | None = None
    version: str | None = None

    @property
    def health_url(self) -> str:
        return f"http://{self.health_host}:{self.health_port}/healthz"


@dataclass
class DaemonStatus:
    name: str
    state: str  # running | stopped
    pid: int | None = None
    uptime: float | None = None
    health: str | None = None  # pass | warn | fail | unreachable
    endpoint: str | None = None
    health_url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pid_file(home: Home, name: str) -> Path:
    return home.run / f"{name}.pid"


def pid_file_names(home: Home) -> list[str]:
    """Names of every daemon and module that left a pid file in ``home`` (sorted)."""
    return sorted(path.stem for path in home.run.glob("*.pid")) if home.run.is_dir() else []


def state_file(pid_path: Path) -> Path:
    """The state file that sits next to ``pid_path`` (``run/<name>.json``)."""
    return pid_path.with_suffix(".json")


def log_file(home: Home, name: str) -> Path:
    return home.log / f"{name}.log"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return _read_json_text(path.read_text(encoding="utf-8"))
    except OSError:
        return None


def read_pid_info(path: Path) -> PidInfo | None:
    """Parse a pid file and its state file; None if missing or unreadable (stale to callers).

    A pid file holding a JSON document is one written by an older plantd: its facts are read
    from it directly. The state file's facts are used only if it names the same pid.
    """
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    if text.isdigit():
        doc = _read_json(state_file(path)) or {}
        if doc.get("pid") != int(text):
            doc = {}
        doc["pid"] = int(text)
    else:
        legacy = _read_json_text(text)
        if legacy is None:
            return None
        doc = legacy
    try:
        return PidInfo(
            name=str(doc.get("name", path.stem)),
            pid=int(doc["pid"]),
            started=float(doc.get("started") or 0.0),
            health_host=str(doc.get("health_host") or "127.0.0.1"),
            health_port=int(doc.get("health_port") or 0),
            endpoint=doc.get("endpoint"),
            version=doc.get("version"),
        )
    except (ValueError, KeyError, TypeError):
        return None


def _read_json_text(text: str) -> dict[str, Any] | None:
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _write_atomically(path: Path, text: str) -> None:
    """tmp + rename, so readers never see a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_pid_info(path: Path, info: Mapping[str, Any]) -> None:
    """Write the state file, then the pid file: a reader that sees the pid finds its facts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(state_file(path), json.dumps(dict(info)))
    _write_atomically(path, f"{int(info['pid'])}\n")


def remove_pid_file(path: Path, pid: int | None = None) -> None:
    """Remove the pid file, but only if it still names ``pid`` (when given)."""
    if pid is not None:
        info = read_pid_info(path)
        if info is not None and info.pid != pid:
            return
    for stale in (path, state_file(path)):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


def _reap(pid: int) -> None:
    """Collect our own exited child so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def process_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie (a zombie has already exited)."""
    import psutil

    _reap(pid)
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def is_our_daemon(info: PidInfo) -> bool:
    """The pid is alive, runs plantd for this daemon, and predates the pid file (no reuse)."""
    import psutil

    if info.pid <= 0 or not process_alive(info.pid):
        return False
    try:
        proc = psutil.Process(info.pid)
        cmdline = proc.cmdline()
        created = proc.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    # python -m plantd.daemons.run NAME | python -m plantd.cli.main daemon run NAME |
    # .venv/bin/plant daemon run NAME
    looks_plantd = "plantd" in " ".join(cmdline) or any(
        os.path.basename(arg) == "plant" for arg in cmdline
    )
    if not looks_plantd:
        return False
    if info.name not in cmdline:
        return False
    return not (info.started and created > info.started + 2.0)


def check_running(home: Home, name: str) -> PidInfo | None:
    """Pid info of the live daemon ``name``; removes a stale pid file and returns None."""
    path = pid_file(home, name)
    if not path.exists():
        return None
    info = read_pid_info(path)
    if info is not None and is_our_daemon(info):
        return info
    remove_pid_file(path, info.pid if info is not None else None)
    return None


def probe_health(info: PidInfo, timeout: float = 1.0) -> tuple[str, dict[str, Any]]:
    """GET /healthz: ("pass"|"warn"|"fail", body) or ("unreachable", {"output": reason})."""
    if not info.health_port:
        return "unreachable", {"output": "no health port in pid file"}
    try:
        with urllib.request.urlopen(info.health_url, timeout=timeout) as resp:
            body = json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:  # 503 carries the health document too
        try:
            body = json.loads(exc.read() or b"{}")
        except ValueError:
            body = {}
        return str(body.get("status", "fail")), body
    except (OSError, ValueError) as exc:
        return "unreachable", {"output": str(getattr(exc, "reason", exc))}
    return str(body.get("status", "fail")), body


def tail(path: Path, lines: int = 15, start_offset: int = 0) -> list[str]:
    """Last ``lines`` lines of ``path`` written after ``start_offset``."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, start_offset))
            data = fh.read()
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-lines:]


def daemon_command(name: str) -> list[str]:
    """How a detached daemon is launched: this interpreter, so venvs need no PATH setup."""
    return [sys.executable, "-m", "plantd.daemons.run", name]


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(POLL_INTERVAL)
    return not process_alive(pid)


def _terminate(pid: int, timeout: float) -> bool:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; True if it stopped gracefully."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_gone(pid, timeout):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _wait_gone(pid, 5.0)
    return False


def start(
    name: str,
    home: Home | None = None,
    overrides: Mapping[str, Any] | None = None,
    timeout: float = 20.0,
) -> DaemonStatus:
    """Start ``name`` detached; wait until /healthz answers 200 (pass or warn), bounded.

    ``overrides`` become ``PLANTD_<NAME>_<SETTING>`` variables of the child, so the daemon
    sees exactly the configuration layering it would have in the foreground.
    """
    home = (home or plantd_home()).ensure()
    running = check_running(home, name)
    if running is not None:
        raise AlreadyRunning(f"{name} is already running (pid {running.pid})")

    env = dict(os.environ)
    env["PLANTD_HOME"] = str(home.root)
    for key, value in (overrides or {}).items():
        if value is not None:
            env[env_var(name, key)] = str(value)
    log_path = log_file(home, name)
    offset = log_path.stat().st_size if log_path.exists() else 0
    with log_path.open("ab") as log_fh:
        child = subprocess.Popen(
            daemon_command(name),
            stdin=subprocess.DEVNULL,
            stdout=log_fh,
            stderr=log_fh,
            env=env,
            start_new_session=True,  # survives the CLI and its terminal's SIGINT/SIGHUP
            close_fds=True,
        )

    deadline = time.monotonic() + timeout
    last = "no pid file yet"
    while time.monotonic() < deadline:
        rc = child.poll()
        if rc == ExitCode.CONFLICT:
            lines = tail(log_path, 15, offset)
            reason = _port_conflict_line(lines)
            if reason is not None:
                raise PortInUse(reason, lines)
        if rc is not None:
            raise StartFailed(
                f"{name} exited with code {rc} during start", tail(log_path, 15, offset)
            )
        info = read_pid_info(pid_file(home, name))
        if info is not None and info.pid == child.pid:
            health, body = probe_health(info, timeout=1.0)
            if health in ("pass", "warn"):  # HTTP 200: serving, perhaps degraded
                return status(name, home)
            last = f"health {health}"
            if health == "fail":
                last += ": " + _failing_checks(body)
        time.sleep(POLL_INTERVAL)

    _terminate(child.pid, 5.0)
    child.poll()
    raise StartFailed(
        f"{name} did not become healthy within {timeout:g}s ({last})", tail(log_path, 15, offset)
    )


def _failing_checks(body: Mapping[str, Any]) -> str:
    out = []
    for check, entries in (body.get("checks") or {}).items():
        for entry in entries if isinstance(entries, list) else [entries]:
            if isinstance(entry, dict) and entry.get("status") != "pass":
                out.append(f"{check}={entry.get('output', entry.get('status'))}")
    return ", ".join(out) or "unknown"


def stop(name: str, home: Home | None = None, timeout: float = 10.0) -> bool:
    """Stop ``name`` (SIGTERM, then SIGKILL after ``timeout``); False if it was not running."""
    home = home or plantd_home()
    info = check_running(home, name)
    if info is None:
        return False
    _terminate(info.pid, timeout)
    remove_pid_file(pid_file(home, name), info.pid)
    return True


def status(name: str, home: Home | None = None, probe: bool = True) -> DaemonStatus:
    """Name, state, pid, uptime, health and endpoint of ``name``."""
    home = home or plantd_home()
    info = check_running(home, name)
    if info is None:
        return DaemonStatus(name=name, state="stopped")
    health = probe_health(info)[0] if probe else None
    return DaemonStatus(
        name=name,
        state="running",
        pid=info.pid,
        uptime=round(time.time() - info.started, 1) if info.started else None,
        health=health,
        endpoint=info.endpoint,
        health_url=info.health_url,
    )
