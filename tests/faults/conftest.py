"""The fault suite reuses the broker tests' process fixtures (``broker`` is an endpoint here)."""

from tests.broker.conftest import broker, peer

__all__ = ["broker", "peer"]
