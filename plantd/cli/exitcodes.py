"""Exit codes of ``plant``: :mod:`plantd.exitcodes` (re-exported here) and the CLI's own error.

The codes and their mapping are defined in :mod:`plantd.exitcodes`, below every layer, so the
daemons use them without importing the CLI; this module keeps the historic import path working.
"""

from __future__ import annotations

from plantd.exitcodes import ERROR_CODE_EXITS, ExitCode, exit_code_for, exit_code_for_error

__all__ = ["ERROR_CODE_EXITS", "CliError", "ExitCode", "exit_code_for", "exit_code_for_error"]


class CliError(Exception):
    """Raised by commands to exit with ``code`` after printing ``message`` on one line."""

    def __init__(self, message: str, code: ExitCode = ExitCode.REJECTED) -> None:
        super().__init__(message)
        self.code = code
        self.exit_code = code
