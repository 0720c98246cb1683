"""The metric tests use the logger tests' real broker and bus fixtures."""

from tests.logger.conftest import loop_broker, make_bus  # noqa: F401 (fixtures)
