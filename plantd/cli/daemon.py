"""``plant daemon start|stop|restart|status|run`` and ``plant up`` / ``plant down``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import typer

from plantd.cli import output_format
from plantd.cli.completion import daemon_names
from plantd.cli.exitcodes import CliError, ExitCode, exit_code_for
from plantd.cli.output import OutputFormat, emit, error, info, resolve_format

daemon_app = typer.Typer(
    help="Start, stop and inspect plantd daemons (background processes).",
    no_args_is_help=True,
)

NAMES_ARG = typer.Argument(
    None,
    help="Daemon names (broker, state, logger, echo) or 'all'.",
    autocompletion=daemon_names,
)
WAIT_OPT = typer.Option(20.0, "--wait", min=0.1, help="Seconds to wait for health / exit.")
OUTPUT_OPT = typer.Option(None, "--output", "-o", help="Output format.")

SET_OPT = typer.Option(
    None, "--set", "-s", metavar="KEY=VALUE", help="Override a setting (repeatable)."
)

_STATUS_COLUMNS = ("name", "state", "pid", "uptime", "health", "endpoint")


def _resolve(names: list[str] | None) -> list[str]:
    from plantd import daemons

    try:
        resolved = daemons.resolve(names or [])
    except daemons.UnknownDaemon as exc:
        raise CliError(str(exc), ExitCode.USAGE) from None
    if not resolved:
        raise CliError("no daemons are installed", ExitCode.NOT_FOUND)
    return resolved


def _show_failure(exc: Exception) -> None:
    error(exc)
    for line in getattr(exc, "log_tail", []) or []:
        print(f"  | {line}", file=__import__("sys").stderr)


def _start(names: list[str], wait: float, *, quiet_running: bool) -> ExitCode:
    from plantd.daemons import process

    worst = ExitCode.OK
    for name in names:
        try:
            st = process.start(name, timeout=wait)
        except process.AlreadyRunning as exc:
            if quiet_running:
                info(f"{name} already running")
                continue
            error(exc)
            worst = max(worst, ExitCode.CONFLICT)
            continue
        except process.DaemonError as exc:
            _show_failure(exc)
            return max(worst, exit_code_for(exc))
        info(f"{name} started (pid {st.pid}, health {st.health}, {st.endpoint or '-'})")
    return worst


def _stop(names: list[str], wait: float) -> ExitCode:
    from plantd.daemons import process

    for name in reversed(names):
        if process.stop(name, timeout=wait):
            info(f"{name} stopped")
        else:
            info(f"{name} is not running")
    return ExitCode.OK


@daemon_app.command("start")
def start(names: list[str] | None = NAMES_ARG, wait: float = WAIT_OPT) -> None:
    """Start daemons in the background and wait until they report healthy."""
    raise typer.Exit(_start(_resolve(names), wait, quiet_running=False))


@daemon_app.command("stop")
def stop(names: list[str] | None = NAMES_ARG, wait: float = WAIT_OPT) -> None:
    """Stop daemons (SIGTERM, then SIGKILL after --wait seconds), in reverse start order."""
    raise typer.Exit(_stop(_resolve(names), wait))


@daemon_app.command("restart")
def restart(names: list[str] | None = NAMES_ARG, wait: float = WAIT_OPT) -> None:
    """Stop, then start daemons."""
    resolved = _resolve(names)
    _stop(resolved, wait)
    raise typer.Exit(_start(resolved, wait, quiet_running=False))


def _status_rows(names: list[str]) -> list[dict[str, Any]]:
    from plantd.daemons import process

    rows = []
    for name in names:
        row = process.status(name).to_dict()
        if row["uptime"] is not None:
            row["uptime"] = _human_duration(row["uptime"])
        rows.append(row)
    return rows


def _human_duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


@daemon_app.command("status")
def status(
    ctx: typer.Context,
    names: list[str] | None = NAMES_ARG,
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Show name, state, pid, uptime, health and endpoint of daemons."""
    rows = _status_rows(_resolve(names))
    fmt = output_format(ctx, output)
    emit(rows, fmt, columns=_STATUS_COLUMNS)


@daemon_app.command("run")
def run(
    name: str = typer.Argument(..., help="Daemon to run in the foreground."),
    settings: list[str] | None = SET_OPT,
    health_port: int | None = typer.Option(
        None, "--health-port", help="Health/metrics port (0 = any)."
    ),
    log_level: str | None = typer.Option(None, "--log-level", help="debug, info, warning, error."),
) -> None:
    """Run one daemon in the foreground until Ctrl-C / SIGTERM."""
    from plantd.daemons.lifecycle import run_daemon

    overrides: dict[str, Any] = {}
    for item in settings or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--set {item!r}: expected KEY=VALUE", ExitCode.USAGE)
        overrides[key.strip()] = value
    if health_port is not None:
        overrides["health_port"] = health_port
    if log_level is not None:
        overrides["log_level"] = log_level
    raise typer.Exit(run_daemon(name, overrides))


