"""A deprecated logger setting still loads, and says at start that it does nothing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.support.modules import running_logger


async def test_loki_max_queue_is_ignored_with_a_warning(
    tmp_path: Path, loop_broker: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with running_logger(tmp_path, loop_broker, None, None, loki_max_queue=5000):
        pass
    (line,) = [r.getMessage() for r in caplog.records if "loki_max_queue" in r.getMessage()]
    assert line.startswith("loki_max_queue=5000 is ignored: the store is the Loki queue")


async def test_no_warning_when_it_is_not_set(
    tmp_path: Path, loop_broker: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with running_logger(tmp_path, loop_broker, None, None):
        pass
    assert not [r for r in caplog.records if "loki_max_queue" in r.getMessage()]
