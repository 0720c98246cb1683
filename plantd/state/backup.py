"""Online backup and offline restore of the state database.

Both check the copy with plantd.state.schema.check_database (the check open runs) before it
is renamed into place, and both fsync the file and its directory, so a crash leaves either
the old file or the complete new one.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiosqlite

from plantd.state import dbthread
from plantd.state.errors import CorruptDatabase, InvalidArgument, StorageError, storage_error
from plantd.state.files import FileLock, fsync_path, precheck_file, side_file
from plantd.state.schema import Integrity, check_database


def _destination(live: Path, dest: str | os.PathLike[str], overwrite: bool) -> Path:
    dest = Path(dest)
    if dest.resolve() == live.resolve():
        raise InvalidArgument("backup destination is the live database")
    if dest.exists() and not overwrite:
        raise InvalidArgument(f"backup destination {dest} exists (pass overwrite=True)")
    return dest


async def backup(path: Path, dest: str | os.PathLike[str], *, overwrite: bool) -> dict[str, Any]:
    """Copy the live database at ``path`` to ``dest`` while writes go on.

    Copies through a temporary read-only connection (no second writer on the database),
    in one step (= one read snapshot), checks the copy and atomically renames it into place.
    """
    dest = _destination(path, dest, overwrite)
    tmp = side_file(dest, ".tmp")
    tmp.unlink(missing_ok=True)
    src: aiosqlite.Connection | None = None
    dst: aiosqlite.Connection | None = None
    try:
        src = await dbthread.read_only(dbthread.read_only_uri(path))
        dst = await aiosqlite.connect(tmp, isolation_level=None, check_same_thread=False)
        await src.backup(dst)  # whole DB in one step = one read snapshot
        await dst.execute("PRAGMA journal_mode=DELETE")  # self-contained single file

        def check(db: sqlite3.Connection) -> dict[str, Any]:
            return check_database(
                db,
                str(dest),
                label=f"backup copy {tmp}",
                integrity=Integrity.FULL,
                refusal="the backup was not written",
            )

        rev = (await dbthread.on_db_thread(dst, check))["revision"]
        await dst.close()
        dst = None
        fsync_path(tmp)
        os.replace(tmp, dest)
        fsync_path(dest.parent)
    except sqlite3.Error as e:
        raise storage_error(f"backup to {dest}", e) from None
    except OSError as e:
        raise StorageError(f"backup to {dest} failed: {e}") from None
    finally:
        for conn in (dst, src):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        tmp.unlink(missing_ok=True)
    return {"path": str(dest), "revision": rev, "bytes": dest.stat().st_size}


def restore(backup: str | os.PathLike[str], path: str | os.PathLike[str]) -> dict[str, Any]:
    """Replace the database at ``path`` with a checked backup (OFFLINE: daemon stopped).

    Refuses while a store holds the lock. The previous files are kept, renamed to
    ``<db>.pre-restore-<timestamp>`` (+ ``-wal``/``-shm``), never deleted.
    """
    backup, path = Path(backup), Path(path)
    lock = FileLock(side_file(path, ".lock"))
    lock.acquire(path)
    try:
        if not backup.is_file():
            raise InvalidArgument(f"backup {backup} does not exist")
        precheck_file(backup)
        tmp = side_file(path, ".restore-tmp")
        tmp.unlink(missing_ok=True)
        try:
            src = sqlite3.connect(f"{backup.resolve().as_uri()}?mode=ro", uri=True)
            try:
                meta = check_database(
                    src,
                    str(backup),
                    label=f"backup {backup}",
                    integrity=Integrity.FULL,
                    kind="backup",
                    refusal="refusing to restore it, nothing was replaced",
                )
                dst = sqlite3.connect(tmp)
                try:
                    src.backup(dst)
                finally:
                    dst.close()
            finally:
                src.close()
        except sqlite3.Error as e:
            tmp.unlink(missing_ok=True)
            raise CorruptDatabase(f"backup {backup} is unreadable: {e}") from None
        fsync_path(tmp)
        previous = None
        if path.exists():
            stamp = time.strftime("%Y%m%dT%H%M%S")
            previous = side_file(path, f".pre-restore-{stamp}")
            for suffix in ("-wal", "-shm", ""):
                old = side_file(path, suffix)
                if old.exists():
                    os.replace(old, side_file(previous, suffix))
        else:
            for suffix in ("-wal", "-shm"):  # stale side files would corrupt the new DB
                side_file(path, suffix).unlink(missing_ok=True)
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        lock.release()
    return {
        "path": str(path),
        "revision": int(meta["revision"]),
        "previous": str(previous) if previous else None,
    }
