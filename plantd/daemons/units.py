"""systemd unit files for the daemons: ``plant daemon install`` / ``uninstall``.

:func:`service_unit` and :func:`target_unit` are pure (text from facts, unit-tested); the rest
writes and removes files. Each daemon becomes ``plantd-NAME.service`` (``Type=notify``: the
lifecycle sends READY=1 once healthy and WATCHDOG=1 pings, see :mod:`.systemd`), ordered after
the daemons before it in start order; ``plantd.target`` wants every installed one. System units
run as a dedicated user (``plantd`` by default; created by the administrator, not by us) in a
sandbox (``ProtectSystem=strict``, ``NoNewPrivileges=``, ``PrivateTmp=``) that may write only
``PLANTD_HOME``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from plantd.daemons import process

__all__ = [
    "SYSTEM_HOME",
    "SYSTEM_USER",
    "TARGET",
    "UnitSpec",
    "installed_names",
    "remove_units",
    "service_unit",
    "target_unit",
    "unit_dir",
    "unit_file",
    "write_units",
]

Scope = Literal["user", "system"]

TARGET = "plantd.target"
#: the account system units run as (documented; the administrator creates it)
SYSTEM_USER = "plantd"
#: PLANTD_HOME of system units unless PLANTD_HOME is set: the unit's StateDirectory
SYSTEM_HOME = Path("/var/lib/plantd")
WATCHDOG_SEC = 30
#: the lifecycle's stop grace (10 s) plus cleanup
TIMEOUT_STOP_SEC = 20


@dataclass(frozen=True)
class UnitSpec:
    """What every unit of one installation shares."""

    scope: Scope
    home: Path
    #: the daemon command minus its name, absolute (``python -m plantd.daemons.run``)
    command: tuple[str, ...]
    user: str = SYSTEM_USER
    #: extra environment (PYTHONPATH of a source checkout), name -> value
    environment: tuple[tuple[str, str], ...] = ()


def unit_file(name: str) -> str:
    return f"plantd-{name}.service"


def _quote(word: str) -> str:
    """One word of a unit setting: ``%`` escaped, quoted when it holds blanks or quotes."""
    word = word.replace("%", "%%")
    if word and not any(c in word for c in " \t\"'\\"):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def service_unit(name: str, before: Sequence[str], spec: UnitSpec) -> str:
    """The ``plantd-NAME.service`` text; ``before`` are the daemons started ahead of it."""
    after = [unit_file(n) for n in before]
    lines = ["[Unit]", f"Description=plantd {name} daemon", f"PartOf={TARGET}"]
    if spec.scope == "system":
        after.insert(0, "network.target")
    if after:
        lines.append("After=" + " ".join(after))
    if before:
        lines.append("Wants=" + unit_file(before[0]))  # the broker, first in start order
    exec_start = " ".join(_quote(w) for w in (*spec.command, name))
    lines += [
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={exec_start}",
        "Environment=" + _quote(f"PLANTD_HOME={spec.home}"),
        *("Environment=" + _quote(f"{k}={v}") for k, v in spec.environment),
        "Restart=on-failure",
        "RestartSec=2",
        f"WatchdogSec={WATCHDOG_SEC}",
        f"TimeoutStopSec={TIMEOUT_STOP_SEC}",
    ]
    if spec.scope == "system":
        lines += [
            f"User={spec.user}",
            f"Group={spec.user}",
            "StateDirectory=plantd",
            "ProtectSystem=strict",
            "ReadWritePaths=" + _quote(str(spec.home)),
            "NoNewPrivileges=yes",
            "PrivateTmp=yes",
        ]
    lines += ["", "[Install]", f"WantedBy={TARGET}", ""]
    return "\n".join(lines)


def target_unit(names: Sequence[str], scope: Scope) -> str:
    """``plantd.target``: starting it starts every installed daemon."""
    wanted = " ".join(unit_file(n) for n in names)
    default = "default.target" if scope == "user" else "multi-user.target"
    return "\n".join(
        [
            "[Unit]",
            "Description=plantd daemons",
            f"Wants={wanted}",
            f"After={wanted}",
            "",
            "[Install]",
            f"WantedBy={default}",
            "",
        ]
    )


def unit_dir(scope: Scope, env: Mapping[str, str] | None = None) -> Path:
    """Where systemd looks for units the administrator installs."""
    env = os.environ if env is None else env
    if scope == "system":
        return Path("/etc/systemd/system")
    config = env.get("XDG_CONFIG_HOME", "").strip()
    base = Path(config) if config else Path.home() / ".config"
    return base / "systemd" / "user"


def default_spec(scope: Scope, env: Mapping[str, str] | None = None) -> UnitSpec:
    """The spec of this machine: this interpreter, this PLANTD_HOME (system: /var/lib/plantd
    unless PLANTD_HOME is set), this PYTHONPATH."""
    from plantd.config import plantd_home

    env = os.environ if env is None else env
    if scope == "system" and not env.get("PLANTD_HOME", "").strip():
        home = SYSTEM_HOME
    else:
        home = plantd_home(env).root
    command = process.daemon_command("")[:-1]
    command[0] = os.path.abspath(command[0])
    extra = env.get("PYTHONPATH", "").strip()
    environment = (("PYTHONPATH", os.path.abspath(extra)),) if extra else ()
    return UnitSpec(scope=scope, home=home, command=tuple(command), environment=environment)


def render(names: Sequence[str], order: Sequence[str], spec: UnitSpec) -> dict[str, str]:
    """File name -> text for the services of ``names`` (each after those before it in
    ``order``) and the target wanting them."""
    units = {
        unit_file(n): service_unit(n, [m for m in order[: order.index(n)]], spec) for n in names
    }
    units[TARGET] = target_unit([n for n in order if n in names], spec.scope)
    return units


def installed_names(directory: Path, order: Sequence[str]) -> list[str]:
    """Daemons (of ``order``) whose unit is in ``directory``, in start order."""
    return [n for n in order if (directory / unit_file(n)).is_file()]


def write_units(
    directory: Path, names: Sequence[str], order: Sequence[str], spec: UnitSpec
) -> list[Path]:
    """Write the units of ``names`` and a target wanting every installed daemon."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file, text in render(names, order, spec).items():
        if file != TARGET:
            written.append(_write(directory / file, text))
    present = installed_names(directory, order)
    written.append(_write(directory / TARGET, target_unit(present, spec.scope)))
    return written


def remove_units(
    directory: Path, names: Sequence[str], order: Sequence[str], scope: Scope
) -> list[Path]:
    """Remove the units of ``names``; the target goes with the last of them."""
    removed = []
    for name in names:
        path = directory / unit_file(name)
        if path.is_file():
            path.unlink()
            removed.append(path)
    target = directory / TARGET
    present = installed_names(directory, order)
    if not present and target.is_file():
        target.unlink()
        removed.append(target)
    elif present and removed:
        _write(target, target_unit(present, scope))
    return removed


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
