"""``plant state`` as users and scripts run it: one subprocess per command against a real
broker and state daemon; exit codes 4 (not found) and 6 (conflict), ``-o raw`` for shell
substitution, ``watch`` as JSON lines (resume, broker restart), backup/restore, export/import.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import start_broker
from tests.support.processes import PLANT, JsonLines, PlantRunner, finish
from tests.support.state import Stack, data, make_stack, watch_proc

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = make_stack(tmp_path / "home")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def run(stack: Stack) -> PlantRunner:
    return PlantRunner(stack.env)


def one_error(out: subprocess.CompletedProcess[str], *fragments: str) -> None:
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("plant: error: "), out.stderr
    for fragment in fragments:
        assert fragment in lines[0], out.stderr


def test_set_get_delete_and_exit_codes(run: PlantRunner) -> None:
    out = run("state", "set", "greeting", "hello", "-o", "json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["value"] == "hello" and doc["prev"] is None and doc["scope"] == "org.plantd.Client"

    out = run("state", "set", "greeting", "world", "-o", "table")
    assert out.returncode == 0
    assert (
        out.stdout
        == f"org.plantd.Client/greeting: hello -> world (revision {doc['revision'] + 1}, version 2)\n"
    )

    out = run("state", "get", "greeting", "-o", "raw")
    assert (out.returncode, out.stdout) == (0, "world\n")
    got = json.loads(run("state", "get", "greeting", "-o", "json").stdout)
    assert got["value"] == "world" and got["version"] == 2

    out = run("state", "get", "nope")
    assert out.returncode == 4 and out.stdout == ""
    one_error(out, "key 'nope' not found in scope 'org.plantd.Client'")

    out = run("state", "set", "greeting", "x", "--prev-revision", "1")
    assert out.returncode == 6
    one_error(out, "compare failed", "current is")
    out = run("state", "set", "greeting", "x", "--if-absent")
    assert out.returncode == 6
    ok = run(
        "state",
        "set",
        "greeting",
        "again",
        "--prev-revision",
        str(got["mod_revision"]),
        "-o",
        "json",
    )
    assert ok.returncode == 0 and json.loads(ok.stdout)["version"] == 3

    out = run("state", "set", "cfg", '{"gain": [1, 2.5]}', "--json", "-o", "raw")
    assert out.returncode == 0
    assert json.loads(run("state", "get", "cfg", "-o", "raw").stdout) == {"gain": [1, 2.5]}
    out = run("state", "set", "cfg", "{broken", "--json")
    assert out.returncode == 2
    one_error(out, "--json: value is not valid JSON")

    out = run("state", "delete", "greeting", "-o", "table")
    assert out.returncode == 0 and out.stdout.startswith("deleted org.plantd.Client/greeting")
    out = run("state", "delete", "greeting")
    assert out.returncode == 4
    one_error(out, "not found")


def test_scope_option_alias_and_env(run: PlantRunner, stack: Stack) -> None:
    assert run("state", "set", "k", "1", "-s", "plc1").returncode == 0
    assert run("state", "set", "k", "2", "--service", "plc2").returncode == 0
    assert run("state", "get", "k", "--scope", "plc1", "-o", "raw").stdout == "1\n"
    env = dict(stack.env, PLANTD_CLIENT_SCOPE="plc2")
    out = run("state", "get", "k", "-o", "raw", env=env)
    assert out.stdout == "2\n", out.stderr

    scopes = json.loads(run("state", "scopes", "-o", "json").stdout)
    assert [s["scope"] for s in scopes] == ["plc1", "plc2"]
    assert run("state", "scopes", "-o", "raw").stdout == "plc1\nplc2\n"
    keys = json.loads(run("state", "list", "-s", "plc1", "-o", "json").stdout)
    assert [(k["key"], k["value"]) for k in keys] == [("k", "1")]
    table = run("state", "list", "-s", "plc1", "-o", "table").stdout
    assert table.splitlines()[0].split()[:2] == ["KEY", "VALUE"]
    out = run("state", "list", "-s", "nosuch")
    assert out.returncode == 4
    one_error(out, "scope 'nosuch' not found")

    assert run("state", "create-scope", "empty").returncode == 0
    assert json.loads(run("state", "list", "-s", "empty", "-o", "json").stdout) == []
    out = run("state", "delete-scope", "plc2", "-o", "table")
    assert out.returncode == 0 and "1 keys" in out.stdout
    assert run("state", "delete-scope", "plc2").returncode == 4


def test_get_raw_in_shell_substitution(run: PlantRunner, stack: Stack) -> None:
    assert run("state", "set", "mode", "auto").returncode == 0
    script = f'v=$({" ".join(PLANT)} state get mode -o raw) && test "$v" = auto && echo ok'
    out = subprocess.run(
        ["bash", "-c", script], env=stack.env, capture_output=True, text=True, timeout=60
    )
    assert out.stdout == "ok\n", out.stderr


def test_watch_prints_json_lines_and_resumes_from_a_revision(stack: Stack) -> None:
    with stack.client() as c:
        first = data(c, "state-set", {"service": "org.plantd.Client", "key": "a", "value": 0})
        # -s narrows the watch (without it every scope is followed: issue 17)
        proc = watch_proc(stack, "-s", "org.plantd.Client", "--count", "3")
        lines = JsonLines(proc)
        time.sleep(1.0)  # the watcher is up (the test cannot see its subscription)
        data(c, "state-set", {"service": "other", "key": "x", "value": "ignored"})
        revs = [
            data(c, "state-set", {"service": "org.plantd.Client", "key": "a", "value": i})[
                "revision"
            ]
            for i in (1, 2)
        ]
        data(c, "delete", {"service": "org.plantd.Client", "key": "a"})
        got = lines.take(3)
    rc, err = finish(proc)
    assert rc == 0, err
    assert [(e["op"], e["value"]) for e in got] == [("set", 1), ("set", 2), ("delete", None)]
    assert [e["revision"] for e in got[:2]] == revs
    assert all(set(e) == {"scope", "key", "op", "value", "revision", "ts"} for e in got)

    # resume: everything after the first set, from history, then stop at --count
    proc = watch_proc(stack, "--revision", str(first["revision"]), "--count", "3", "--all")
    again = JsonLines(proc).take(3)
    rc, err = finish(proc)
    assert rc == 0, err
    assert [(e["scope"], e["value"]) for e in again] == [
        ("other", None),
        ("other", "ignored"),
        ("org.plantd.Client", 1),
    ]
    revisions = [e["revision"] for e in again]
    assert revisions == sorted(revisions) and revisions[0] == first["revision"] + 1


def test_watch_without_a_scope_follows_every_scope_and_says_so(stack: Stack) -> None:
    scopes = ("org.plantd.Client", "every.one", "every.two")
    with stack.client() as c:  # the scopes exist before: no create-scope events below
        for scope in scopes:
            data(c, "state-set", {"service": scope, "key": "k", "value": 0})
    proc = watch_proc(stack, "--count", "3")
    lines = JsonLines(proc)
    time.sleep(1.0)  # the watcher is up (the test cannot see its subscription)
    with stack.client() as c:
        for scope in scopes:
            data(c, "state-set", {"service": scope, "key": "k", "value": 1})
    got = lines.take(3)
    rc, err = finish(proc)
    assert rc == 0, err
    assert [(e["scope"], e["op"], e["value"]) for e in got] == [(s, "set", 1) for s in scopes]
    assert err.splitlines()[0] == "plant: following every scope"

    narrowed = watch_proc(stack, "-s", "every.one", "--revision", "0", "--count", "1")
    JsonLines(narrowed).take(1)
    rc, err = finish(narrowed)
    assert rc == 0, err
    assert err.splitlines()[0] == "plant: following scope every.one"


def test_watch_key_filter_and_compacted_start(tmp_path: Path) -> None:
    stack = make_stack(tmp_path / "home", history_size=5)
    try:
        with stack.client() as c:
            for i in range(10):
                data(c, "state-set", {"service": "s", "key": "k", "value": i})
            data(c, "state-set", {"service": "s", "key": "other", "value": 1})
        proc = watch_proc(stack, "k", "-s", "s", "--revision", "7", "--count", "2")
        got = JsonLines(proc).take(2)
        rc, err = finish(proc)
        assert rc == 0, err
        assert [e["value"] for e in got] == [7, 8]
        proc = watch_proc(stack, "-s", "s", "--revision", "1")
        rc, err = finish(proc)
        assert rc == 1
        assert "compacted" in err and "resync" in err
    finally:
        stack.close()


def test_watch_follows_a_broker_restart(stack: Stack) -> None:
    with stack.client() as c:  # the scope exists before: no create-scope event below
        data(c, "state-set", {"service": "org.plantd.Client", "key": "k", "value": 0})
    proc = watch_proc(stack, "--count", "4")
    lines = JsonLines(proc)
    time.sleep(1.0)
    with stack.client() as c:
        for i in (1, 2):
            data(c, "state-set", {"service": "org.plantd.Client", "key": "k", "value": i})
    assert [e["value"] for e in lines.take(2)] == [1, 2]

    broker_env = stack.broker.env
    stack.broker.proc.kill()
    stack.broker.proc.wait(timeout=5)
    time.sleep(2.0)  # long enough for the watcher to notice
    stack.broker = start_broker(broker_env, stack.home, tag="broker2")
    deadline = time.monotonic() + 20
    from plantd.client.errors import PlantdError

    values = iter((3, 4))
    value = next(values)
    with stack.client(timeout=2.0) as c:
        while True:  # the state worker re-registers with the new broker on its own
            try:
                data(
                    c,
                    "state-set",
                    {
                        "service": "org.plantd.Client",
                        "key": "k",
                        "value": value,
                        "request_id": f"r{value}",
                    },
                )
            except PlantdError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
                continue
            value = next(values, None)
            if value is None:
                break
    got = lines.take(2, timeout=20)
    rc, err = finish(proc)
    assert rc == 0, err
    assert [e["value"] for e in got] == [3, 4]
    assert "reconnecting" in err and "resyncing" in err, err


def test_backup_restore_round_trip(run: PlantRunner, stack: Stack, tmp_path: Path) -> None:
    assert run("state", "set", "setpoint", "21.5").returncode == 0
    backup = tmp_path / "snap.db"
    out = run("state", "backup", str(backup), "-o", "json")
    assert out.returncode == 0, out.stderr
    snap = json.loads(out.stdout)
    assert Path(snap["path"]) == backup and backup.is_file()
    assert run("state", "backup", str(backup)).returncode != 0  # no silent overwrite
    assert run("state", "set", "setpoint", "99").returncode == 0

    out = run("state", "restore", str(backup))
    assert out.returncode == 6
    one_error(out, "state daemon is running", "restore is offline")

    assert stack.state.stop() == 0
    out = run("state", "restore", str(backup), "-o", "table")
    assert out.returncode == 0, out.stderr
    assert f"to revision {snap['revision']}" in out.stdout
    assert "previous database kept as" in out.stderr
    stack.start_state()
    assert run("state", "get", "setpoint", "-o", "raw").stdout == "21.5\n"
    assert run("state", "restore", str(tmp_path / "missing.db")).returncode == 6  # running again


def test_export_import(run: PlantRunner, stack: Stack, tmp_path: Path) -> None:
    assert run("state", "set", "a", "1", "-s", "x").returncode == 0
    assert run("state", "set", "b", "[1,2]", "--json", "-s", "y").returncode == 0
    dump = tmp_path / "dump.json"
    out = run("state", "export", "--file", str(dump))
    assert out.returncode == 0, out.stderr
    doc = json.loads(dump.read_text())
    assert doc["scopes"] == {"x": {"a": "1"}, "y": {"b": [1, 2]}}
    assert json.loads(run("state", "export").stdout)["scopes"] == doc["scopes"]

    doc["scopes"] = {"z": {"c": True}}
    out = run("state", "import", "-", "--replace", "-o", "json", input=json.dumps(doc))
    assert out.returncode == 0, out.stderr
    assert json.loads(run("state", "export").stdout)["scopes"] == {"z": {"c": True}}
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    out = run("state", "import", str(bad))
    assert out.returncode == 2
    one_error(out, "not valid JSON")


def test_no_state_daemon_and_no_broker(tmp_path: Path) -> None:
    stack = make_stack(tmp_path / "home", start_state=False)
    try:
        run = PlantRunner(dict(stack.env, PLANTD_CLIENT_TIMEOUT="3"))
        out = run("state", "get", "k")
        assert out.returncode == 8, out.stderr  # broker up, no state service
        one_error(out, "org.plantd.State")
    finally:
        stack.close()
    out = run("state", "get", "k")
    assert out.returncode == 3
    one_error(out, "unreachable")


def test_get_and_set_never_import_asyncio_or_the_store(stack: Stack) -> None:
    """``plant state get`` runs in shell loops: the blocking client only, no event loop."""
    import sys

    code = (
        "import sys, contextlib, io\n"
        "from plantd.cli.main import run\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert run(['state', 'set', 'k', 'v']) == 0\n"
        "    assert run(['state', 'get', 'k', '-o', 'raw']) == 0\n"
        "print(','.join(m for m in ('asyncio', 'aiosqlite', 'sqlite3', 'plantd.state', 'textual')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=stack.env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def complete(env: dict[str, str], words: str) -> list[str]:
    """What bash's completion would offer for ``words`` (the last one being typed), asked of
    ``plant`` exactly as the script from ``plant completion bash`` asks it."""
    cword = len(words.split()) - 1
    env = {**env, "_PLANT_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    done = subprocess.run(PLANT, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_completion_offers_services_scopes_and_keys_from_the_live_stack(
    run: PlantRunner, stack: Stack
) -> None:
    """Issue 17: services, scopes and keys complete from the broker (short timeout)."""
    for key in ("speed", "spin", "temp"):
        assert run("state", "set", key, "1", "-s", "line1").returncode == 0
    assert run("state", "set", "x", "1", "-s", "lab").returncode == 0
    assert complete(stack.env, "plant state get -s li") == ["line1"]
    assert complete(stack.env, "plant state get --scope line1 sp") == ["speed", "spin"]
    assert complete(stack.env, "plant state set -s line1 t") == ["temp"]
    assert complete(stack.env, "plant call org.plantd.St") == ["org.plantd.State"]
    stack.close()  # no broker: nothing offered, quickly, no traceback
    started = time.monotonic()
    assert complete(stack.env, "plant state get -s li") == []
    assert time.monotonic() - started < 20
