"""Errors of the identity package: a stable wire ``code`` (for the Identity service to come)
and the ``exit_code`` the CLI exits with (plantd.exitcodes reads it)."""

from __future__ import annotations

from typing import ClassVar

from plantd.exitcodes import ExitCode


class IdentityError(Exception):
    """Base of every identity error; ``str(exc)`` is one line a person can act on."""

    code: ClassVar[str] = "identity_error"
    exit_code: ClassVar[int] = ExitCode.REJECTED


class InvalidArgument(IdentityError):
    """Bad input; ``field`` names what was wrong."""

    code = "invalid_argument"
    exit_code = ExitCode.USAGE

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class NotFound(IdentityError):
    """No such principal, key file or audit row."""

    code = "not_found"
    exit_code = ExitCode.NOT_FOUND


class Conflict(IdentityError):
    """Already exists, or not in the state the operation needs."""

    code = "conflict"
    exit_code = ExitCode.CONFLICT


class InsecureKeyFile(IdentityError, PermissionError):
    """A secret key file that group or others may read (refused, as ssh does)."""

    code = "insecure_key_file"
    exit_code = ExitCode.KEY_INSECURE

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path
