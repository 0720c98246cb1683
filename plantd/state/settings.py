"""The state daemon's settings, light enough for the CLI (no store, no sqlite3).

The offline commands (``plant state restore``) resolve the database path exactly as the
daemon does without importing the daemon; :mod:`plantd.state.daemon` re-exports
:class:`StateSettings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from plantd.config import LOCAL_BROKER, DaemonSettings, Endpoints, Home
from plantd.vocabulary import HEALTH_PORTS, STATE_SERVICE, bus

SERVICE = STATE_SERVICE


@dataclass
class StateSettings(DaemonSettings):
    """``PLANTD_STATE_*``."""

    health_port: int = HEALTH_PORTS["state"]
    endpoint: Endpoints = LOCAL_BROKER
    service: str = SERVICE
    heartbeat_interval: float = 2.5
    liveness: int = 3
    #: storage: "sqlite" (one file, the default) or "etcd" (a cluster several daemons share)
    backend: str = "sqlite"
    #: SQLite file (default ``$PLANTD_HOME/data/state.db``)
    db: Path | None = None
    #: etcd client URLs, comma-separated (``http://host-a:2379,http://host-b:2379``)
    etcd_endpoints: str = ""
    #: where this plant's state lies in etcd (several plants may share a cluster)
    etcd_prefix: str = "/plantd/state/"
    #: seconds an etcd request may take before the request is answered ``unavailable``
    etcd_timeout: float = 3.0
    #: etcd's --max-txn-ops (etcd's default 128): a write needs its keys + scopes + 2
    etcd_max_txn_ops: int = 128
    #: lease of the state bus publisher role (s): a dead publisher is replaced after it
    etcd_publisher_ttl: int = 2
    #: state bus frontend: every committed change is published here (topic = scope);
    #: named as in ModuleSettings
    state_bus: str = bus("state").publish
    #: event bus frontend: audit rows (topic ``audit.<service>``) and the chain head
    event_bus: str = bus("event").publish
    #: MDP workers in this process = requests served concurrently (group commit width)
    workers: int = 32
    history_size: int = 10_000
    request_history: int = 10_000
    batch_max: int = 256
    reap_interval: float = 1.0
    max_value_bytes: int = 512 * 1024
    max_txn_ops: int = 128
    #: events per ``watch`` reply page
    watch_limit: int = 1000
    #: page cache of the writer connection (MiB): bounds RSS, speeds random writes at 10^6 keys
    cache_mib: int = 64
    #: audit trail of writes and denials with the etcd backend (default
    #: ``$PLANTD_HOME/identity/audit.db``); the SQLite store keeps it in its own file
    audit_db: Path | None = None
    #: audit rows older than this are pruned (seconds; default one year)
    audit_retention: float = 365 * 86400.0
    #: the audit chain head is published on the event bus this often (seconds)
    audit_head_interval: float = 10.0
    #: etcd backend: reply to a write only once its audit row is durable (off: the row
    #: follows in the next audit batch, a crash in between loses it). The SQLite store
    #: commits a write's rows with it; a refusal's row is waited for unless this is off
    audit_wait: bool = True
    #: fault injection for tests only: "crash-after-commit"
    failpoint: str = ""


def audit_path(settings: StateSettings, home: Home) -> Path:
    """The audit database: ``PLANTD_STATE_AUDIT_DB``, else the keyring's ``audit.db``."""
    return Path(settings.audit_db) if settings.audit_db else home.root / "identity" / "audit.db"


def db_path(settings: StateSettings, home: Home) -> Path:
    """The database file: ``PLANTD_STATE_DB``, else ``$PLANTD_HOME/data/state.db``."""
    return Path(settings.db) if settings.db else home.data / "state.db"
