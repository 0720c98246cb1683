"""plantd: a Python distributed control system (Majordomo broker, state store, buses, CLI, TUI)."""

__version__ = "0.1.0"
