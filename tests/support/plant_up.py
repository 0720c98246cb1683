"""A whole ``plant up`` stack (broker, state, logger, echo, metric) as real daemon processes
on random 127.0.0.1 ports in its own PLANTD_HOME."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from plantd.tui.source import SourceSettings
from tests.support.broker import stack_env
from tests.support.bus import publish_until_seen
from tests.support.processes import PlantRunner, clean_env, kill_daemons_in, kill_pid, read_pid_file

LOGGER_SERVICE = "org.plantd.Logger"


@dataclasses.dataclass
class PlantUpStack:
    """The env carries no PLANTD_CLIENT_*_BUS on purpose, so the console has to find the
    buses from the broker's settings like an operator's would."""

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

    def log_until_stored(self, service: str, message: str, timeout: float = 15.0) -> None:
        """Publish ``message`` from ``service`` on the log bus until the logger has stored it
        (its `query` returns it): the logger is subscribed and its history holds a record."""
        from plantd.client import SyncClient
        from plantd.logbus import LogBusHandler

        handler = LogBusHandler(service, self.bus("log")[0])
        log = logging.getLogger(f"tests.support.plant_up.{service}")
        log.handlers[:] = [handler]
        log.propagate = False
        log.setLevel(logging.INFO)
        try:
            with SyncClient(self.source_settings().endpoint, timeout=5.0) as client:

                def stored() -> bool:
                    reply = client.call(LOGGER_SERVICE, "query", {"service": service})
                    return any(r.get("msg") == message for r in reply["data"]["records"])

                publish_until_seen(
                    lambda n: log.info(message, extra={"fields": {"probe": n}}),
                    stored,
                    what=f"{LOGGER_SERVICE} storing a record from {service}",
                    timeout=timeout,
                    interval=0.1,
                )
        finally:
            log.removeHandler(handler)
            handler.close()


@contextlib.contextmanager
def plant_up_stack(home: Path) -> Iterator[PlantUpStack]:
    """``plant up`` in ``home`` (created), ``plant down`` and a kill by PID at the end."""
    home.mkdir(parents=True, exist_ok=True)
    env = stack_env(clean_env(home))
    plant = PlantRunner(env)
    try:
        up = plant("up", timeout=90)
        if up.returncode != 0:
            raise AssertionError(f"plant up failed ({up.returncode}): {up.stderr[-2000:]}")
        yield PlantUpStack(home, env, plant)
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            plant("down", timeout=60)
        kill_daemons_in(home)
