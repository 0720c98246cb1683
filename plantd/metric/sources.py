"""Sample sources of the metric producer: host metrics (psutil) and a signal generator.

A source has a ``rate`` (samples per second per channel) and ``samples(now)`` returning the
sample documents ``{timestamp, device, channel, value, units, tags}`` due at ``now``.
"""

from __future__ import annotations

import math
import os
import random
import socket
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["HostSource", "SignalSource", "Source", "parse_signal", "sample"]


def sample(
    device: str,
    channel: str,
    value: float,
    units: str = "",
    tags: dict[str, Any] | None = None,
    timestamp: float = 0.0,
) -> dict[str, Any]:
    """One sample document as it goes on the bus."""
    return {
        "timestamp": timestamp,
        "device": device,
        "channel": channel,
        "value": value,
        "units": units,
        "tags": tags or {},
    }


class Source(Protocol):
    device: str
    rate: float

    def samples(self, now: float) -> list[dict[str, Any]]: ...


def _disk_label(mount: str) -> str:
    label = mount.strip("/").replace("/", "_")
    return label or "root"


class HostSource:
    """CPU, memory, load and disk usage of this host, via psutil."""

    def __init__(
        self,
        device: str = "",
        *,
        rate: float = 0.2,
        disks: list[str] | tuple[str, ...] = ("/",),
        tags: dict[str, Any] | None = None,
    ) -> None:
        import psutil

        self._psutil = psutil
        self.device = device or socket.gethostname()
        self.rate = rate
        self.disks = list(disks)
        self.tags = tags or {}
        psutil.cpu_percent(interval=None)  # the first call only primes the counter

    def samples(self, now: float) -> list[dict[str, Any]]:
        ps = self._psutil
        d, t = self.device, self.tags
        mem = ps.virtual_memory()
        out = [
            sample(d, "cpu.percent", ps.cpu_percent(interval=None), "%", t, now),
            sample(d, "memory.percent", mem.percent, "%", t, now),
            sample(d, "memory.used", mem.used, "B", t, now),
            sample(d, "memory.available", mem.available, "B", t, now),
        ]
        if hasattr(os, "getloadavg"):
            out.append(sample(d, "cpu.load1", os.getloadavg()[0], "", t, now))
        for mount in self.disks:
            try:
                usage = ps.disk_usage(mount)
            except OSError:
                continue
            tags = {**t, "mount": mount}
            label = _disk_label(mount)
            out.append(sample(d, f"disk.{label}.percent", usage.percent, "%", tags, now))
            out.append(sample(d, f"disk.{label}.used", usage.used, "B", tags, now))
        return out


@dataclass
class SignalSource:
    """A synthetic channel: ``sine``, ``ramp`` (sawtooth), ``square`` or ``noise``.

    ``value(t)`` is a pure function of time (noise aside), so tests and operators can predict
    what a consumer must have stored.
    """

    kind: str = "sine"
    device: str = "signal"
    channel: str = ""
    period: float = 10.0
    rate: float = 1.0
    amplitude: float = 1.0
    offset: float = 0.0
    units: str = ""
    seed: int | None = None
    tags: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("sine", "ramp", "square", "noise"):
            raise ValueError(f"unknown signal kind {self.kind!r} (sine, ramp, square, noise)")
        if self.period <= 0 or self.rate <= 0:
            raise ValueError("signal period and rate must be positive")
        self.channel = self.channel or self.kind
        self._rng = random.Random(self.seed)

    def value(self, t: float) -> float:
        phase = (t % self.period) / self.period
        if self.kind == "sine":
            v = math.sin(2 * math.pi * phase)
        elif self.kind == "ramp":
            v = phase
        elif self.kind == "square":
            v = 1.0 if phase < 0.5 else -1.0
        else:
            v = self._rng.uniform(-1.0, 1.0)
        return self.offset + self.amplitude * v

    def samples(self, now: float) -> list[dict[str, Any]]:
        tags = {**self.tags, "kind": self.kind}
        return [sample(self.device, self.channel, self.value(now), self.units, tags, now)]


_FLOATS = ("period", "rate", "amplitude", "offset")


def parse_signal(spec: str) -> SignalSource:
    """``"sine period=10 rate=5 amplitude=2 channel=temp units=C device=sim"`` -> source.

    Space-separated so a list of specs survives the comma-separated environment variable.
    """
    parts = spec.split()
    if not parts:
        raise ValueError("empty signal spec")
    kwargs: dict[str, Any] = {"kind": parts[0]}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"signal spec {spec!r}: expected key=value, got {part!r}")
        if key in _FLOATS:
            kwargs[key] = float(value)
        elif key == "seed":
            kwargs[key] = int(value)
        elif key in ("channel", "units", "device"):
            kwargs[key] = value
        else:
            raise ValueError(f"signal spec {spec!r}: unknown key {key!r}")
    return SignalSource(**kwargs)
