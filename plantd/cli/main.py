"""``plant``: the plantd command line (console script entry point :func:`main`).

Only Typer and a few small plantd modules are imported at start-up; zmq, aiohttp, psutil
and friends are imported inside the commands that need them, so ``plant state get`` starts
fast. Textual is never imported here.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import typer

from plantd import __version__
from plantd.cli import CliState
from plantd.cli import broker as broker_cmds
from plantd.cli import completion as completion_cmds
from plantd.cli import daemon as daemon_cmds
from plantd.cli import doctor as doctor_cmds
from plantd.cli import identity as identity_cmds
from plantd.cli import log as log_cmds
from plantd.cli import metric as metric_cmds
from plantd.cli import module as module_cmds
from plantd.cli import policy as policy_cmds
from plantd.cli import web as web_cmds
from plantd.cli.exitcodes import ExitCode, exit_code_for
from plantd.cli.output import OutputFormat, error

app = typer.Typer(
    name="plant",
    help="Operate a plantd control system: daemons, services, buses and state.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"plant {__version__}")
        raise typer.Exit(0)


_OUTPUT_OPT = typer.Option(
    None, "--output", "-o", help="Output format (default: table on a terminal, else json)."
)


@app.callback()
def _root(
    ctx: typer.Context,
    endpoint: str | None = typer.Option(
        None, "--endpoint", "-e", help="Broker endpoint (env PLANTD_CLIENT_ENDPOINT)."
    ),
    timeout: float | None = typer.Option(
        None,
        "--timeout",
        "-t",
        min=0.01,
        help="Request timeout, seconds (env PLANTD_CLIENT_TIMEOUT).",
    ),
    output: OutputFormat | None = _OUTPUT_OPT,
    identity: str | None = typer.Option(
        None,
        "--identity",
        "-i",
        help=(
            "Secret key file, or a principal of this host's keyring, to authenticate as"
            " (env PLANTD_CLIENT_IDENTITY)."
        ),
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Operate a plantd control system."""
    if identity:
        from plantd.security.settings import use_identity

        use_identity(identity)
    ctx.obj = CliState(endpoint=endpoint, timeout=timeout, output=output.value if output else None)


daemon_cmds.register(app)
broker_cmds.register(app)
module_cmds.register(app)
identity_cmds.register(app)
policy_cmds.register(app)
completion_cmds.register(app)
doctor_cmds.register(app)
app.add_typer(log_cmds.app, name="log", help="Tail, query and count log records.")
app.add_typer(metric_cmds.app, name="metric", help="Metric samples: list, latest, range, watch.")


def _register_optional(module: str, attach: Any) -> None:
    """Attach a command group written separately; a missing module is simply absent.

    A module that exists but fails to import still gets a command, which reports the
    import error instead of breaking every other ``plant`` command.
    """
    import importlib

    problem: Exception
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return
        mod, problem = None, exc
    except Exception as exc:  # a broken optional module must not take plant down
        mod, problem = None, exc
    attach(mod, problem if mod is None else None)


def _attach_state(mod: Any, problem: BaseException | None) -> None:
    sub = getattr(mod, "app", None) if mod is not None else None
    if isinstance(sub, typer.Typer):
        app.add_typer(sub, name="state", help="Read and write the scoped state store.")
        return

    @app.command("state", help="Read and write the scoped state store (unavailable).")
    def _state_broken() -> None:
        raise RuntimeError(f"state commands unavailable: {problem or 'no Typer app in module'}")


def _attach_tui(mod: Any, problem: BaseException | None) -> None:
    fn = getattr(mod, "tui", None) if mod is not None else None
    if callable(fn):
        app.command("tui")(fn)
        return

    @app.command("tui", help="Terminal operator console (unavailable).")
    def _tui_broken() -> None:
        raise RuntimeError(f"tui unavailable: {problem or 'no tui command in module'}")


_register_optional("plantd.cli.state", _attach_state)
_register_optional("plantd.cli.tui", _attach_tui)
app.command("web")(web_cmds.web)


def run(argv: list[str] | None = None) -> int:
    """Run ``plant`` with ``argv``; returns the exit code instead of exiting (for tests)."""
    from typer._click import exceptions as click_exc  # typer vendors click

    try:
        rv = app(args=argv, prog_name="plant", standalone_mode=False)
        return int(rv) if isinstance(rv, int) else ExitCode.OK
    except click_exc.NoArgsIsHelpError as exc:
        text = exc.ctx.get_help()  # Typer's rich help prints itself and returns ""
        if text:
            print(text, file=sys.stderr)
        return ExitCode.USAGE
    except click_exc.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "plant"
        error(f"{where}: {exc.format_message()} (see '{where} --help')")
        return ExitCode.USAGE
    except typer.Abort:
        return ExitCode.INTERRUPTED
    except typer.Exit as exc:
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # reader went away (plant ... | head): not an error worth a message
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return ExitCode.OK
    except Exception as exc:
        code = exit_code_for(exc)
        if os.environ.get("PLANTD_DEBUG"):
            import traceback

            traceback.print_exc()
        known = type(exc).__module__.startswith("plantd") or code != ExitCode.REJECTED
        error(str(exc) if known and str(exc) else f"{type(exc).__name__}: {exc}")
        return code


def main() -> None:
    """Console script ``plant``."""
    from plantd import tracing

    tracing.set_service_name("plant")  # the spans of its requests, when tracing is on
    sys.exit(run())


if __name__ == "__main__":
    main()
