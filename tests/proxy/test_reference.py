"""docs/proxy.md carries the reference generated from the route table, unchanged."""

from __future__ import annotations

from pathlib import Path

from plantd.proxy.reference import reference


def test_docs_reference_is_generated_from_the_routes() -> None:
    page = (Path(__file__).parents[2] / "docs" / "proxy.md").read_text()
    assert reference() in page, (
        "run: python -m plantd.proxy.reference and paste it in docs/proxy.md"
    )
