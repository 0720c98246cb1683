"""Exit codes of ``plant`` and of the daemons, and how errors map onto them: defined once.

Scripts branch on these, so their meanings are stable:

====  ================  ==============================================================
code  name              meaning
====  ================  ==============================================================
0     OK                success
1     REJECTED          the service (or the command) understood the request and said no
2     USAGE             bad arguments, bad JSON, bad configuration
3     UNREACHABLE       nothing listens at the broker endpoint
4     NOT_FOUND         the thing asked for does not exist (key, scope, daemon file)
5     AUTH              not authorized
6     CONFLICT          already exists / already running / port in use
7     TIMEOUT           the broker is up but no reply arrived in time
8     UNKNOWN_SERVICE   no such service, or no worker available for it
9     KEY_INSECURE      a secret key file group or others may read (refused, as ssh does)
130   INTERRUPTED       Ctrl-C
====  ================  ==============================================================

An exception says its own exit code with an ``exit_code`` class attribute (the client's,
configuration and daemon errors do; so do click's usage errors); a refusal from a service
carries its wire error ``code`` (:mod:`plantd.protocol.envelope`), mapped by
:data:`ERROR_CODE_EXITS`. This module imports nothing but the standard library, so daemons
and the CLI share it without either importing the other.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ERROR_CODE_EXITS", "ExitCode", "exit_code_for", "exit_code_for_error"]


class ExitCode(IntEnum):
    OK = 0
    REJECTED = 1
    USAGE = 2
    UNREACHABLE = 3
    NOT_FOUND = 4
    AUTH = 5
    CONFLICT = 6
    TIMEOUT = 7
    UNKNOWN_SERVICE = 8
    KEY_INSECURE = 9
    INTERRUPTED = 130


#: wire error codes of service refusals (``{"success": false, "code": ...}``) -> exit code;
#: codes not listed exit REJECTED
ERROR_CODE_EXITS = {
    "not_found": ExitCode.NOT_FOUND,
    "not-found": ExitCode.NOT_FOUND,
    "notfound": ExitCode.NOT_FOUND,
    "exists": ExitCode.CONFLICT,
    "already_exists": ExitCode.CONFLICT,
    "conflict": ExitCode.CONFLICT,
    "invalid": ExitCode.USAGE,
    "invalid_argument": ExitCode.USAGE,
    "locked": ExitCode.CONFLICT,
    "bad_request": ExitCode.USAGE,
    "unauthorized": ExitCode.AUTH,
    "forbidden": ExitCode.AUTH,
    "not_authorized": ExitCode.AUTH,
}


def exit_code_for_error(code: object) -> ExitCode:
    """The exit code of a service refusal with wire error ``code``."""
    return ERROR_CODE_EXITS.get(str(code).lower(), ExitCode.REJECTED)


def exit_code_for(exc: BaseException) -> ExitCode:
    """Map any exception a command may raise to its exit code."""
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    declared = getattr(exc, "exit_code", None)
    if isinstance(declared, int) and not isinstance(declared, bool):
        try:
            return ExitCode(declared)
        except ValueError:
            return ExitCode.REJECTED
    code = getattr(exc, "code", None)
    if isinstance(code, str):  # a service refusal (RequestRejected, plantd.state.errors)
        return exit_code_for_error(code)
    if isinstance(exc, TimeoutError):
        return ExitCode.TIMEOUT
    if isinstance(exc, PermissionError):
        return ExitCode.AUTH
    if isinstance(exc, FileNotFoundError):
        return ExitCode.NOT_FOUND
    if isinstance(exc, ConnectionRefusedError):
        return ExitCode.UNREACHABLE
    return ExitCode.REJECTED
