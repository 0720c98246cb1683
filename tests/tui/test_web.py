"""``plant web`` over plain HTTP: the console page with every asset from this machine (no
CDN), the loopback rule, the token login (refused without one once tokens exist, a session
cookie after) and the refusal of a websocket opened by another site's page. The in-browser
run is ``test_web_browser.py``."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import time
from pathlib import Path

import pytest

from tests.support.browser import plant_web
from tests.support.polling import wait_until
from tests.support.processes import http_get, pid_alive, run_plant

pytestmark = pytest.mark.timeout(60)

_UPGRADE = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


def request(
    port: int, method: str, path: str, body: str | None = None, **headers: str
) -> tuple[int, http.client.HTTPMessage, str]:
    """One request, redirects not followed: (status, headers, text)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def test_web_page_loads_only_local_assets(plantd_env: dict[str, str], tmp_path: Path) -> None:
    with plant_web(plantd_env, tmp_path) as web:
        status, _, body = http_get(web.url, 5)
        assert status == 200
        page = body.decode()
        assert "fonts.googleapis.com" not in page
        urls = re.findall(r"""(?:src|href)=["']([^"']+)|url\(["']?([^"')]+)""", page)
        assets = [a or b for a, b in urls if (a or b).startswith("http")]
        assert assets and all(a.startswith(web.url) for a in assets), assets
        for asset in assets:
            assert http_get(asset, 5)[0] == 200, asset
        assert f"ws://127.0.0.1:{web.port}/ws" in page


def test_web_refuses_a_non_loopback_host(plantd_env: dict[str, str]) -> None:
    out = run_plant(plantd_env, "web", "--host", "0.0.0.0")
    assert out.returncode == 2 and "loopback only" in out.stderr


def test_websocket_from_another_site_is_refused(plantd_env: dict[str, str], tmp_path: Path) -> None:
    with plant_web(plantd_env, tmp_path) as web:
        status, _, body = request(web.port, "GET", "/ws", Origin="http://evil.example", **_UPGRADE)
        assert status == 403 and "another site" in body
        assert web.sessions() == []


def test_tokens_issued_require_a_login(plantd_env: dict[str, str], tmp_path: Path) -> None:
    with plant_web(plantd_env, tmp_path) as web:
        assert request(web.port, "GET", "/")[0] == 200  # no token issued yet: open
        assert request(web.port, "GET", "/login")[0] == 303
        out = run_plant(plantd_env, "identity", "token", "create", "admin", "-o", "json")
        assert out.returncode == 0, out.stderr
        issued = json.loads(out.stdout)

        # refused without a session (the token check is cached for a second)
        assert wait_until(lambda: request(web.port, "GET", "/")[0] == 401, 5)
        status, _, page = request(web.port, "GET", "/")
        assert '<form method="post" action="/login">' in page and "ws://" not in page
        for path in ("/static/js/textual.js", "/ws"):
            assert request(web.port, "GET", path, **_UPGRADE)[0] == 401, path
        assert request(web.port, "GET", "/", Cookie="plantd_web=forged")[0] == 401
        status, _, page = request(web.port, "POST", "/login", "token=plantd_nope")
        assert status == 401 and "token is malformed" in page
        assert request(web.port, "POST", "/login", "token=")[0] == 400

        status, headers, _ = request(web.port, "POST", "/login", f"token={issued['token']}")
        assert status == 303 and headers["Location"] == "/"
        cookie = headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert issued["token"] not in cookie  # a session id, the token stays on the server
        session = cookie.split(";")[0]
        status, _, page = request(web.port, "GET", "/", Cookie=session)
        assert status == 200 and f"ws://127.0.0.1:{web.port}/ws" in page
        assert request(web.port, "GET", "/static/js/textual.js", Cookie=session)[0] == 200

        # revoked: the session is refused again (another token keeps logins required: with
        # no active token left the console is open, the proxy's rule)
        assert run_plant(plantd_env, "identity", "token", "create", "admin").returncode == 0
        assert run_plant(plantd_env, "identity", "token", "revoke", issued["id"]).returncode == 0
        assert wait_until(lambda: request(web.port, "GET", "/", Cookie=session)[0] == 401, 5)
        log = web.output.read_text()
        assert issued["token"] not in log  # never in the access log


def test_require_token_refuses_before_any_is_issued(
    plantd_env: dict[str, str], tmp_path: Path
) -> None:
    with plant_web(plantd_env, tmp_path, "--require-token") as web:
        assert request(web.port, "GET", "/")[0] == 401
        assert request(web.port, "POST", "/login", "token=plantd_nope")[0] == 401


async def test_a_console_that_ignores_quit_is_killed() -> None:
    """textual-serve alone waits forever for a session process that does not quit."""
    from textual_serve.download_manager import DownloadManager

    from plantd.tui.web.server import ConsoleSession

    async def ignore(_: object) -> None:
        return None

    async def close() -> None:
        return None

    session = ConsoleSession(
        "exec sleep 60",  # reads no quit message, writes nothing
        write_bytes=ignore, write_str=ignore, close=close, download_manager=DownloadManager(),
    )  # fmt: skip
    session.quit_grace = 0.5
    await session.start(80, 24)
    pid = session.pid
    assert pid is not None and pid_alive(pid)
    started = time.monotonic()
    await asyncio.wait_for(session.stop(), 10)
    assert time.monotonic() - started < 5
    assert not pid_alive(pid)
