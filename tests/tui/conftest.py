"""TUI test fixtures: snapshots go to the top-level `snapshots/` directory.

pytest-textual-snapshot's `snap_compare` switches the syrupy extension to its module-level
`SVGImageExtension` when the fixture runs; an autouse fixture (run before it) swaps in a subclass
whose `dirname` points at `<repo>/snapshots/<test module>/`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
import pytest_textual_snapshot

from plantd.tui.app import PlantApp
from plantd.tui.source import SourceSettings
from tests.conftest import (
    PlantRunner,
    clean_env,
    kill_daemons_in,
    kill_pid,
    read_pid_file,
    stack_env,
)
from tests.tui.fakes import T0, FakeSource

SNAPSHOT_ROOT = Path(__file__).resolve().parents[2] / "snapshots"


class PlantdSVGExtension(pytest_textual_snapshot.SVGImageExtension):
    @classmethod
    def dirname(cls, *, test_location: Any) -> str:
        return str(SNAPSHOT_ROOT / test_location.basename)


@pytest.fixture(autouse=True)
def _snapshots_in_repo_root(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(pytest_textual_snapshot, "SVGImageExtension", PlantdSVGExtension)
    yield


def make_app(source: FakeSource | None = None, **kwargs: Any) -> PlantApp:
    """An app with a frozen clock, UTC, no animations and one poll per hour (deterministic)."""
    kwargs.setdefault("poll_interval", 3600.0)
    return PlantApp(
        source or FakeSource(),
        clock=lambda: T0,
        monotonic=lambda: 1000.0,
        tz=UTC,
        animations=False,
        **kwargs,
    )


@pytest.fixture
def fake() -> FakeSource:
    return FakeSource()


# --------------------------------------------------------------------------- real stack


@dataclasses.dataclass
class Stack:
    """A whole `plant up` stack (broker, state, logger, echo, metric) on random 127.0.0.1
    ports in its own PLANTD_HOME; the env carries no PLANTD_CLIENT_*_BUS on purpose, so the
    console has to find the buses from the broker's settings like an operator's would."""

    home: Path
    env: dict[str, str]
    plant: PlantRunner

    def source_settings(self, timeout: float = 1.0) -> SourceSettings:
        """What `plant tui` would use in this environment, with a short request timeout so
        broker loss shows within a second or two."""
        return dataclasses.replace(SourceSettings.from_env(env=self.env), timeout=timeout)

    def bus(self, name: str) -> tuple[str, str]:
        up = name.upper()
        return self.env[f"PLANTD_BROKER_{up}_FRONTEND"], self.env[f"PLANTD_BROKER_{up}_BACKEND"]

    def broker_pid(self) -> int:
        info = read_pid_file(self.home, "broker")
        assert info and isinstance(info.get("pid"), int), "broker pid file missing"
        return int(info["pid"])

    def kill_broker(self) -> None:
        kill_pid(self.broker_pid())

    def start_broker(self) -> None:
        res = self.plant("daemon", "start", "broker", timeout=40)
        assert res.returncode == 0, res.stderr

    def state(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`plant state ARGS -o json` (bounded)."""
        return self.plant("state", *args, "-o", "json", timeout=30)

    def pages_keys(self) -> bool:
        """Does this tree's state service page listings (issue 10)? One without paging
        rejects `limit` with invalid_argument."""
        from plantd.client import SyncClient
        from plantd.client.errors import RequestRejected

        with SyncClient(self.source_settings().endpoint, timeout=5.0) as client:
            try:
                client.call("org.plantd.State", "list-scopes", {"limit": 1})
            except RequestRejected:
                return False
        return True

    def write_tags(self, scope: str, count: int) -> None:
        """`count` keys `tag.000000`... of `{"v": i, "units": "degC"}`, in txns of 125."""
        from plantd.client import SyncClient

        with SyncClient(self.source_settings().endpoint, timeout=10.0) as client:
            for start in range(0, count, 125):
                ops = [
                    {"op": "set", "key": f"tag.{i:06d}", "value": {"v": i, "units": "degC"}}
                    for i in range(start, min(count, start + 125))
                ]
                client.call("org.plantd.State", "txn", {"service": scope, "ops": ops})

    def state_value(self, scope: str, key: str) -> Any:
        res = self.state("get", "-s", scope, key)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)["value"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack per test module (starting one costs seconds); torn down by PID at the end."""
    home = tmp_path_factory.mktemp("stack") / "plantd-home"
    home.mkdir()
    env = stack_env(clean_env(home))
    plant = PlantRunner(env)
    try:
        up = plant("up", timeout=90)
        if up.returncode != 0:
            pytest.fail(f"plant up failed ({up.returncode}): {up.stderr[-2000:]}")
        yield Stack(home, env, plant)
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            plant("down", timeout=60)
        kill_daemons_in(home)