SCOPE_OPT = typer.Option(
    True,
    "--user/--system",
    help="User units ($XDG_CONFIG_HOME/systemd/user) or system units (/etc/systemd/system).",
)


def _unit_scope(user: bool) -> Literal["user", "system"]:
    return "user" if user else "system"


def _unit_files_error(exc: OSError, directory: Path) -> CliError:
    code = ExitCode.AUTH if isinstance(exc, PermissionError) else ExitCode.REJECTED
    return CliError(f"{directory}: {exc.strerror or exc}", code)


@daemon_app.command("install")
def install(
    ctx: typer.Context,
    names: list[str] | None = NAMES_ARG,
    user: bool = SCOPE_OPT,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the units, write nothing."),
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Write systemd units for daemons (default all) and a plantd.target grouping them."""
    from plantd import daemons
    from plantd.daemons import units

    resolved = _resolve(names or ["all"])
    scope = _unit_scope(user)
    directory = units.unit_dir(scope)
    spec = units.default_spec(scope)
    order = daemons.available()
    fmt = output_format(ctx, output)
    if dry_run:
        rendered = units.render(resolved, order, spec)
        if output_format_is_text(fmt):
            for file, text in rendered.items():
                print(f"# {directory / file}\n{text}")
            return
        emit({"dry_run": True, "unit_dir": str(directory), "units": rendered}, fmt)
        return
    try:
        written = units.write_units(directory, resolved, order, spec)
    except OSError as exc:
        raise _unit_files_error(exc, directory) from None
    emit(
        {"unit_dir": str(directory), "scope": scope, "written": [str(p) for p in written]}
        if not output_format_is_text(fmt)
        else [{"written": str(p)} for p in written],
        fmt,
        columns=("written",),
    )
    reload = "systemctl --user" if scope == "user" else "systemctl"
    info(f"next: {reload} daemon-reload && {reload} start {units.TARGET}")


@daemon_app.command("uninstall")
def uninstall(
    ctx: typer.Context,
    names: list[str] | None = NAMES_ARG,
    user: bool = SCOPE_OPT,
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Remove the systemd units of daemons (default all); plantd.target goes with the last."""
    from plantd import daemons
    from plantd.daemons import units

    resolved = _resolve(names or ["all"])
    scope = _unit_scope(user)
    directory = units.unit_dir(scope)
    try:
        removed = units.remove_units(directory, resolved, daemons.available(), scope)
    except OSError as exc:
        raise _unit_files_error(exc, directory) from None
    if not removed:
        raise CliError(
            f"no plantd units of {', '.join(resolved)} in {directory}", ExitCode.NOT_FOUND
        )
    fmt = output_format(ctx, output)
    emit(
        {"unit_dir": str(directory), "scope": scope, "removed": [str(p) for p in removed]}
        if not output_format_is_text(fmt)
        else [{"removed": str(p)} for p in removed],
        fmt,
        columns=("removed",),
    )


def output_format_is_text(fmt: Any) -> bool:
    return resolve_format(fmt) is OutputFormat.table


def up(
    ctx: typer.Context, wait: float = WAIT_OPT, output: OutputFormat | None = OUTPUT_OPT
) -> None:
    """Start the whole stack in dependency order (broker, state, logger, echo); the first
    time, create the keyring (``plant identity init``)."""
    from plantd.cli.identity import ensure_initialised

    ensure_initialised()
    names = _resolve(["all"])
    code = _start(names, wait, quiet_running=True)
    if code == ExitCode.OK:
        emit(_status_rows(names), output_format(ctx, output), columns=_STATUS_COLUMNS)
    raise typer.Exit(code)


def down(wait: float = WAIT_OPT) -> None:
    """Stop every module of this PLANTD_HOME (plant module start), then the whole stack in
    reverse dependency order."""
    from plantd.config import plantd_home
    from plantd.daemons import REGISTRY, process

    modules = [n for n in process.pid_file_names(plantd_home()) if n not in REGISTRY]
    _stop(modules, wait)
    raise typer.Exit(_stop(_resolve(["all"]), wait))


def register(app: typer.Typer) -> None:
    app.add_typer(daemon_app, name="daemon")
    app.command("up")(up)
    app.command("down")(down)
