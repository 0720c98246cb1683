"""The fault suite reuses the broker tests' process fixtures."""

from tests.broker.conftest import peer

__all__ = ["peer"]
