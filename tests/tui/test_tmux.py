"""`plant tui` in a real terminal: tmux at 80x24 (the SSH default) against a real stack.

What pilot tests cannot see: the real CLI entry point, terminal setup/teardown, the exit code,
and a traceback printed after the app left the alternate screen. Keys go in with
`tmux send-keys`, the screen comes back with `tmux capture-pane`. A private tmux server
(`-L`, no config file) keeps the operator's own tmux untouched; it is killed at the end.
`scripts/tui-smoke` runs this module.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.plant_up import PlantUpStack
from tests.support.polling import WaitTimeout, wait_until

if shutil.which("tmux") is None:
    pytest.skip("tmux not on PATH (apt-get install -y tmux)", allow_module_level=True)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
EXIT_MARK = "TUI-EXIT="


@dataclass
class Tmux:
    """One detached 80x24 session on a private server."""

    socket: str
    session: str = "tui"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            timeout=10,
            stdin=subprocess.DEVNULL,
        )

    def keys(self, *keys: str) -> None:
        for key in keys:  # one at a time, like a person: each key is its own event
            res = self.run("send-keys", "-t", self.session, key)
            assert res.returncode == 0, res.stderr
            time.sleep(0.15)

    def screen(self, history: bool = False) -> str:
        extra = ["-S", "-200"] if history else []
        res = self.run("capture-pane", "-p", "-t", self.session, *extra)
        return res.stdout

    def expect(self, text: str, timeout: float = 10.0) -> str:
        """Wait (bounded) until `text` is on screen; fail with the screen otherwise."""
        try:
            return wait_until(lambda: s if text in (s := self.screen()) else "", timeout, 0.2)
        except WaitTimeout:
            pytest.fail(f"{text!r} not on screen after {timeout}s:\n{self.screen(True)}")


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    t = Tmux(f"plantd-test-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        yield t
    finally:
        t.run("kill-server")  # our private server only: it ends the console with it


def launcher(tmp_path: Path, env: dict[str, str]) -> Path:
    """A script with the stack's environment: a tmux server does not pass the client's
    environment to new sessions, so nothing may depend on it."""
    lines = ["#!/bin/sh"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items()) if k.isidentifier()]
    lines += [
        f"cd {shlex.quote(str(REPO))}",
        f"{shlex.quote(sys.executable)} -m plantd.cli.main tui",
        f'echo "{EXIT_MARK}$?"',
        "sleep 120",  # keep the pane (and any traceback) for capture-pane
    ]
    path = tmp_path / "tui.sh"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o755)
    return path


def start_console(stack: PlantUpStack, tmux: Tmux, tmp_path: Path) -> None:
    """`plant tui` in the 80x24 session, with the stack's environment."""
    # the env has no PLANTD_CLIENT_*_BUS: the console finds the buses like `plant state watch`
    env = {**stack.env, "PLANTD_CLIENT_TIMEOUT": "1"}
    started = tmux.run(
        "new-session",
        "-d",
        "-s",
        tmux.session,
        "-x",
        "80",
        "-y",
        "24",
        str(launcher(tmp_path, env)),
    )
    assert started.returncode == 0, started.stderr


def test_plant_tui_in_tmux(up_stack: PlantUpStack, tmux: Tmux, tmp_path: Path) -> None:
    res = up_stack.state("set", "-s", "tui.tmux", "greeting", "hello")
    assert res.returncode == 0, res.stderr
    start_console(up_stack, tmux, tmp_path)

    screen = tmux.expect("● connected", 20)
    assert "Overview F2" in screen
    screen = tmux.expect("org.plantd.State", 10)
    assert "Services" in screen and "org.plantd.module.Echo" in screen

    tmux.keys("2")  # State: the tree splits scopes on dots, the table shows the key
    tmux.expect("greeting", 10)
    screen = tmux.expect('"hello"', 5)
    assert "tmux" in screen

    tmux.keys("3")  # Logs: history from the logger plus the live bus
    screen = tmux.expect("Level ≥", 5)
    tmux.expect("org.plantd.", 10)

    tmux.keys("F1")  # help over everything
    tmux.expect("every key", 5)
    tmux.keys("Escape")

    tmux.keys("4")  # Call: inputs take the keyboard, Escape gives the keys back
    tmux.expect("Body (JSON)", 5)
    tmux.keys("Escape", "1")
    tmux.expect("Workers", 5)

    up_stack.kill_broker()  # broker loss: a banner in the real terminal, not a traceback
    tmux.expect("BROKER UNREACHABLE", 15)
    up_stack.start_broker()  # the stack is shared with later tests of this module
    tmux.expect("● connected", 20)

    tmux.keys("q")
    screen = tmux.expect(EXIT_MARK, 10)
    full = tmux.screen(history=True)
    assert f"{EXIT_MARK}0" in full, full
    assert "Traceback" not in full, full
    assert "Error" not in screen, full


def test_big_scope_in_tmux(up_stack: PlantUpStack, tmux: Tmux, tmp_path: Path) -> None:
    """A 20,000-key scope in a real 80x24 terminal: the total in the title, End reaches the
    last key, the filter asks the server (issue 10; needs a state service that pages)."""
    if not up_stack.pages_keys():
        pytest.skip("this tree's state service does not page list-keys yet (issue 10)")
    up_stack.write_tags("a.big", 20_000)  # sorts first: the State view opens it
    start_console(up_stack, tmux, tmp_path)
    tmux.expect("● connected", 20)
    tmux.keys("2")
    tmux.expect("a.big — 20,000 keys", 10)
    tmux.expect("tag.000000", 5)
    tmux.keys("End")
    tmux.expect("tag.019999", 10)
    tmux.keys("/", *"tag.0150", "Enter")
    screen = tmux.expect("100/20,000 keys", 10)
    assert "tag.015000" in screen, screen
    tmux.keys("q")
    full = tmux.screen(history=True)
    tmux.expect(EXIT_MARK, 10)
    assert "Traceback" not in tmux.screen(history=True), full
