"""etcd servers for tests: Debian's ``etcd`` binary on free 127.0.0.1 ports in a temporary
directory, killed by PID at teardown. One member or a cluster of several (the fault tests kill
and restart members)."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.peernet import PeerNet
from tests.support.polling import wait_until
from tests.support.ports import _accepts, free_port

ETCD = shutil.which("etcd")
SKIP_REASON = (
    "etcd-server is not installed (Debian: apt-get install etcd-server; .ci/run installs it)"
)


def require_etcd() -> str:
    """The etcd binary, or skip the test with the reason."""
    if ETCD is None:
        pytest.skip(SKIP_REASON)
    return ETCD


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    #: the peer port the others dial (a PeerNet relay in front of ``peer_port``), if any
    advertised_peer_port: int | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        """The advertised peer URL (the relay's when the cluster is partitionable)."""
        return f"http://127.0.0.1:{self.advertised_peer_port or self.peer_port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class EtcdCluster:
    """``size`` etcd members on loopback; ``endpoints`` is the plantd setting value."""

    root: Path
    size: int = 1
    #: peer traffic through a PeerNet, so a member can be partitioned away (``net.isolate``)
    partitionable: bool = False
    members: list[Member] = field(default_factory=list)
    net: PeerNet | None = None

    def __post_init__(self) -> None:
        for i in range(self.size):
            d = self.root / f"m{i}"
            d.mkdir(parents=True, exist_ok=True)
            self.members.append(
                Member(f"m{i}", free_port(), free_port(), d / "data", d / "etcd.log")
            )
        if self.partitionable:
            self.net = PeerNet(
                lambda: {m.proc.pid: m.name for m in self.members if m.proc is not None}
            )
            for m in self.members:
                m.advertised_peer_port = self.net.add(m.name, m.peer_port)

    def member(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)

    def status(self, m: Member, timeout: float = 1.0) -> dict[str, Any] | None:
        """etcd's maintenance status of ``m`` (JSON gateway), None if it does not answer."""
        req = urllib.request.Request(f"{m.endpoint}/v3/maintenance/status", data=b"{}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                doc: dict[str, Any] = json.loads(resp.read())
                return doc
        except (OSError, ValueError):
            return None

    def leader(self, among: list[Member] | None = None) -> Member | None:
        """The member that ``among`` (default: the live ones) agree leads, if they agree."""
        ids: dict[str, Member] = {}
        leaders = set()
        for m in among or [m for m in self.members if m.alive]:
            st = self.status(m)
            if st is None or st.get("leader", "0") == "0":
                return None
            ids[st["header"]["member_id"]] = m
            leaders.add(st["leader"])
        if len(leaders) != 1:
            return None
        return ids.get(leaders.pop())

    def wait_leader(self, among: list[Member] | None = None, timeout: float = 15.0) -> Member:
        return wait_until(lambda: self.leader(among), timeout, interval=0.1, what="etcd leader")

    @property
    def endpoints(self) -> str:
        return ",".join(m.endpoint for m in self.members)

    def _command(self, m: Member) -> list[str]:
        cluster = ",".join(f"{x.name}={x.peer_url}" for x in self.members)
        return [
            require_etcd(),
            "--name",
            m.name,
            "--data-dir",
            str(m.data_dir),
            "--listen-client-urls",
            m.endpoint,
            "--advertise-client-urls",
            m.endpoint,
            "--listen-peer-urls",
            f"http://127.0.0.1:{m.peer_port}",
            "--initial-advertise-peer-urls",
            m.peer_url,
            "--initial-cluster",
            cluster,
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            f"plantd-test-{self.root.name}",
            # fast elections on loopback: a lost leader is replaced within ~1 s
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
            "--max-txn-ops",
            "1024",
            "--log-level",
            "warn",
        ]

    def start_member(self, m: Member) -> None:
        with m.log.open("ab") as out:
            m.proc = subprocess.Popen(
                self._command(m), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def start(self, timeout: float = 20.0) -> EtcdCluster:
        for m in self.members:
            self.start_member(m)
        for m in self.members:
            self.wait_serving(m, timeout)
        return self

    def wait_serving(self, m: Member, timeout: float = 20.0) -> None:
        def up() -> bool:
            if not m.alive:
                raise RuntimeError(f"etcd {m.name} exited:\n{m.log.read_text(errors='replace')}")
            return _accepts(m.client_port)

        wait_until(up, timeout, what=f"etcd {m.name} listening")

    def kill(self, m: Member) -> None:
        """SIGKILL one member (a crash), reaped."""
        if m.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                m.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                m.proc.wait(timeout=10)

    def restart(self, m: Member) -> None:
        self.kill(m)
        self.start_member(m)
        self.wait_serving(m)

    def close(self) -> None:
        for m in self.members:
            self.kill(m)
        if self.net is not None:
            self.net.close()


def start_cluster(root: Path, size: int = 1, *, partitionable: bool = False) -> EtcdCluster:
    cluster = EtcdCluster(root, size, partitionable)
    try:
        return cluster.start()
    except BaseException:
        cluster.close()
        raise


def settle(seconds: float) -> None:
    """A pause the test explains at its call site (leader election, lease expiry)."""
    time.sleep(seconds)
