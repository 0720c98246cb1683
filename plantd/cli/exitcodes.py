"""Exit codes of ``plant`` (and of the daemons): the one place they are defined.

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
130   INTERRUPTED       Ctrl-C
====  ================  ==============================================================
"""

from __future__ import annotations

from enum import IntEnum


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
    INTERRUPTED = 130


class CliError(Exception):
    """Raised by commands to exit with ``code`` after printing ``message`` on one line."""

    def __init__(self, message: str, code: ExitCode = ExitCode.REJECTED) -> None:
        super().__init__(message)
        self.code = code


# RequestRejected codes used by plantd services -> exit code
_REJECT_CODES = {
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
}


def exit_code_for(exc: BaseException) -> ExitCode:
    """Map any exception a command may raise to its exit code.

    Client errors are matched by class name along the MRO so this module stays importable
    without importing the client (and zmq) first.
    """
    if isinstance(exc, CliError):
        return exc.code
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    names = [cls.__name__ for cls in type(exc).__mro__]
    by_name = {
        "BrokerUnreachable": ExitCode.UNREACHABLE,
        "UnknownService": ExitCode.UNKNOWN_SERVICE,
        "ServiceUnavailable": ExitCode.UNKNOWN_SERVICE,
        "RequestTimeout": ExitCode.TIMEOUT,
        "NotAuthorized": ExitCode.AUTH,
        "MessageTooLarge": ExitCode.USAGE,
        "ConfigError": ExitCode.USAGE,
        "UnknownDaemon": ExitCode.USAGE,
        "AlreadyRunning": ExitCode.CONFLICT,
        "StartFailed": ExitCode.REJECTED,
        "UsageError": ExitCode.USAGE,
        "BadParameter": ExitCode.USAGE,
        # plantd.state.errors, when a command raises them directly
        "NotFound": ExitCode.NOT_FOUND,
        "Conflict": ExitCode.CONFLICT,
        "StoreLocked": ExitCode.CONFLICT,
        "InvalidArgument": ExitCode.USAGE,
    }
    for name in names:
        if name == "RequestRejected":
            code = str(getattr(exc, "code", "")).lower()
            return _REJECT_CODES.get(code, ExitCode.REJECTED)
        if name in by_name:
            return by_name[name]
    if isinstance(exc, TimeoutError):
        return ExitCode.TIMEOUT
    if isinstance(exc, PermissionError):
        return ExitCode.AUTH
    if isinstance(exc, FileNotFoundError):
        return ExitCode.NOT_FOUND
    if isinstance(exc, ConnectionRefusedError):
        return ExitCode.UNREACHABLE
    return ExitCode.REJECTED
