"""``python -m plantd.daemons.run NAME [-s KEY=VALUE ...]``: run one daemon in the foreground.

This is what ``plant daemon start`` launches detached; it avoids loading Typer and the CLI.
"""

from __future__ import annotations

import argparse
import sys

from plantd.exitcodes import ExitCode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plantd.daemons.run")
    parser.add_argument("name", help="daemon name (broker, state, logger, echo)")
    parser.add_argument(
        "-s",
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting (highest precedence)",
    )
    args = parser.parse_args(argv)
    overrides: dict[str, str] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"plantd: --set {item!r}: expected KEY=VALUE", file=sys.stderr)
            return ExitCode.USAGE
        overrides[key.strip()] = value
    from plantd.daemons.lifecycle import run_daemon

    return run_daemon(args.name, overrides)


if __name__ == "__main__":
    sys.exit(main())
