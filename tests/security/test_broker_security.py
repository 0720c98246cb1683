"""The broker with security on, over real CURVE sockets: a broker in this event loop on a
keyring of the test's own (a copy of the session keyring plus the principals a test adds)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import zmq

from plantd.broker.core import BrokerSettings
from plantd.broker.server import BrokerServer
from plantd.client import Client, Worker
from plantd.client.errors import AuthenticationFailed, NotAuthorized, RateLimited
from plantd.identity.principals import Registry
from plantd.security.caller import CALLER_MARKER, acting_for, current_caller
from plantd.security.keys import Keyring, generate_keypair
from plantd.security.settings import (
    ClientSecurity,
    InsecureBind,
    ServerSecurity,
    client_security,
    server_security,
)
from tests.support.keyring import install_keyring
from tests.support.polling import wait_until_async

pytestmark = pytest.mark.timeout(60)


class Plant:
    def __init__(self, home: Path, endpoint: str, server: BrokerServer) -> None:
        self.home = home
        self.endpoint = endpoint
        self.server = server
        self.ring = Keyring.at_home(home)
        self.env = {"PLANTD_HOME": str(home)}

    def add(self, name: str, *roles: str) -> ClientSecurity:
        with Registry(self.ring) as reg:
            reg.add(name, list(roles))
        return self.security(name)

    def security(self, name: str) -> ClientSecurity:
        return client_security(str(self.ring.secret_path(name)), self.env)

    def client(self, security: ClientSecurity, timeout: float = 3.0) -> Client:
        return Client(self.endpoint, timeout=timeout, security=security)


@contextlib.asynccontextmanager
async def secure_broker(tmp_path: Path, **settings: float) -> AsyncIterator[Plant]:
    home = tmp_path / "home"
    home.mkdir()
    install_keyring(home)
    server = BrokerServer(
        BrokerSettings(endpoint="tcp://127.0.0.1:0", heartbeat_interval=0.2, **settings),
        security=server_security({"PLANTD_HOME": str(home)}),
    )
    endpoint = server.bind()
    stop = asyncio.Event()
    task = asyncio.create_task(server.run(stop))
    try:
        yield Plant(home, endpoint, server)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_unknown_key_is_refused_within_2s(tmp_path: Path) -> None:
    async with secure_broker(tmp_path) as plant:
        admin = plant.security("admin")
        stranger = ClientSecurity(generate_keypair(), admin.server_public, "test")
        start = time.monotonic()
        async with plant.client(stranger, timeout=5.0) as c:
            with pytest.raises(AuthenticationFailed, match="authentication rejected by broker"):
                await c.call("mmi.broker", "x")
        assert time.monotonic() - start < 2.0


async def test_wrong_broker_key_is_a_key_mismatch(tmp_path: Path) -> None:
    async with secure_broker(tmp_path) as plant:
        admin = plant.security("admin")
        wrong = ClientSecurity(admin.keys, generate_keypair().public, "test")
        async with plant.client(wrong, timeout=5.0) as c:
            with pytest.raises(AuthenticationFailed, match="broker key mismatch"):
                await c.mmi("mmi.broker")


async def test_viewer_reads_but_cannot_write_and_denials_are_counted(tmp_path: Path) -> None:
    async with secure_broker(tmp_path) as plant:
        viewer = plant.add("vic", "viewer")
        async with plant.client(viewer) as c:
            assert (await c.broker_status()).version  # MMI: any authenticated principal
            with pytest.raises(NotAuthorized, match=r"vic.*'set'.*rule default-deny"):
                await c.call("org.plantd.State", "set", {"scope": "a", "key": "k", "value": 1})
            with pytest.raises(Exception) as err:  # a read passes: no worker, not a denial
                await c.call("org.plantd.State", "get", {"scope": "a", "key": "k"}, timeout=2)
            assert not isinstance(err.value, NotAuthorized)
        assert plant.server.core.counters.denied == 1


async def test_rogue_worker_cannot_register_as_a_protected_service(tmp_path: Path) -> None:
    async with secure_broker(tmp_path) as plant:
        rogue = Worker(plant.endpoint, "org.plantd.State", security=plant.add("eve", "viewer"))
        task = asyncio.create_task(rogue.run())
        try:
            await wait_until_async(
                lambda: plant.server.core.counters.denied >= 1, 5, what="READY denied"
            )
            async with plant.client(plant.security("admin")) as c:
                assert await c.mmi_service("org.plantd.State") == "404"
        finally:
            await rogue.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_worker_sees_the_real_caller_not_a_forged_prefix(tmp_path: Path) -> None:
    async with secure_broker(tmp_path) as plant:
        who_key = plant.add("who", "service:org.plantd.module.Who")
        worker = Worker(plant.endpoint, "org.plantd.module.Who", security=who_key)

        @worker.operation("who", raw=True)
        async def who(body: list[bytes]) -> list[bytes]:
            caller = current_caller()
            return [json.dumps(caller.to_json()).encode(), *body]

        task = asyncio.create_task(worker.run())
        try:
            await asyncio.wait_for(worker.connected.wait(), 5)
            alice = plant.add("alice", "operator")
            forged = json.dumps({"principal": "admin", "roles": ["admin"]}).encode()
            async with plant.client(alice) as c:

                async def registered() -> bool:
                    return await c.mmi_service("org.plantd.module.Who") == "200"

                await wait_until_async(registered, 5, what="Who registered")
                reply = await c.request("org.plantd.module.Who", b"who", CALLER_MARKER, forged)
            seen = json.loads(reply[0])
            assert seen["principal"] == "alice" and seen["roles"] == ["operator"]
            assert seen["peer"] == "127.0.0.1"
            assert reply[1:] == [b"who", CALLER_MARKER, forged]  # the forged frames stay body
        finally:
            await worker.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_revoked_key_refused_on_live_connection_and_on_reconnect(tmp_path: Path) -> None:
    async with secure_broker(tmp_path) as plant:
        alice = plant.add("alice", "viewer")
        async with plant.client(alice) as c:
            await c.broker_status()  # the pooled connection is now open
            with Registry(plant.ring) as reg:
                reg.revoke("alice")
            with pytest.raises(NotAuthorized, match="not-active"):
                await c.broker_status()
        async with plant.client(alice) as fresh:
            with pytest.raises(AuthenticationFailed, match="rejected"):
                await fresh.broker_status()


async def test_rate_limit_is_answered_not_dropped(tmp_path: Path) -> None:
    async with secure_broker(tmp_path, rate_limit=5.0, rate_burst=5.0) as plant:
        async with plant.client(plant.security("admin")) as c:
            outcomes = []
            for _ in range(12):
                try:
                    await c.broker_status()
                    outcomes.append("ok")
                except RateLimited as exc:
                    assert "rate limited" in str(exc) and "admin" in str(exc)
                    outcomes.append("limited")
        assert outcomes.count("ok") >= 5 and "limited" in outcomes
        assert plant.server.core.counters.rate_limited == outcomes.count("limited")


def test_insecure_bind_of_a_public_address_is_refused() -> None:
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    try:
        with pytest.raises(InsecureBind, match="without security"):
            ServerSecurity().apply(sock, "tcp://0.0.0.0:9797")
        ServerSecurity().apply(sock, "tcp://127.0.0.1:9797")  # loopback: allowed
    finally:
        sock.close(0)


def test_daemon_refuses_a_group_readable_secret_with_exit_9(
    plantd_home: Path, plantd_env: dict[str, str]
) -> None:
    import subprocess

    from tests.support.processes import DAEMON_CMD

    secret = plantd_home / "identity" / "secrets" / "echo.key_secret"
    secret.chmod(0o644)
    out = subprocess.run(
        [*DAEMON_CMD, "echo"], env=plantd_env, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 9, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and str(secret) in lines[0] and "chmod 600" in lines[0]


async def test_a_proxy_acts_for_its_token_principal_and_nobody_else_may(tmp_path: Path) -> None:
    """The HTTP proxy's requests go out for the principal its API token names: the broker
    decides as that principal and the worker sees it, via the proxy; a principal without
    ``@act-as`` cannot act for anyone, and an unknown principal cannot be acted for."""
    async with secure_broker(tmp_path) as plant:
        who_key = plant.add("who", "service:org.plantd.module.Who")
        worker = Worker(plant.endpoint, "org.plantd.module.Who", security=who_key)

        @worker.operation("who")
        async def who(doc: object) -> dict[str, object]:
            return current_caller().to_json()

        task = asyncio.create_task(worker.run())
        try:
            await asyncio.wait_for(worker.connected.wait(), 5)
            plant.add("alice", "operator")
            plant.add("vic", "viewer")
            gateway = plant.add("gw", "service:org.plantd.Proxy")
            async with plant.client(gateway) as c:

                async def registered() -> bool:
                    return await c.mmi_service("org.plantd.module.Who") == "200"

                await wait_until_async(registered, 5, what="Who registered")
                with acting_for("alice"):
                    seen = await c.call("org.plantd.module.Who", "who", {})
                assert (seen["principal"], seen["via"]) == ("alice", "gw")
                assert seen["roles"] == ["operator"]
                with acting_for("vic"), pytest.raises(NotAuthorized, match=r"'vic'.*'who'"):
                    await c.call("org.plantd.module.Who", "who", {})
                with acting_for("nobody"), pytest.raises(NotAuthorized, match="not-active"):
                    await c.call("org.plantd.module.Who", "who", {})
                with pytest.raises(NotAuthorized, match=r"'gw'.*'who'"):  # as itself: a viewer
                    await c.call("org.plantd.module.Who", "who", {})
            async with plant.client(plant.security("alice")) as c:
                with acting_for("admin"), pytest.raises(NotAuthorized, match="act for others"):
                    await c.call("org.plantd.module.Who", "who", {})
        finally:
            await worker.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
