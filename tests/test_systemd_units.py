"""``plant daemon install|uninstall``: unit text (pure), files written and removed, and
``systemd-analyze verify`` on them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from plantd.daemons import units
from tests.support.processes import PlantRunner

ORDER = ["broker", "state", "logger", "echo"]
COMMAND = (sys.executable, "-m", "plantd.daemons.run")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def user_spec(home: Path) -> units.UnitSpec:
    return units.UnitSpec(scope="user", home=home, command=COMMAND)


def settings(text: str) -> list[str]:
    return [line for line in text.splitlines() if "=" in line]


def test_user_service_unit_is_notify_with_watchdog_after_the_daemons_before_it() -> None:
    text = units.service_unit("state", ["broker"], user_spec(Path("/srv/plant")))
    lines = settings(text)
    assert "Type=notify" in lines and "NotifyAccess=main" in lines
    assert f"ExecStart={sys.executable} -m plantd.daemons.run state" in lines
    assert "WatchdogSec=30" in lines and "Restart=on-failure" in lines
    assert "Environment=PLANTD_HOME=/srv/plant" in lines
    assert "After=plantd-broker.service" in lines and "Wants=plantd-broker.service" in lines
    assert "WantedBy=plantd.target" in lines and "PartOf=plantd.target" in lines
    assert not any(line.startswith(("User=", "ProtectSystem=")) for line in lines)


def test_broker_unit_depends_on_nothing_and_echo_comes_after_all_before_it() -> None:
    spec = user_spec(Path("/h"))
    broker = settings(units.service_unit("broker", [], spec))
    assert not any(line.startswith(("After=", "Wants=")) for line in broker)
    echo = settings(units.service_unit("echo", ORDER[:3], spec))
    assert "After=plantd-broker.service plantd-state.service plantd-logger.service" in echo


def test_system_unit_is_sandboxed_as_a_dedicated_user() -> None:
    spec = units.UnitSpec(scope="system", home=Path("/var/lib/plantd"), command=COMMAND)
    lines = settings(units.service_unit("state", ["broker"], spec))
    for expected in (
        "User=plantd",
        "StateDirectory=plantd",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/plantd",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "After=network.target plantd-broker.service",
    ):
        assert expected in lines
    assert "WantedBy=multi-user.target" in units.target_unit(["broker"], "system")


def test_blanks_and_percent_are_quoted_and_escaped() -> None:
    spec = units.UnitSpec(scope="user", home=Path("/my plant/100%"), command=COMMAND)
    lines = settings(units.service_unit("broker", [], spec))
    assert 'Environment="PLANTD_HOME=/my plant/100%%"' in lines


def test_target_wants_the_daemons_in_start_order() -> None:
    lines = settings(units.target_unit(["broker", "state"], "user"))
    assert "Wants=plantd-broker.service plantd-state.service" in lines
    assert "WantedBy=default.target" in lines


def unit_dir(plant: PlantRunner) -> Path:
    return Path(plant.env["XDG_CONFIG_HOME"]) / "systemd" / "user"


def test_install_writes_units_and_uninstall_removes_them(plant: PlantRunner) -> None:
    directory = unit_dir(plant)
    out = plant("daemon", "install", "broker", "state", "--user", "-o", "json")
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)
    written = {Path(p).name for p in reply["written"]}
    assert written == {"plantd-broker.service", "plantd-state.service", "plantd.target"}
    assert reply["unit_dir"] == str(directory)
    state = (directory / "plantd-state.service").read_text()
    assert f"Environment=PLANTD_HOME={plant.env['PLANTD_HOME']}" in state.splitlines()
    target = (directory / "plantd.target").read_text()
    assert "Wants=plantd-broker.service plantd-state.service" in target.splitlines()

    # removing one keeps the target, wanting what is left
    out = plant("daemon", "uninstall", "state", "-o", "json")
    assert out.returncode == 0, out.stderr
    assert [Path(p).name for p in json.loads(out.stdout)["removed"]] == ["plantd-state.service"]
    assert "Wants=plantd-broker.service" in (directory / "plantd.target").read_text()

    out = plant("daemon", "uninstall", "all", "-o", "json")
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in directory.iterdir()) == []
    # nothing left to remove: not found
    out = plant("daemon", "uninstall", "all")
    assert out.returncode == 4
    assert "no plantd units" in out.stderr


def test_dry_run_prints_units_and_writes_nothing(plant: PlantRunner) -> None:
    out = plant("daemon", "install", "all", "--dry-run", "-o", "json")
    assert out.returncode == 0, out.stderr
    rendered = json.loads(out.stdout)["units"]
    assert "plantd.target" in rendered and "plantd-broker.service" in rendered
    assert "Type=notify" in rendered["plantd-broker.service"]
    assert not unit_dir(plant).exists()
    text = plant("daemon", "install", "broker", "--dry-run", "-o", "table")
    assert text.returncode == 0
    assert f"# {unit_dir(plant) / 'plantd-broker.service'}" in text.stdout


def test_unknown_daemon_is_a_usage_error(plant: PlantRunner) -> None:
    out = plant("daemon", "install", "nope")
    assert out.returncode == 2
    assert "nope" in out.stderr


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("scope", ["user", "system"])
def test_installed_units_pass_systemd_analyze_verify(
    plant: PlantRunner, tmp_path: Path, scope: str
) -> None:
    assert SYSTEMD_ANALYZE is not None
    if scope == "user":
        out = plant("daemon", "install", "all", "-o", "json")
        assert out.returncode == 0, out.stderr
        paths = json.loads(out.stdout)["written"]
        flags = ["--user"]
    else:  # system units are rendered (not written to /etc) and verified in a tmp dir
        out = plant("daemon", "install", "all", "--system", "--dry-run", "-o", "json")
        assert out.returncode == 0, out.stderr
        paths = []
        for file, text in json.loads(out.stdout)["units"].items():
            (tmp_path / file).write_text(text)
            paths.append(str(tmp_path / file))
        flags = []
    runtime = tmp_path / "runtime"  # --user needs a runtime directory
    runtime.mkdir()
    verify = subprocess.run(
        [SYSTEMD_ANALYZE, *flags, "verify", "--man=no", *paths],
        env={**plant.env, "XDG_RUNTIME_DIR": str(runtime)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stderr
    assert "plantd" not in verify.stderr  # no warning about our units
