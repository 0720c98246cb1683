"""Moved to :mod:`plantd.storage.ingest` (shared with the metric module); kept as an alias."""

from plantd.storage.ingest import Batcher, BusStore, Database, parse_ts, read_bus

__all__ = ["Batcher", "BusStore", "Database", "parse_ts", "read_bus"]
