"""Headless Debian Chromium driven by Selenium (``chromium``, ``chromium-driver``: nothing is
downloaded at test time), and ``plant web`` as a child process with its console sessions.

Chromium runs with the flags this machine needs (no sandbox as root, no GPU, no background
connections to Google, a fresh profile) and logs its network events, so a test can list every
URL the page asked for. The console draws on a canvas (xterm.js), so the screen is read from
xterm's own buffer: the page script keeps its terminal private, and Chrome's heap query
(``Runtime.queryObjects``) finds it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import pytest

from tests.support.polling import WaitTimeout, wait_until
from tests.support.ports import free_port, wait_listening
from tests.support.processes import PLANT

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
_FIND_TERMINAL = """function () {
  const o = this.find((x) => x && x.websocket_url && x.terminal);
  window.__plantdTerminal = o ? o.terminal : undefined;
  return !!o;
}"""
_SCREEN = """const t = window.__plantdTerminal, b = t.buffer.active, out = [];
for (let y = 0; y < t.rows; y++) out.push(b.getLine(y).translateToString(true));
return out.join("\\n");"""


def require_chromium() -> None:
    """Skip (saying what to install) where Debian's Chromium, its driver or Selenium is missing."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            pytest.skip(f"{path} missing (apt-get install -y {package})")
    with contextlib.suppress(ImportError):
        import selenium  # noqa: F401

        return
    pytest.skip("selenium missing (pip install -e '.[dev]')")


@contextlib.contextmanager
def chromium(width: int = 1280, height: int = 800) -> Iterator[Any]:
    """A headless Chromium (Selenium WebDriver) with a throwaway profile, quit at the end."""
    require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    with tempfile.TemporaryDirectory(prefix="plantd-chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        try:
            driver.set_page_load_timeout(20)
            driver.set_script_timeout(10)
            yield driver
        finally:
            driver.quit()


def requested_urls(driver: Any) -> list[str]:
    """Every URL the browser requested or opened a websocket to since the last call."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
        elif message["method"] == "Network.webSocketCreated":
            urls.append(message["params"]["url"])
    return urls


def off_machine(urls: list[str], port: int) -> list[str]:
    """The network URLs (http, https, ws, wss) not on 127.0.0.1:``port``; the browser's own
    built-in pages (chrome://, data:) never touch the network."""
    network = [u for u in urls if urlsplit(u).scheme in ("http", "https", "ws", "wss")]
    return [u for u in network if urlsplit(u).netloc != f"127.0.0.1:{port}"]


class Console:
    """The console page in one browser tab."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    def attach(self, timeout: float = 20.0) -> None:
        """Until the page's terminal exists and is found (the page's script made it)."""

        def found() -> bool:
            proto = self.driver.execute_cdp_cmd(
                "Runtime.evaluate", {"expression": "Object.prototype"}
            )["result"]["objectId"]
            objects = self.driver.execute_cdp_cmd(
                "Runtime.queryObjects", {"prototypeObjectId": proto}
            )["objects"]["objectId"]
            reply = self.driver.execute_cdp_cmd(
                "Runtime.callFunctionOn",
                {"objectId": objects, "functionDeclaration": _FIND_TERMINAL, "returnByValue": True},
            )
            return bool(reply["result"].get("value"))

        wait_until(found, timeout, 0.25, what="the console's terminal in the page")

    def screen(self) -> str:
        return str(self.driver.execute_script(_SCREEN))

    def expect(self, *texts: str, timeout: float = 15.0) -> str:
        """Wait (bounded) until every one of ``texts`` is on screen; fail with the screen."""
        try:
            return wait_until(
                lambda: s if all(t in (s := self.screen()) for t in texts) else "", timeout, 0.2
            )
        except WaitTimeout:
            pytest.fail(f"{texts!r} not on screen after {timeout}s:\n{self.screen()}")

    def keys(self, *keys: str) -> None:
        """Typed into xterm's input element, as a person would."""
        from selenium.webdriver.common.by import By

        box = self.driver.find_element(By.CSS_SELECTOR, ".xterm-helper-textarea")
        for key in keys:
            box.send_keys(key)


@dataclass
class WebServer:
    """``plant web`` on a free port, in its own process group."""

    proc: subprocess.Popen[bytes]
    port: int
    output: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def sessions(self) -> list[psutil.Process]:
        """The console processes (``plant tui``) it runs now, one per browser session."""
        with contextlib.suppress(psutil.NoSuchProcess):
            children = psutil.Process(self.proc.pid).children(recursive=True)
            return [c for c in children if _is_console(c)]
        return []


def _is_console(proc: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return proc.status() != psutil.STATUS_ZOMBIE and "tui" in proc.cmdline()
    return False


@contextlib.contextmanager
def plant_web(env: dict[str, str], tmp_path: Path, *args: str) -> Iterator[WebServer]:
    """``plant web --port FREE ARGS``; SIGTERM at the end, its group SIGKILLed if it lingers."""
    port = free_port()
    output = tmp_path / f"plant-web-{port}.log"
    with output.open("wb") as sink:
        proc = subprocess.Popen(
            [*PLANT, "web", "--port", str(port), *args],
            env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    server = WebServer(proc, port, output)
    try:
        wait_listening(port, 20)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its group: sessions it left behind
        proc.wait(5)
