"""``plant module new NAME``: the files of a new, installable, tested plantd module package."""

from __future__ import annotations

import keyword
import re
from pathlib import Path

from plantd.vocabulary import MODULE_SERVICE_PREFIX

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class ScaffoldError(ValueError):
    """Invalid module name or an existing target directory."""


def check_name(name: str) -> str:
    if not _NAME.match(name) or keyword.iskeyword(name):
        raise ScaffoldError(
            f"module name {name!r}: use 1-40 lowercase letters, digits or _, starting with a letter"
        )
    return name


def files(name: str) -> dict[str, str]:
    """Relative path -> content of the package for module ``name``."""
    check_name(name)
    cls = "".join(part.capitalize() for part in name.split("_")) + "Module"
    service = MODULE_SERVICE_PREFIX + "".join(p.capitalize() for p in name.split("_"))
    pkg = f"plantd_{name}"
    return {
        "pyproject.toml": f'''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "plantd-{name.replace("_", "-")}"
version = "0.1.0"
description = "The {name} plantd module"
requires-python = ">=3.11"
dependencies = ["plantd"]

[project.entry-points."plantd.modules"]
{name} = "{pkg}.module:{cls}"

[tool.setuptools]
packages = ["{pkg}"]
''',
        f"{pkg}/__init__.py": f'"""The {name} plantd module."""\n',
        f"{pkg}/module.py": f'''"""{cls}: serves {service}.

Start it with `plant module start {name}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from plantd.module import Module, ModuleSettings, operation
from plantd.protocol.envelope import ok


@dataclass
class {cls[:-6]}Settings(ModuleSettings):
    """Settings from PLANTD_{name.upper()}_* (or {name}.yaml): add your own fields here."""

    greeting: str = "hello"


class {cls}(Module[{cls[:-6]}Settings]):
    name = "{name}"
    service = "{service}"
    settings_class = {cls[:-6]}Settings
    description = "The {name} plantd module"

    @operation("greet")
    async def greet(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Request [b"greet", {{"name": "..."}}] -> {{"success": true, "data": {{...}}}}."""
        who = doc.get("name", "world")
        return ok({{"message": f"{{self.settings.greeting}} {{who}}"}})
''',
        "tests/test_module.py": f'''"""A real broker and the module as processes; call it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from plantd.client import SyncClient
from plantd.client.errors import PlantdError
from plantd.security.settings import client_security


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_greet(tmp_path) -> None:
    endpoint = f"tcp://127.0.0.1:{{free_port()}}"
    # a random endpoint and no buses: a plantd already running here owns the default ports
    env = {{k: v for k, v in os.environ.items() if not k.startswith("PLANTD_")}}
    env.update({{"PLANTD_HOME": str(tmp_path), "PLANTD_BROKER_ENDPOINT": endpoint,
           "PLANTD_BROKER_HEALTH_PORT": "0", "PLANTD_BROKER_BUSES": "false",
           "PLANTD_{name.upper()}_ENDPOINT": endpoint,
           "PLANTD_BROKER_LOG_BUS": "", "PLANTD_{name.upper()}_LOG_BUS": ""}})
    # security is on: a keyring of its own (broker key, admin) and the module's principal
    plant = [sys.executable, "-m", "plantd.cli.main"]
    subprocess.run([*plant, "identity", "init"], env=env, check=True, capture_output=True)
    subprocess.run([*plant, "identity", "add", "{name}", "--kind", "module", "--local",
                    "--role", "service:{service}"], env=env, check=True, capture_output=True)
    security = client_security(env=env)
    run = [sys.executable, "-m", "plantd.daemons.run"]
    procs = [subprocess.Popen([*run, "broker"], env=env)]
    try:
        procs.append(subprocess.Popen([*run, "{name}"], env=env))
        deadline = time.monotonic() + 30  # both processes start (and import) first
        while True:
            try:
                with SyncClient(endpoint, timeout=2.0, security=security) as client:
                    if client.mmi_service("{service}") == "200":
                        reply = client.call("{service}", "greet", {{"name": "plant"}})
                        break
            except PlantdError:
                pass
            assert time.monotonic() < deadline, "module did not register"
            time.sleep(0.2)
        assert reply["data"]["message"] == "hello plant"
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(10)
''',
        "README.md": f"""# plantd-{name.replace("_", "-")}

A plantd module serving `{service}`.

```sh
pip install -e .                   # registers the module (entry point plantd.modules)
plant module start {name}           # joins the running system
plant call {service} greet '{{"name": "plant"}}'
plant module stop {name}
python -m pytest tests              # runs a broker and the module as real processes
```
""",
    }


def write(name: str, parent: Path) -> Path:
    """Create ``parent/plantd-NAME`` with the package; refuse to overwrite anything."""
    target = parent / f"plantd-{check_name(name).replace('_', '-')}"
    if target.exists():
        raise ScaffoldError(f"{target} already exists")
    for rel, content in files(name).items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    return target
