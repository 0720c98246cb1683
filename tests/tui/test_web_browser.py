"""``plant web`` in a real browser: headless Debian Chromium driven by Selenium, against a
real ``plant up`` stack (127.0.0.1 only, free ports).

The page loads with no request leaving the machine, the State view shows a key the CLI wrote,
a write made in the browser (edit, then the confirmation) reaches the store, several tabs get
sessions of their own and closing a tab ends its ``plant tui`` process. Screenshots are kept
under pytest's tmp dir (their paths are printed). Skipped only where Chromium, chromium-driver
or Selenium is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.browser import Console, chromium, off_machine, plant_web, requested_urls
from tests.support.plant_up import PlantUpStack
from tests.support.polling import wait_until
from tests.support.processes import run_plant

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

SCOPE = "a.web"  # sorts first: the State view opens it


def screenshot(driver: object, path: Path) -> None:
    assert driver.save_screenshot(str(path))  # type: ignore[attr-defined]
    print(f"screenshot: {path}")


def test_console_in_chromium_reads_and_writes_the_store(
    up_stack: PlantUpStack, tmp_path: Path
) -> None:
    res = up_stack.state("set", "-s", SCOPE, "greeting", "hello")
    assert res.returncode == 0, res.stderr
    with plant_web(up_stack.env, tmp_path) as web, chromium() as driver:
        driver.get(web.url)
        console = Console(driver)
        console.attach()
        console.expect("● connected", "org.plantd.State", timeout=30)
        assert len(web.sessions()) == 1

        console.keys("2")  # State
        console.expect("greeting", '"hello"')
        screenshot(driver, tmp_path / "web-state.png")

        console.keys("e")  # edit the selected key: the value field has the focus
        console.expect("Value")
        console.keys('"bonjour"', "\n")
        console.expect("bonjour", "Confirm")  # the confirmation shows old and new values
        screenshot(driver, tmp_path / "web-confirm.png")
        console.keys("y")
        assert wait_until(
            lambda: up_stack.state_value(SCOPE, "greeting") == "bonjour", 15, 0.3,
            what="the browser's write in the store",
        )  # fmt: skip
        console.expect('"bonjour"')
        screenshot(driver, tmp_path / "web-console.png")

        urls = requested_urls(driver)
        assert f"ws://127.0.0.1:{web.port}/ws" in " ".join(urls), urls
        assert any(u.endswith(".ttf") for u in urls), urls  # the font, from this server
        assert off_machine(urls, web.port) == [], urls


def test_each_tab_has_its_own_session_and_closing_it_ends_it(
    up_stack: PlantUpStack, tmp_path: Path
) -> None:
    with plant_web(up_stack.env, tmp_path) as web:
        with chromium() as driver:
            driver.get(web.url)
            first_tab = driver.current_window_handle
            first = Console(driver)
            first.attach()
            first.expect("● connected", timeout=30)
            first.keys("3")  # Logs in this tab only

            driver.switch_to.new_window("tab")
            driver.get(web.url)
            second = Console(driver)
            second.attach()
            second.expect("● connected", "Workers", timeout=30)  # Overview: its own session
            assert "Level ≥" not in second.screen()
            sessions = wait_until(lambda: s if len(s := web.sessions()) == 2 else None, 10)
            assert len({p.pid for p in sessions}) == 2

            driver.close()  # the second tab
            driver.switch_to.window(first_tab)
            gone = wait_until(
                lambda: [p for p in sessions if not p.is_running() or not web_has(web, p)], 15,
                0.2, what="the closed tab's console process to exit",
            )  # fmt: skip
            assert len(gone) == 1
            (left,) = web.sessions()
            assert left.pid != gone[0].pid
            first.expect("Level ≥")  # the first tab's session goes on
        # the browser quit: the last session ends too
        wait_until(lambda: not web.sessions(), 15, 0.2, what="every console process to exit")
        assert web.proc.poll() is None


def web_has(web: object, proc: object) -> bool:
    return any(p.pid == proc.pid for p in web.sessions())  # type: ignore[attr-defined]


def test_login_with_a_token_in_the_browser(plantd_env: dict[str, str], tmp_path: Path) -> None:
    out = run_plant(plantd_env, "identity", "token", "create", "admin", "-o", "json")
    assert out.returncode == 0, out.stderr
    token = json.loads(out.stdout)["token"]
    from selenium.webdriver.common.by import By

    with plant_web(plantd_env, tmp_path) as web, chromium(1024, 700) as driver:
        driver.get(web.url)  # no session: the login form, no console
        field = driver.find_element(By.ID, "token")
        field.send_keys("plantd_000000000000_" + "A" * 43, "\n")
        wait_until(lambda: "not known" in driver.find_element(By.ID, "error").text, 10)
        assert web.sessions() == []
        screenshot(driver, tmp_path / "web-login.png")

        driver.find_element(By.ID, "token").send_keys(token, "\n")
        console = Console(driver)
        console.attach()
        console.expect("plantd", "Overview", timeout=30)  # the console (no broker: a banner)
        assert driver.execute_script("return document.cookie") == ""  # HttpOnly
        assert [c["httpOnly"] for c in driver.get_cookies()] == [True]
        assert token not in " ".join(requested_urls(driver))  # never in a URL
        (session,) = web.sessions()
        # the console acts for the token's principal, through the proxy's key: the broker
        # decides (and the audit records) as admin here, as a viewer for a viewer's token
        environ = session.environ()
        assert environ["PLANTD_CLIENT_ACT_AS"] == "admin"
        assert environ["PLANTD_CLIENT_IDENTITY"].endswith("secrets/proxy.key_secret")

        web.proc.terminate()  # plant web stopped with a session open: it ends the session too
        assert web.proc.wait(15) == 0
        assert not session.is_running() or session.status() == "zombie"
