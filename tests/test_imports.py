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
        "plantd.daemons.broker",
        "plantd.daemons.echo",
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
