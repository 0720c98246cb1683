"""Storage engines the services share, so no service reaches into another's internals.

* :mod:`.ingest`: SQLite with one writer thread and one reader thread, batched bus ingestion
  and the store lifecycle (the logger and the metric module store on it);
* :mod:`.paging`: paged, byte-bounded replies of record stores (docs/protocol.md).
"""
