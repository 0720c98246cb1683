"""TUI test fixtures: snapshots go to the top-level `snapshots/` directory.

pytest-textual-snapshot's `snap_compare` switches the syrupy extension to its module-level
`SVGImageExtension` when the fixture runs; an autouse fixture (run before it) swaps in a subclass
whose `dirname` points at `<repo>/snapshots/<test module>/`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
import pytest_textual_snapshot

from plantd.tui.app import PlantApp
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
