"""Fixtures of the state store tests: the database path, and the storage backends the
service suite runs against (``backend``: SQLite, and etcd on a test cluster)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.etcd import EtcdCluster, start_cluster


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture(scope="session")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """One etcd member for the session (skips without etcd-server); each stack has its own
    key prefix in it."""
    cluster = start_cluster(tmp_path_factory.mktemp("etcd"))
    try:
        yield cluster
    finally:
        cluster.close()


def etcd_settings(cluster: EtcdCluster, **extra: Any) -> dict[str, Any]:
    """State daemon settings for a fresh prefix on ``cluster``."""
    return {
        "backend": "etcd",
        "etcd_endpoints": cluster.endpoints,
        "etcd_prefix": f"/test-{time.monotonic_ns()}/",
        "etcd_max_txn_ops": 1024,  # the test cluster runs with --max-txn-ops 1024
        "etcd_timeout": 2,
        **extra,
    }


@pytest.fixture(scope="module", params=["sqlite", "etcd"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Extra state daemon settings selecting the storage backend under test."""
    if request.param == "sqlite":
        return {}
    return etcd_settings(request.getfixturevalue("etcd_cluster"))
