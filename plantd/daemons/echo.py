"""The echo module: returns request bodies unchanged. The smallest example of the SDK.

It proves the whole path (client -> broker -> worker -> client) end to end and gives
benchmarks and smoke tests a service whose cost is only the transport.
"""

from __future__ import annotations

from dataclasses import dataclass

from plantd.module import Module, ModuleSettings, operation

SERVICE = "org.plantd.module.Echo"


@dataclass
class EchoSettings(ModuleSettings):
    """``PLANTD_ECHO_*``: which broker to serve and how to heartbeat it."""

    health_port: int = 8084


class EchoModule(Module[EchoSettings]):
    name = "echo"
    service = SERVICE
    settings_class = EchoSettings
    description = "plantd echo module"

    @operation("echo", raw=True)
    async def echo(self, body: list[bytes]) -> list[bytes]:
        return body


DAEMON = EchoModule
