"""The shared vocabulary: one definition of names, endpoints, levels, exit codes and the reply
envelope, and one resolution of bus endpoints (flag, then environment, then configuration)."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from plantd import vocabulary
from plantd.broker.settings import BrokerDaemonSettings, bus_endpoint
from plantd.cli.exitcodes import CliError
from plantd.client import errors
from plantd.config import ClientSettings, ConfigError, DaemonSettings
from plantd.daemons import UnknownDaemon
from plantd.daemons.process import AlreadyRunning, StartFailed
from plantd.exitcodes import ExitCode, exit_code_for
from plantd.module import ModuleSettings
from plantd.protocol import envelope
from plantd.state import errors as state_errors


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment with no configuration file anywhere."""
    return {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "PLANTD_HOME": str(tmp_path / "home")}


def test_settings_defaults_are_the_vocabulary() -> None:
    broker = BrokerDaemonSettings()
    for b in vocabulary.BUSES:
        assert broker.bus_endpoints(b.name) == (b.publish, b.subscribe)
    module = ModuleSettings()
    assert (module.state_bus, module.state_bus_sub) == (
        vocabulary.bus("state").publish,
        vocabulary.bus("state").subscribe,
    )
    assert module.endpoint == broker.endpoint == ClientSettings().endpoint == "tcp://127.0.0.1:9797"
    assert DaemonSettings().log_bus == "tcp://127.0.0.1:14000"
    assert vocabulary.STATE_SERVICE == "org.plantd.State"
    assert vocabulary.LOGGER_SERVICE == "org.plantd.Logger"
    assert vocabulary.METRIC_SERVICE == "org.plantd.module.Metric"
    with pytest.raises(
        ValueError, match="unknown bus 'nope' \\(known: state, event, metric, log\\)"
    ):
        vocabulary.bus("nope")


def test_bus_endpoint_flag_then_env_then_configuration(env: dict[str, str], tmp_path: Path) -> None:
    assert bus_endpoint("state", env=env) == "tcp://127.0.0.1:11001"
    config = tmp_path / "broker.yaml"
    config.write_text("state_backend: tcp://127.0.0.1:7001\n")
    env["PLANTD_BROKER_CONFIG"] = str(config)
    assert bus_endpoint("state", env=env) == "tcp://127.0.0.1:7001"
    env["PLANTD_BROKER_STATE_BACKEND"] = "tcp://127.0.0.1:7002"
    assert bus_endpoint("state", env=env) == "tcp://127.0.0.1:7002"
    env["PLANTD_CLIENT_STATE_BUS"] = "tcp://127.0.0.1:7003"  # the deprecated alias
    assert bus_endpoint("state", env=env) == "tcp://127.0.0.1:7003"
    env["PLANTD_CLIENT_STATE_BUS_SUB"] = "tcp://127.0.0.1:7004"
    assert bus_endpoint("state", env=env) == "tcp://127.0.0.1:7004"
    assert bus_endpoint("state", "tcp://127.0.0.1:7005", env=env) == "tcp://127.0.0.1:7005"
    # other buses are untouched by the state bus's variables
    assert bus_endpoint("log", env=env) == "tcp://127.0.0.1:14001"


def test_bus_endpoint_names_a_broken_configuration(env: dict[str, str]) -> None:
    env["PLANTD_BROKER_BUSES"] = "maybe"
    with pytest.raises(ConfigError, match="PLANTD_BROKER_BUSES"):
        bus_endpoint("log", env=env)


@pytest.mark.parametrize(
    ("level", "number", "name"),
    [
        ("warning", 30, "warning"),
        ("WARN", 30, "warning"),
        ("crit", 50, "critical"),
        (25, 25, "info"),
    ],
)
def test_log_levels(level: str | int, number: int, name: str) -> None:
    assert vocabulary.level_number(level) == number
    assert vocabulary.level_name(number) == name
    assert vocabulary.level_rank(name) == vocabulary.LEVELS.index(name)


def test_envelope_is_the_one_every_service_sends() -> None:
    assert envelope.ok({"a": 1}) == {"success": True, "data": {"a": 1}}
    doc = envelope.error_doc("invalid_argument", "limit: too big", field="limit")
    assert doc == {
        "success": False,
        "error": "limit: too big",
        "code": "invalid_argument",
        "field": "limit",
    }
    assert envelope.is_refusal(doc) and not envelope.is_refusal(envelope.ok(None))
    err = state_errors.NotFound("no key 'k'", key="k")
    assert err.to_dict() == envelope.error_doc("not_found", "no key 'k'", key="k")


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.BrokerUnreachable("x"), ExitCode.UNREACHABLE),
        (errors.RequestTimeout("x"), ExitCode.TIMEOUT),
        (errors.UnknownService("x"), ExitCode.UNKNOWN_SERVICE),
        (errors.ServiceUnavailable("x"), ExitCode.UNKNOWN_SERVICE),
        (errors.NotAuthorized("x"), ExitCode.AUTH),
        (errors.MessageTooLarge("x"), ExitCode.USAGE),
        (errors.ProtocolError("x"), ExitCode.REJECTED),
        (errors.RequestRejected("x", "not_found"), ExitCode.NOT_FOUND),
        (errors.RequestRejected("x", "conflict"), ExitCode.CONFLICT),
        (errors.RequestRejected("x", "invalid_argument"), ExitCode.USAGE),
        (errors.RequestRejected("x", "something_else"), ExitCode.REJECTED),
        (state_errors.NotFound("x"), ExitCode.NOT_FOUND),
        (state_errors.StoreLocked("x"), ExitCode.CONFLICT),
        (state_errors.InvalidArgument("x"), ExitCode.USAGE),
        (ConfigError("x"), ExitCode.USAGE),
        (UnknownDaemon("x"), ExitCode.USAGE),
        (AlreadyRunning("x"), ExitCode.CONFLICT),
        (StartFailed("x"), ExitCode.REJECTED),
        (click.UsageError("x"), ExitCode.USAGE),
        (click.BadParameter("x"), ExitCode.USAGE),
        (CliError("x", ExitCode.NOT_FOUND), ExitCode.NOT_FOUND),
        (KeyboardInterrupt(), ExitCode.INTERRUPTED),
        (TimeoutError(), ExitCode.TIMEOUT),
        (FileNotFoundError(), ExitCode.NOT_FOUND),
        (ConnectionRefusedError(), ExitCode.UNREACHABLE),
        (RuntimeError("x"), ExitCode.REJECTED),
    ],
)
def test_exit_code_for(exc: BaseException, code: ExitCode) -> None:
    assert exit_code_for(exc) is code
