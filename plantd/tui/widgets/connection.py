"""Connection indicator and the broker-gone banner.

State is always spelled out in words next to the colour (the operator may be colour-blind or
on a monochrome terminal).
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

_REACH = {"up": ("up", "green"), "down": ("DOWN", "bold red"), "unknown": ("?", "yellow")}


class ConnectionBar(Static):
    """One line: endpoint, connected/disconnected, round-trip time, who the console is,
    read-only badge. With several brokers, each one and whether it is reached (the one in
    use underlined)."""

    connected: reactive[bool | None] = reactive(None)
    rtt: reactive[float | None] = reactive(None)
    updated: reactive[str] = reactive("")
    #: "alice (operator)" once org.plantd.Identity answered whoami ("" before, or without it)
    who: reactive[str] = reactive("")
    #: ``BrokerReach`` items from the source (endpoint, state, current)
    brokers: reactive[list[Any]] = reactive(list, always_update=True)

    def __init__(self, endpoint: str, read_only: bool = False, **kwargs: object) -> None:
        super().__init__("", **kwargs)  # type: ignore[arg-type]
        self.endpoint = endpoint
        self.read_only = read_only

    def render(self) -> Text:
        text = Text(" plantd ", style="bold")
        if self.connected is None:
            text.append("◌ connecting", style="yellow")
        elif self.connected:
            text.append("● connected", style="bold green")
        else:
            text.append("✖ DISCONNECTED", style="bold red")
        if len(self.brokers) > 1:
            for i, b in enumerate(self.brokers):
                word, style = _REACH.get(b.state, (b.state, ""))
                text.append("  " if i == 0 else " · ")
                text.append(
                    b.endpoint.removeprefix("tcp://"), style="underline" if b.current else ""
                )
                text.append(f" {word}", style=style)
        else:
            text.append(f"  {self.endpoint}")
        if self.connected and self.rtt is not None:
            text.append(f"  rtt {self.rtt * 1000:.1f} ms", style="dim")
        if self.updated:
            text.append(f"  {self.updated}", style="dim")
        if self.who:
            text.append(f"  {self.who}", style="bold")
        if self.read_only:
            text.append("  ")
            text.append(" READ-ONLY ", style="bold black on yellow")
        return text


class Banner(Static):
    """Full-width warning shown while the broker is unreachable; hidden otherwise."""

    def show_disconnected(self, endpoint: str, error: str, attempt: int, retry_in: float) -> None:
        self.update(
            Text.assemble(
                ("⚠ BROKER UNREACHABLE ", "bold"),
                f"{error or f'no reply from {endpoint}'}\n",
                f"Reconnecting automatically (attempt {attempt}, next in {retry_in:.0f}s); "
                "data on screen is stale.",
            )
        )
        self.display = True

    def hide(self) -> None:
        self.display = False
