"""``plant web`` serves the console page with every asset from this machine (no CDN) and
refuses a non-loopback address. The in-browser run (headless Chromium) is still to come."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.support.ports import free_port, wait_listening
from tests.support.processes import PLANT, http_get, run_plant, stop_process

pytestmark = pytest.mark.timeout(60)


def test_web_page_loads_only_local_assets(plantd_env: dict[str, str]) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*PLANT, "web", "--port", str(port)],
        env=plantd_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_listening(port, 20)
        status, _, body = http_get(f"http://127.0.0.1:{port}/", 5)
        assert status == 200
        page = body.decode()
        assert "fonts.googleapis.com" not in page
        urls = re.findall(r"""(?:src|href)=["']([^"']+)|url\(["']?([^"')]+)""", page)
        assets = [a or b for a, b in urls if (a or b).startswith("http")]
        assert assets and all(a.startswith(f"http://127.0.0.1:{port}/") for a in assets), assets
        for asset in assets:
            assert http_get(asset, 5)[0] == 200, asset
        assert f"ws://127.0.0.1:{port}/ws" in page
    finally:
        stop_process(proc)


def test_web_refuses_a_non_loopback_host(plantd_env: dict[str, str]) -> None:
    out = run_plant(plantd_env, "web", "--host", "0.0.0.0")
    assert out.returncode == 2 and "loopback only" in out.stderr
