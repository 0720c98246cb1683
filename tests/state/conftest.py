"""Shared helpers of the state store tests."""

from __future__ import annotations

from pathlib import Path

import pytest


class FakeClock:
    """A clock the test moves by hand (``clock.now += 6``): TTLs without sleeping."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"
