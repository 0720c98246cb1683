"""TUI test fixtures: snapshots go to the top-level `snapshots/` directory.

pytest-textual-snapshot's `snap_compare` switches the syrupy extension to its module-level
`SVGImageExtension` when the fixture runs; an autouse fixture (run before it) swaps in a subclass
whose `dirname` points at `<repo>/snapshots/<test module>/`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_textual_snapshot

from tests.support.plant_up import PlantUpStack, plant_up_stack
from tests.tui.fakes import FakeSource

SNAPSHOT_ROOT = Path(__file__).resolve().parents[2] / "snapshots"


class PlantdSVGExtension(pytest_textual_snapshot.SVGImageExtension):
    @classmethod
    def dirname(cls, *, test_location: Any) -> str:
        return str(SNAPSHOT_ROOT / test_location.basename)


@pytest.fixture(autouse=True)
def _snapshots_in_repo_root(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(pytest_textual_snapshot, "SVGImageExtension", PlantdSVGExtension)
    yield


@pytest.fixture
def fake() -> FakeSource:
    return FakeSource()


@pytest.fixture(scope="module")
def up_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlantUpStack]:
    """One whole `plant up` stack per test module (starting one costs seconds)."""
    with plant_up_stack(tmp_path_factory.mktemp("stack") / "plantd-home") as stack:
        yield stack
