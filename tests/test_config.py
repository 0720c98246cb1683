"""Settings layering: defaults -> YAML file -> PLANTD_<SERVICE>_* env -> explicit overrides."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from plantd.config import (
    ClientSettings,
    ConfigError,
    DaemonSettings,
    config_file_for,
    load_client_settings,
    load_settings,
    plantd_home,
)


@dataclass
class DemoSettings(DaemonSettings):
    endpoint: str = "tcp://127.0.0.1:9797"
    interval: float = 2.5
    retries: int = 3
    enabled: bool = True
    db: Path = Path("state.db")
    label: str | None = None
    tags: list[str] | None = None


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    # XDG_CONFIG_HOME points at an empty dir so no real user file is picked up
    return {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), **extra}


def test_defaults_without_file_or_env(tmp_path: Path) -> None:
    s = load_settings(DemoSettings, "demo", env=env_for(tmp_path))
    assert s == DemoSettings()
    assert (s.health_host, s.log_level) == ("127.0.0.1", "info")


def test_layering_file_then_env_then_overrides(tmp_path: Path) -> None:
    cfg = tmp_path / "demo.yaml"
    cfg.write_text("endpoint: tcp://10.0.0.1:1\ninterval: 1.5\nretries: 7\nhealth-port: 9000\n")
    env = env_for(tmp_path, PLANTD_DEMO_CONFIG=str(cfg), PLANTD_DEMO_RETRIES="9")
    s = load_settings(DemoSettings, "demo", {"interval": 0.5, "endpoint": None}, env=env)
    assert s.endpoint == "tcp://10.0.0.1:1"  # file (override None is ignored)
    assert s.retries == 9  # env beats file
    assert s.interval == 0.5  # override beats file
    assert s.health_port == 9000  # dashes in YAML keys are accepted


def test_user_config_dir_is_used(tmp_path: Path) -> None:
    user = tmp_path / "xdg" / "plantd"
    user.mkdir(parents=True)
    (user / "demo.yaml").write_text("label: from-user-file\n")
    env = env_for(tmp_path)
    assert config_file_for("demo", env) == user / "demo.yaml"
    assert load_settings(DemoSettings, "demo", env=env).label == "from-user-file"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("off", False),
        ("no", False),
    ],
)
def test_bool_coercion(tmp_path: Path, raw: str, expected: bool) -> None:
    s = load_settings(DemoSettings, "demo", env=env_for(tmp_path, PLANTD_DEMO_ENABLED=raw))
    assert s.enabled is expected


def test_typed_coercion_of_every_kind(tmp_path: Path) -> None:
    env = env_for(
        tmp_path,
        PLANTD_DEMO_INTERVAL="0.25",
        PLANTD_DEMO_RETRIES="0x10",
        PLANTD_DEMO_DB="~/x.db",
        PLANTD_DEMO_LABEL="none",
        PLANTD_DEMO_TAGS="a, b,,c",
        PLANTD_DEMO_HEALTH_PORT="8089",
    )
    s = load_settings(DemoSettings, "demo", env=env)
    assert s.interval == 0.25
    assert s.retries == 16
    assert s.db == Path("~/x.db").expanduser()
    assert s.label is None
    assert s.tags == ["a", "b", "c"]
    assert s.health_port == 8089


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("PLANTD_DEMO_RETRIES", "three", "expected int"),
        ("PLANTD_DEMO_INTERVAL", "fast", "expected float"),
        ("PLANTD_DEMO_ENABLED", "maybe", "expected bool"),
        ("PLANTD_DEMO_HEALTH_PORT", "1.5", "expected int"),
    ],
)
def test_bad_env_value_names_the_variable(
    tmp_path: Path, var: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(DemoSettings, "demo", env=env_for(tmp_path, **{var: value}))
    message = str(err.value)
    assert var in message and expected in message and "\n" not in message


def test_unknown_key_in_file_is_an_error(tmp_path: Path) -> None:
    cfg = tmp_path / "demo.yaml"
    cfg.write_text("endpiont: tcp://x:1\n")
    with pytest.raises(ConfigError, match=r"demo\.yaml: unknown setting 'endpiont'"):
        load_settings(DemoSettings, "demo", env=env_for(tmp_path, PLANTD_DEMO_CONFIG=str(cfg)))


def test_malformed_yaml_and_non_mapping(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("endpoint: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(DemoSettings, "demo", env=env_for(tmp_path, PLANTD_DEMO_CONFIG=str(bad)))
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_settings(DemoSettings, "demo", env=env_for(tmp_path, PLANTD_DEMO_CONFIG=str(listy)))


def test_bad_value_in_file_names_file_and_key(tmp_path: Path) -> None:
    cfg = tmp_path / "demo.yaml"
    cfg.write_text("retries: lots\n")
    with pytest.raises(ConfigError, match=r"demo\.yaml: retries='lots': expected int"):
        load_settings(DemoSettings, "demo", env=env_for(tmp_path, PLANTD_DEMO_CONFIG=str(cfg)))


def test_explicit_missing_config_file_is_an_error(tmp_path: Path) -> None:
    env = env_for(tmp_path, PLANTD_DEMO_CONFIG=str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match=r"PLANTD_DEMO_CONFIG=.*does not exist"):
        load_settings(DemoSettings, "demo", env=env)


def test_unknown_override_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting 'bogus' for demo"):
        load_settings(DemoSettings, "demo", {"bogus": 1}, env=env_for(tmp_path))


def test_client_settings_defaults_and_env(tmp_path: Path) -> None:
    assert load_client_settings(env=env_for(tmp_path)) == ClientSettings(
        endpoint="tcp://127.0.0.1:9797", timeout=5.0, retries=0, scope="org.plantd.Client"
    )
    env = env_for(tmp_path, PLANTD_CLIENT_ENDPOINT="tcp://127.0.0.1:1", PLANTD_CLIENT_TIMEOUT="2")
    s = load_client_settings({"retries": "2"}, env=env)
    assert (s.endpoint, s.timeout, s.retries) == ("tcp://127.0.0.1:1", 2.0, 2)


def test_plantd_home_from_env_and_subdirs(tmp_path: Path) -> None:
    home = plantd_home({"PLANTD_HOME": str(tmp_path / "h")}).ensure()
    assert home.root == tmp_path / "h"
    for sub in ("run", "log", "data"):
        assert (tmp_path / "h" / sub).is_dir()
    assert home.run == tmp_path / "h" / "run"


def test_plantd_home_default_is_user_state_dir() -> None:
    import platformdirs

    assert plantd_home({}).root == Path(platformdirs.user_state_dir("plantd"))


def test_config_import_is_cheap() -> None:
    """Loading settings without a config file must not import yaml (CLI start-up time)."""
    code = (
        "import sys\n"
        "from plantd.config import load_client_settings\n"
        "load_client_settings(env={'XDG_CONFIG_HOME': '/nonexistent'})\n"
        "print(sorted(m for m in ('yaml', 'zmq', 'aiohttp') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.strip() == "[]"
