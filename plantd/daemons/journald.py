"""Log to systemd's journal with structured fields when systemd started us, stdlib only.

systemd connects a unit's stderr to the journal and says so in ``$JOURNAL_STREAM``
(``DEVICE:INODE`` of that stream). A text line there would be one opaque ``MESSAGE`` with
our own timestamp in it; instead, :class:`JournalHandler` sends each record over the journal's
native protocol (datagrams of ``FIELD=value`` lines, a length-prefixed form for values with
newlines) so ``journalctl -u plantd-state PRIORITY=3`` or ``journalctl PLANTD_REQUEST_ID=...``
work, and the journal's own timestamp is the only one.

Fields: ``MESSAGE``, ``PRIORITY`` (syslog level), ``SYSLOG_IDENTIFIER`` (``plantd-NAME``),
``PLANTD_SERVICE``, ``PLANTD_LEVEL``, ``PLANTD_LOGGER``, ``CODE_FILE``/``CODE_LINE``/``CODE_FUNC``,
``PLANTD_REQUEST_ID`` when the record carries ``request_id``, ``PLANTD_TRACE_ID`` when it
carries ``trace_id``, ``PLANTD_EXCEPTION`` with the traceback.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys
from collections.abc import Mapping
from typing import Any

__all__ = ["JOURNAL_SOCKET", "JournalHandler", "journal_stream_is_stderr"]

#: where journald listens for native-protocol datagrams
JOURNAL_SOCKET = "/run/systemd/journal/socket"

#: logging level -> syslog priority (journalctl -p)
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def journal_stream_is_stderr(env: Mapping[str, str] | None = None) -> bool:
    """Whether our stderr is the journal stream systemd gave us (``$JOURNAL_STREAM``)."""
    env = os.environ if env is None else env
    device, _, inode = env.get("JOURNAL_STREAM", "").partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, AttributeError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def _field(name: str, value: str) -> bytes:
    """One field in the native protocol; values with a newline use the length-prefixed form."""
    data = value.encode("utf-8", "replace")
    key = name.encode("ascii")
    if b"\n" in data:
        return key + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return key + b"=" + data + b"\n"


class JournalHandler(logging.Handler):
    """A logging handler that writes structured entries to journald's native socket."""

    def __init__(self, daemon: str, address: str = JOURNAL_SOCKET) -> None:
        super().__init__()
        self.daemon = daemon
        self.address = address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)  # a stalled journal must never stall the event loop

    def fields(self, record: logging.LogRecord) -> dict[str, str]:
        doc = {
            "MESSAGE": record.getMessage(),
            "PRIORITY": str(_PRIORITY.get(record.levelno, 6)),
            "SYSLOG_IDENTIFIER": f"plantd-{self.daemon}",
            "PLANTD_SERVICE": self.daemon,
            "PLANTD_LEVEL": record.levelname.lower(),
            "PLANTD_LOGGER": record.name,
            "CODE_FILE": record.pathname,
            "CODE_LINE": str(record.lineno),
            "CODE_FUNC": record.funcName,
        }
        extra: dict[str, Any] = record.__dict__
        for attr, name in (("request_id", "PLANTD_REQUEST_ID"), ("trace_id", "PLANTD_TRACE_ID")):
            if extra.get(attr):
                doc[name] = str(extra[attr])
        if record.exc_info:
            doc["PLANTD_EXCEPTION"] = logging.Formatter().formatException(record.exc_info)
        return doc

    def emit(self, record: logging.LogRecord) -> None:
        try:
            payload = b"".join(_field(k, v) for k, v in self.fields(record).items())
            self._sock.sendto(payload, self.address)
        except (OSError, ValueError):
            self.handleError(record)

    def close(self) -> None:
        self._sock.close()
        super().close()
