"""Errors of the state store.

Each error has a stable machine ``code`` (what the MDP service layer puts on the wire and
what clients branch on) and a precise human message. ``to_dict()`` is the error reply
document; ``StateError.from_dict()`` rebuilds the exception on the client side and when an
idempotent retry replays a stored failure.
"""

from __future__ import annotations

from typing import Any, ClassVar

from plantd.protocol.envelope import CONFLICT, INVALID_ARGUMENT, NOT_FOUND, error_doc

__all__ = [
    "Compacted",
    "Conflict",
    "CorruptDatabase",
    "InvalidArgument",
    "LimitExceeded",
    "NotFound",
    "StateError",
    "StorageError",
    "StoreLocked",
    "Unavailable",
]


class StateError(Exception):
    """Base class: ``code`` + message + extra fields that travel with the error reply."""

    code: ClassVar[str] = "state_error"
    _by_code: ClassVar[dict[str, type[StateError]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        StateError._by_code[cls.code] = cls

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra: dict[str, Any] = extra

    def to_dict(self) -> dict[str, Any]:
        """Error reply document: ``{"success": false, "error", "code", **extra}``."""
        return error_doc(self.code, self.message, **self.extra)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> StateError:
        """Rebuild the exception of an error document (unknown codes give a plain StateError)."""
        extra = {k: v for k, v in doc.items() if k not in ("success", "error", "code")}
        klass = StateError._by_code.get(str(doc.get("code")), StateError)
        err = klass.__new__(klass)
        StateError.__init__(err, str(doc.get("error", "")), **extra)
        return err

    def __getattr__(self, name: str) -> Any:
        # extra fields read like attributes: err.current_revision, err.oldest_revision, ...
        extra = self.__dict__.get("extra")
        if extra is not None and name in extra:
            return extra[name]
        raise AttributeError(name)

    def __reduce__(self) -> Any:
        return (StateError.from_dict, (self.to_dict(),))


class NotFound(StateError):
    """Missing scope or key (never an empty value)."""

    code = NOT_FOUND


class Conflict(StateError):
    """A compare (prev_revision / if_absent) failed; carries ``current_revision`` (0 = absent)."""

    code = CONFLICT

    def __init__(self, message: str, *, current_revision: int, **extra: Any) -> None:
        super().__init__(message, current_revision=current_revision, **extra)


class Compacted(StateError):
    """The requested revision is older than the kept change history."""

    code = "compacted"

    def __init__(self, message: str, *, compact_revision: int, **extra: Any) -> None:
        super().__init__(
            message,
            compact_revision=compact_revision,
            oldest_revision=compact_revision + 1,
            **extra,
        )


class LimitExceeded(StateError):
    """A configured limit was exceeded; carries the limit name, maximum and actual size."""

    code = "limit_exceeded"

    def __init__(self, limit: str, maximum: int | float, actual: int | float, what: str) -> None:
        super().__init__(
            f"{what}: {limit} is {maximum}, got {actual}",
            limit=limit,
            maximum=maximum,
            actual=actual,
        )


class InvalidArgument(StateError):
    """Malformed request (bad type, empty name, non-JSON value, ...)."""

    code = INVALID_ARGUMENT


class StorageError(StateError):
    """SQLite failed (disk full, I/O error, ...); nothing of the failed write was applied."""

    code = "storage_error"


class Unavailable(StorageError):
    """The storage cannot be reached or has no quorum (etcd): nothing was acknowledged;
    ``reason`` says why. A retry (with the same request_id) is safe."""

    code = "unavailable"


class StoreLocked(StorageError):
    """Another store (this or another process) has the database open."""

    code = "locked"


class CorruptDatabase(StorageError):
    """The file is not a readable, intact plantd state database; it was left untouched."""

    code = "corrupt"


def storage_error(action: str, e: BaseException) -> StorageError:
    """The StorageError of a failed SQLite call, naming the SQLite error code."""
    name = getattr(e, "sqlite_errorname", None) or type(e).__name__
    return StorageError(f"{action} failed: {e} ({name}); nothing was applied", cause=name)
