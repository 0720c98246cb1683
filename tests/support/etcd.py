"""etcd servers for tests: Debian's ``etcd`` binary on free 127.0.0.1 ports in a temporary
directory, killed by PID at teardown. One member or a cluster of several (the fault tests kill
and restart members)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

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

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class EtcdCluster:
    """``size`` etcd members on loopback; ``endpoints`` is the plantd setting value."""

    root: Path
    size: int = 1
    members: list[Member] = field(default_factory=list)

    def __post_init__(self) -> None:
        for i in range(self.size):
            d = self.root / f"m{i}"
            d.mkdir(parents=True, exist_ok=True)
            self.members.append(
                Member(f"m{i}", free_port(), free_port(), d / "data", d / "etcd.log")
            )

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
            m.peer_url,
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


def start_cluster(root: Path, size: int = 1) -> EtcdCluster:
    cluster = EtcdCluster(root, size)
    try:
        return cluster.start()
    except BaseException:
        cluster.close()
        raise


def settle(seconds: float) -> None:
    """A pause the test explains at its call site (leader election, lease expiry)."""
    time.sleep(seconds)
