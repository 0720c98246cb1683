"""Paging through real daemons (issue 10): a 100,000-key scope lists completely through the
CLI and through the client paging API, streamed export equals paged export equals the
store, chunked import of a large export, and paging errors name the field."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plantd.client import Client
from plantd.client.paging import pages, pages_sync
from tests.support.processes import PlantRunner
from tests.support.state import SERVICE, Stack, data, make_stack, request

pytestmark = pytest.mark.timeout(300)

BIG = "plant.big"
N = 100_000


def key(i: int) -> str:
    return f"tag{i:06d}"


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory, backend: dict[str, Any]) -> Iterator[Stack]:
    """A stack whose store holds a 100,000-key scope (written with txn batches of 128), on
    each storage backend (``backend``: tests/state/conftest.py)."""
    if backend:  # etcd: the --replace import below deletes ~100,000 keys in ONE etcd txn,
        backend = {**backend, "etcd_timeout": 15}  # which takes seconds (docs/state.md)
    s = make_stack(tmp_path_factory.mktemp("state-paging") / "home", **backend)
    try:
        with s.client(timeout=30) as c:
            for start in range(0, N, 128):
                ops = [
                    {"op": "set", "key": key(i), "value": {"v": i, "units": "degC"}}
                    for i in range(start, min(start + 128, N))
                ]
                data(c, "txn", {"service": BIG, "ops": ops})
        yield s
    finally:
        s.close()


@pytest.fixture
def run(big: Stack) -> PlantRunner:
    env = dict(big.env)
    env["PLANTD_CLIENT_TIMEOUT"] = "30"
    return PlantRunner(env)


def test_cli_lists_every_key_of_a_big_scope(run: PlantRunner) -> None:
    out = run("state", "list", "-s", BIG, "-o", "json", timeout=120)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert len(rows) == N
    assert rows[0]["key"] == key(0) and rows[-1]["key"] == key(N - 1)
    assert rows[-1]["value"] == {"v": N - 1, "units": "degC"}
    out = run("state", "list", "-s", BIG, "--keys-only", "-o", "raw", timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == N and lines[-1] == key(N - 1)
    out = run("state", "list", "-s", BIG, "--limit", "2500", "--prefix", "tag01", "-o", "json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["key"] for r in rows] == [key(i) for i in range(10_000, 12_500)]
    out = run("state", "list", "-s", "no.such.scope", "-o", "json")
    assert out.returncode == 4 and out.stdout == ""


def test_client_paging_api_reads_every_key(big: Stack) -> None:
    async def read() -> tuple[int, str, int]:
        async with Client(big.endpoint, timeout=30) as client:
            n, last = 0, ""
            async for item in pages(client, SERVICE, "list-keys", {"service": BIG}, "keys"):
                assert item["key"] > last
                n, last = n + 1, item["key"]
            streamed = 0
            doc = {"service": BIG, "values": False, "limit": 5000}
            async for _item in pages(client, SERVICE, "list-keys", doc, "keys", stream=True):
                streamed += 1
            return n, last, streamed

    n, last, streamed = asyncio.run(read())
    assert (n, last, streamed) == (N, key(N - 1), N)
    with big.client(timeout=30) as c:
        got = list(pages_sync(c, SERVICE, "list-keys", {"service": BIG, "limit": 10_000}, "keys"))
        assert [k["key"] for k in got[:2]] == [key(0), key(1)] and len(got) == N


def test_request_without_paging_fields_gets_the_first_page(big: Stack) -> None:
    with big.client(timeout=30) as c:
        page = data(c, "list-keys", {"service": BIG})
        assert page["count"] == len(page["keys"]) == 1000
        assert page["more"] is True and page["next"] == key(999)
        assert page["total"] == N and page["scope"] == BIG
        assert isinstance(page["revision"], int)
        scopes = data(c, "list-scopes", {})
        assert BIG in scopes["scopes"] and scopes["more"] is False and scopes["next"] is None
        assert {d["scope"]: d["keys"] for d in scopes["details"]}[BIG] == N
        assert scopes["total"] == scopes["count"]


@pytest.mark.parametrize(
    ("op", "body", "field", "fragment"),
    [
        ("list-keys", {"service": BIG, "limit": 0}, "limit", "<= 10000 (the maximum"),
        ("list-keys", {"service": BIG, "limit": 10_001}, "limit", "got integer 10001"),
        ("list-keys", {"service": BIG, "limit": "5"}, "limit", "got string"),
        ("list-keys", {"service": BIG, "after": 5}, "after", "'after' must be"),
        ("list-keys", {"service": BIG, "stream": "yes"}, "stream", "true or false"),
        ("list-scopes", {"limit": 20_000}, "limit", "10000"),
        ("list-scopes", {"after": ["x"]}, "after", "'after' must be"),
        ("export", {"after": "x"}, "after", "{scope, key}"),
        ("export", {"limit": -1, "stream": True}, "limit", "10000"),
        ("watch", {"revision": 0, "limit": 1001}, "limit", "<= 1000"),
        ("watch", {"after": "3"}, "after", "'after' must be an integer"),
    ],
)
def test_paging_errors_name_the_field(
    big: Stack, op: str, body: dict[str, Any], field: str, fragment: str
) -> None:
    with big.client() as c:
        doc = request(c, op, body)
        assert doc["success"] is False and doc["code"] == "invalid_argument", doc
        assert doc["field"] == field and fragment in doc["error"], doc
        assert data(c, "health", {})["status"] == "pass"


def _merge(docs: Any) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for page in docs:
        for scope, kv in page["scopes"].items():
            out.setdefault(scope, {}).update(kv)
    return out


def test_streamed_export_equals_paged_export_equals_the_store(
    big: Stack, run: PlantRunner, tmp_path: Path
) -> None:
    with big.client(timeout=30) as c:
        for i in range(5):
            data(c, "create-scope", {"service": f"empty.{i}"})
        streamed = list(pages_sync(c, SERVICE, "export", {}, stream=True))
        paged = list(pages_sync(c, SERVICE, "export", {"limit": 7000}))
    assert len(streamed) > 10 and len(paged) > 10
    assert len({p["revision"] for p in streamed}) == 1
    whole = _merge(streamed)
    assert whole == _merge(paged)
    assert len(whole[BIG]) == N and whole["empty.3"] == {}
    assert whole[BIG][key(77)] == {"v": 77, "units": "degC"}
    dump = tmp_path / "dump.json"
    out = run("state", "export", "--file", str(dump), timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(dump.read_text())
    assert doc["format"] == "plantd-state" and doc["scopes"] == whole
    # the export goes back in chunks (each atomic) under the 1 MiB message limit
    out = run("state", "import", str(dump), "--replace", "-o", "json", timeout=180)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["keys"] == N and res["chunks"] > 1
    with big.client(timeout=30) as c:
        assert data(c, "list-keys", {"service": BIG, "limit": 1})["total"] == N
        assert data(c, "get", {"service": BIG, "key": key(N - 1)})["value"]["v"] == N - 1


def test_scopes_command_follows_pages(big: Stack, run: PlantRunner) -> None:
    with big.client() as c:
        for i in range(12):
            data(c, "set", {"service": f"zone.{i:02d}", "key": "k", "value": i})
        names: list[str] = []
        after = None
        while True:
            body: dict[str, Any] = {"prefix": "zone.", "limit": 5}
            if after:
                body["after"] = after
            page = data(c, "list-scopes", body)
            names += page["scopes"]
            assert page["total"] == 12 and page["count"] == len(page["scopes"])
            if not page["more"]:
                break
            after = page["next"]
    assert names == [f"zone.{i:02d}" for i in range(12)]
    out = run("state", "scopes", "--prefix", "zone.", "-o", "json")
    assert out.returncode == 0, out.stderr
    assert [d["scope"] for d in json.loads(out.stdout)] == names


def test_pages_of_wide_characters_stay_under_the_message_limit(big: Stack) -> None:
    """The byte budget counts UTF-8 bytes: 300 values of 1,500 CJK characters (4.5 KB
    each, 1.35 MB in all) page in several replies instead of one refused reply."""
    value = "中" * 1500
    with big.client(timeout=30) as c:
        for start in range(0, 300, 100):
            ops = [
                {"op": "set", "key": f"w{i:03d}", "value": value} for i in range(start, start + 100)
            ]
            data(c, "txn", {"service": "wide", "ops": ops})
        first = data(c, "list-keys", {"service": "wide"})
        assert first["more"] is True and 100 < first["count"] < 300
        keys = list(pages_sync(c, SERVICE, "list-keys", {"service": "wide"}, "keys"))
        assert [k["key"] for k in keys] == [f"w{i:03d}" for i in range(300)]
        assert all(k["value"] == value for k in keys)
        page = data(c, "export", {"after": {"scope": "wide", "key": ""}})
        assert page["more"] is True and 100 < page["count"] < 300


def test_export_and_import_show_progress_on_a_terminal(big: Stack, tmp_path: Path) -> None:
    """stderr on a terminal: the Rich progress bar runs (and erases itself); the data on
    stdout/the file is the same as without it."""
    import os
    import pty
    import subprocess
    import threading

    from tests.support.processes import PLANT

    env = dict(big.env)
    env["PLANTD_CLIENT_TIMEOUT"] = "30"
    env["COLUMNS"] = "100"
    dump = tmp_path / "tty.json"
    master, slave = pty.openpty()
    seen = bytearray()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            seen.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        for args in (("export", "--file", str(dump)), ("import", str(dump), "-o", "json")):
            proc = subprocess.run(
                [*PLANT, "state", *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=slave,
                stdin=subprocess.DEVNULL,
                timeout=180,
            )
            assert proc.returncode == 0, bytes(seen)[-500:]
        assert json.loads(proc.stdout)["keys"] >= N
    finally:
        os.close(slave)
        reader.join(5)
        os.close(master)
    assert b"export" in seen and b"import" in seen  # the bars' descriptions


def test_import_chunks_measure_the_request_bytes() -> None:
    """Chunks are sized as the request is encoded (json.dumps escapes non-ASCII to 6 bytes
    a character), keep every scope (also empty ones) and every key exactly once."""
    from plantd.cli.state import import_chunks

    scopes: dict[str, Any] = {"empty": {}, "wide": {f"w{i}": "中" * 1500 for i in range(300)}}
    scopes["ascii"] = {f"a{i}": i for i in range(1000)}
    chunks = list(import_chunks(scopes, budget=100_000))
    assert len(chunks) > 25
    for chunk in chunks:
        assert len(json.dumps({"scopes": chunk})) < 100_000 + 10_000
    merged = _merge({"scopes": c} for c in chunks)
    assert merged == scopes
    assert list(import_chunks({})) == [{}]
