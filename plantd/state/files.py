"""File safety of the state database: one store per file, cheap checks before SQLite
touches a file, and fsync so a rename (backup, restore) survives a crash."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from plantd.state.errors import CorruptDatabase, StorageError, StoreLocked
from plantd.state.schema import SQLITE_MAGIC


def side_file(path: Path, suffix: str) -> Path:
    """``<db><suffix>``: the lock file, the WAL and the shared-memory file of ``path``."""
    return path.with_name(path.name + suffix)


class FileLock:
    """Exclusive non-blocking flock on ``<db>.lock``; the file records the holder's pid."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self, db_path: Path) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StorageError(f"cannot open lock file {self.path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = "unknown"
            with contextlib.suppress(OSError, ValueError):
                holder = os.pread(fd, 64, 0).decode().strip() or "unknown"
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StoreLocked(
                    f"state database {db_path} is already open by another store (pid {holder});"
                    f" lock file {self.path}",
                    pid=int(holder) if holder.isdigit() else None,
                    path=str(db_path),
                ) from None
            raise StorageError(f"cannot lock {self.path}: {e.strerror}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            # keep the file: unlinking it would race with a concurrent opener
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None


def precheck_file(path: Path) -> bool:
    """Cheap checks before SQLite touches the file; returns False if it is new/empty."""
    if not path.exists():
        return False
    if not path.is_file():
        raise StorageError(f"cannot open state database {path}: not a regular file")
    if not os.access(path, os.R_OK | os.W_OK):
        raise StorageError(f"cannot open state database {path}: permission denied (need rw)")
    size = path.stat().st_size
    if size == 0:
        return False
    try:
        with path.open("rb") as f:
            header = f.read(100)
    except OSError as e:
        raise StorageError(f"cannot read state database {path}: {e.strerror}") from None
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        raise CorruptDatabase(
            f"{path} is not an SQLite database (bad header, {size} bytes); refusing to open it,"
            " the file was not modified",
            path=str(path),
        )
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    n_pages = int.from_bytes(header[28:32], "big")
    counter, valid_for = header[24:28], header[92:96]
    wal = path.with_name(path.name + "-wal")
    wal_pending = wal.exists() and wal.stat().st_size > 0
    # with WAL content a crash mid-checkpoint can legitimately leave the file short: SQLite
    # sizes the database from the WAL then, and quick_check still reads every page
    if n_pages and counter == valid_for and not wal_pending and size < n_pages * page_size:
        raise CorruptDatabase(
            f"{path} is truncated: header says {n_pages * page_size} bytes, file has {size};"
            " refusing to open it, the file was not modified (restore a backup)",
            path=str(path),
        )
    return True


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a rename is durable once its directory is synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
