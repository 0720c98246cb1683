"""Child processes: ``plant`` runs, daemon processes healthy before use, and teardown by PID.

Every wait is bounded and every process is killed by PID, so a hung daemon fails one test
instead of the whole run.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.polling import WaitTimeout, wait_until

#: ``plant`` as a subprocess
PLANT = [sys.executable, "-m", "plantd.cli.main"]
#: a daemon as `plant daemon start` launches it, without loading Typer
DAEMON_CMD = [sys.executable, "-m", "plantd.daemons.run"]
START_TIMEOUT = 20.0


def clean_env(home: Path, *, keyring: bool = True) -> dict[str, str]:
    """The test process environment without any PLANTD_* setting, plus an isolated home
    holding a copy of the session's keyring (security on, tests/support/keyring.py) unless
    ``keyring`` is False."""
    if keyring:
        from tests.support.keyring import install_keyring

        install_keyring(home)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANTD_")}
    env["PLANTD_HOME"] = str(home)
    env["XDG_CONFIG_HOME"] = str(home / "xdg-config")  # no user config file leaks in
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PLANTD_DEBUG", None)
    if os.environ.get("PLANTD_SECURITY") == "off":  # a test marked insecure
        env["PLANTD_SECURITY"] = "off"
    return env


def read_pid_file(home: Path, name: str) -> dict | None:
    """The daemon's facts: its state file (``run/NAME.json``) if it names the pid in
    ``run/NAME.pid``; the pid alone otherwise; a legacy JSON pid file as it is."""
    try:
        text = (home / "run" / f"{name}.pid").read_text().strip()
    except OSError:
        return None
    if not text.isdigit():
        try:
            legacy = json.loads(text)
        except ValueError:
            return None
        return legacy if isinstance(legacy, dict) else None
    try:
        facts = json.loads((home / "run" / f"{name}.json").read_text())
    except (OSError, ValueError):
        facts = {}
    return (
        facts if isinstance(facts, dict) and facts.get("pid") == int(text) else {"pid": int(text)}
    )


def http_get(url: str, timeout: float = 2.0) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a GET; HTTP error statuses are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def pid_alive(pid: int) -> bool:
    """Alive and not a zombie (daemons started detached are reaped by init, maybe late)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _reaped(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    return not pid_alive(pid)


def kill_pid(pid: int, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace``; reaps our own children."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)
    try:
        wait_until(lambda: _reaped(pid), grace, what=f"pid {pid} gone after SIGTERM")
    except WaitTimeout:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(WaitTimeout):
            wait_until(lambda: _reaped(pid), 5.0, what=f"pid {pid} gone after SIGKILL")


def kill_daemons_in(home: Path) -> None:
    """Kill every daemon that left a pid file in ``home`` (teardown safety net)."""
    run = home / "run"
    if not run.is_dir():
        return
    for pid_file in run.glob("*.pid"):
        info = read_pid_file(home, pid_file.stem)
        if info and isinstance(info.get("pid"), int) and info["pid"] != os.getpid():
            kill_pid(info["pid"])


def stop_process(proc: subprocess.Popen[Any], grace: float = 3.0) -> None:
    """SIGTERM a child we started, SIGKILL after ``grace``; reaped."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace)


def wait_healthy(
    proc: subprocess.Popen[Any],
    home: Path,
    name: str,
    output: Path,
    timeout: float = START_TIMEOUT,
    statuses: tuple[str, ...] = ("pass",),
) -> int:
    """Until daemon ``name`` (child ``proc``) wrote its pid file and its /healthz reports one
    of ``statuses``; returns its health port. Raises (with the output's tail) if it exits or
    stays unhealthy, killing it in the latter case."""

    def tail() -> str:
        return output.read_text(errors="replace")[-3000:] if output.exists() else ""

    def healthy() -> int | None:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}: {tail()}")
        info = read_pid_file(home, name)
        if info and info.get("pid") == proc.pid and info.get("health_port"):
            status, _, body = http_get(f"http://127.0.0.1:{info['health_port']}/healthz", 1.0)
            if status == 200 and json.loads(body).get("status") in statuses:
                return int(info["health_port"])
        return None

    try:
        return wait_until(healthy, timeout, interval=0.03, what=f"{name} healthy")
    except WaitTimeout:
        kill_pid(proc.pid)
        raise RuntimeError(f"{name} not healthy within {timeout}s: {tail()}") from None


@dataclass
class PlantRunner:
    """Runs ``plant`` as a subprocess with a given environment (bounded by ``timeout``)."""

    env: dict[str, str]
    calls: list[list[str]] = field(default_factory=list)

    def __call__(
        self,
        *args: str,
        timeout: float = 60.0,
        env: dict[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(args))
        return subprocess.run(
            [*PLANT, *args],
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )


def run_plant(
    env: dict[str, str], *args: str, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """One ``plant ARGS`` run in ``env`` (bounded)."""
    return PlantRunner(env)(*args, timeout=timeout)


def plant_popen(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """``plant ARGS`` left running, stdout and stderr piped (text)."""
    return subprocess.Popen(
        [*PLANT, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 15.0) -> tuple[int, str]:
    """Wait for ``proc`` (SIGKILL after ``timeout``); (exit code, stderr)."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    assert proc.stderr is not None
    return proc.returncode, proc.stderr.read()


class JsonLines:
    """Reads a child's stdout JSON lines on a thread (bounded waits in the test)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.q: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.q.put(line)

    def take(self, n: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        out, deadline = [], time.monotonic() + timeout
        while len(out) < n:
            left = deadline - time.monotonic()
            assert left > 0, f"only {len(out)} of {n} lines: {out}"
            with contextlib.suppress(queue.Empty):
                out.append(json.loads(self.q.get(timeout=min(left, 0.5))))
        return out


class Daemon:
    """A daemon process started with :data:`DAEMON_CMD`, healthy (pass or warn) when returned."""

    def __init__(self, name: str, env: dict[str, str], home: Path) -> None:
        self.name = name
        self.home = home
        self.out = home / f"{name}.out"
        with self.out.open("wb") as fh:
            self.proc = subprocess.Popen(
                [*DAEMON_CMD, name],
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.health_port = wait_healthy(self.proc, home, name, self.out, statuses=("pass", "warn"))

    def text(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    def stop(self) -> int | None:
        kill_pid(self.proc.pid)
        try:
            return self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None
