"""One real stack (broker, state, logger, metric, proxy) per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.proxy import ProxyStack, proxy_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyStack]:
    with proxy_stack(tmp_path_factory.mktemp("proxy") / "home") as s:
        yield s
