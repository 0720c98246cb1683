"""Import hygiene: the client, CLI and protocol never pull in Textual, and the CLI start-up
path stays free of heavy libraries (zmq, aiohttp, ...) until a command needs them."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY_FOR_CLI = ("textual", "zmq", "aiohttp", "prometheus_client", "yaml", "psutil")


def loaded_after(statement: str, names: tuple[str, ...]) -> list[str]:
    code = f"import sys\n{statement}\nprint(','.join(n for n in {names!r} if n in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [n for n in out.stdout.strip().split(",") if n]


@pytest.mark.parametrize(
    "module",
    [
        "plantd.client",
        "plantd.client.sync",
        "plantd.client.client",
        "plantd.client.worker",
        "plantd.cli.main",
        "plantd.protocol",
        "plantd.config",
        "plantd.daemons.lifecycle",
        "plantd.broker.daemon",
        "plantd.echo",
    ],
)
def test_no_textual(module: str) -> None:
    assert loaded_after(f"import {module}", ("textual",)) == []


def test_cli_startup_is_lazy() -> None:
    assert loaded_after("import plantd.cli.main", HEAVY_FOR_CLI) == []


def test_cli_help_runs_without_heavy_imports() -> None:
    statement = (
        "from plantd.cli.main import run\n"
        "import contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert run(['daemon', '--help']) == 0"
    )
    assert loaded_after(statement, ("textual", "zmq", "aiohttp")) == []


@pytest.mark.parametrize(
    "module",
    ["plantd.vocabulary", "plantd.exitcodes", "plantd.protocol.envelope", "plantd.broker.settings"],
)
def test_vocabulary_modules_import_nothing_heavy(module: str) -> None:
    """The shared vocabulary is importable by every layer: no third-party library, no daemon,
    no CLI comes with it."""
    loaded = loaded_after(
        f"import {module}",
        (*HEAVY_FOR_CLI, "orjson", "typer", "click", "plantd.cli", "plantd.daemons"),
    )
    assert loaded == []


@pytest.mark.parametrize(
    "module",
    [
        "plantd.daemons.lifecycle",
        "plantd.broker.daemon",
        "plantd.state.daemon",
        "plantd.logger.daemon",
        "plantd.metric.daemon",
        "plantd.proxy.daemon",
        "plantd.echo",
    ],
)
def test_daemons_do_not_import_the_cli(module: str) -> None:
    assert loaded_after(f"import {module}", ("plantd.cli",)) == []


def test_the_daemon_framework_does_not_import_the_sdk_or_a_service() -> None:
    """plantd.daemons is the framework; the module SDK and the services sit on top of it."""
    statement = (
        "import plantd.daemons, plantd.daemons.lifecycle, plantd.daemons.process\n"
        "import plantd.daemons.health, plantd.daemons.run\n"
        "assert plantd.daemons.available()"
    )
    above = ("plantd.module", "plantd.state", "plantd.logger", "plantd.metric", "plantd.broker")
    assert loaded_after(statement, above) == []


def test_bus_endpoint_resolution_imports_no_daemon() -> None:
    """The CLI and the console learn the bus endpoints without importing a daemon module."""
    statement = (
        "from plantd.broker.settings import bus_endpoint\n"
        "assert bus_endpoint('state', env={'XDG_CONFIG_HOME': '/nonexistent'}).endswith(':11001')"
    )
    assert loaded_after(statement, ("plantd.daemons", "zmq")) == []


def test_entry_points_name_the_daemons_new_homes() -> None:
    """pyproject's plantd.modules entry points resolve to modules, the installed metadata
    names the same targets, and the old plantd.daemons.<name> aliases are gone."""
    import importlib
    import tomllib
    from importlib.metadata import entry_points
    from pathlib import Path

    from plantd import daemons
    from plantd.module import Module

    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    declared = pyproject["project"]["entry-points"]["plantd.modules"]
    for name, target in declared.items():
        module, _, attr = target.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        assert issubclass(cls, Module) and cls.name == name
    installed = {ep.name: ep.value for ep in entry_points(group=daemons.ENTRY_POINT_GROUP)}
    assert {name: installed.get(name) for name in declared} == declared
    for name in daemons.REGISTRY:
        assert not daemons._module_exists(f"plantd.daemons.{name}")
