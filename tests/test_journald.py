"""Structured journal entries when systemd started the daemon: a real daemon process whose
stderr is "the journal stream" ($JOURNAL_STREAM) against a datagram socket standing in for
journald's native socket."""

from __future__ import annotations

import logging
import os
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from plantd.daemons.journald import JournalHandler
from tests.support.broker import BrokerProcess
from tests.support.processes import DAEMON_CMD, stop_process

pytestmark = pytest.mark.timeout(60)


def parse_entry(data: bytes) -> dict[str, str]:
    """journald's native protocol: ``KEY=value\\n`` or ``KEY\\n<u64 LE length>value\\n``."""
    fields, i = {}, 0
    while i < len(data):
        newline = data.index(b"\n", i)
        line = data[i:newline]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            i = newline + 1
        else:
            key = line
            (size,) = struct.unpack("<Q", data[newline + 1 : newline + 9])
            value = data[newline + 9 : newline + 9 + size]
            i = newline + 9 + size + 1
        fields[key.decode()] = value.decode()
    return fields


@pytest.fixture
def journal() -> Iterator[tuple[socket.socket, str]]:
    directory = tempfile.mkdtemp(prefix="jrn")  # AF_UNIX paths are short
    path = os.path.join(directory, "socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        yield sock, path
    finally:
        sock.close()
        os.unlink(path)
        os.rmdir(directory)


def entries(sock: socket.socket, until: float, want: int) -> list[dict[str, str]]:
    got: list[dict[str, str]] = []
    while len(got) < want and (left := until - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            got.append(parse_entry(sock.recv(1 << 16)))
        except TimeoutError:
            break
    return got


def test_handler_sends_fields_and_multiline_values(journal: tuple[socket.socket, str]) -> None:
    sock, path = journal
    handler = JournalHandler("state", path)
    log = logging.getLogger("plantd.state.test")
    log.addHandler(handler)
    try:
        log.warning("scope %s is large", "line1", extra={"request_id": "r-42"})
        try:
            raise ValueError("bad\nvalue")
        except ValueError:
            log.exception("failed: ü")
    finally:
        log.removeHandler(handler)
        handler.close()
    first, second = entries(sock, time.monotonic() + 5, 2)
    assert first["MESSAGE"] == "scope line1 is large"
    assert (first["PRIORITY"], first["PLANTD_LEVEL"]) == ("4", "warning")
    assert first["SYSLOG_IDENTIFIER"] == "plantd-state" and first["PLANTD_SERVICE"] == "state"
    assert first["PLANTD_REQUEST_ID"] == "r-42" and first["PLANTD_LOGGER"] == "plantd.state.test"
    assert first["CODE_FILE"] == __file__ and first["CODE_FUNC"].startswith("test_handler")
    assert second["MESSAGE"] == "failed: ü" and second["PRIORITY"] == "3"
    assert "ValueError: bad\nvalue" in second["PLANTD_EXCEPTION"]


def test_daemon_started_by_systemd_logs_structured_entries_not_text(
    broker: BrokerProcess, journal: tuple[socket.socket, str], tmp_path: Path
) -> None:
    sock, path = journal
    stderr_path = tmp_path / "stderr"
    with stderr_path.open("wb") as stderr:
        st = os.fstat(stderr.fileno())
        env = dict(
            broker.env,
            PLANTD_ECHO_ENDPOINT=broker.endpoint,
            PLANTD_ECHO_HEALTH_PORT="0",
            JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}",
            PLANTD_JOURNAL_SOCKET=path,
        )
        echo = subprocess.Popen(
            [*DAEMON_CMD, "echo"], env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )
        try:
            got = entries(sock, time.monotonic() + 20, 1)
        finally:
            stop_process(echo)
    assert got, "no journal entry from the echo daemon within 20 s"
    assert got[0]["SYSLOG_IDENTIFIER"] == "plantd-echo" and got[0]["MESSAGE"]
    assert "ts=" not in got[0]["MESSAGE"]  # no text line with its own timestamp
    assert b"level=" not in stderr_path.read_bytes()  # nothing duplicated as text on stderr
