"""The buses with security on, against a real broker process: a subscription the policy
forbids receives nothing (a catch-all included, when some topics are denied), publishing
needs the right, and nobody without a registered key gets anything."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from plantd.client import Publisher, Subscriber
from plantd.identity.principals import Registry
from plantd.security.keys import Keyring, generate_keypair
from plantd.security.settings import ClientSecurity, client_security
from tests.support.broker import BrokerProcess, broker_env, start_broker
from tests.support.bus import wait_subscribed
from tests.support.processes import clean_env, kill_pid

pytestmark = pytest.mark.timeout(60)

POLICY = """
rules:
  - name: no-secrets-for-vic
    effect: deny
    subject: principal:vic
    service: "@bus.event"
    key: "secret.*"
    access: read
"""


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    home = tmp_path / "home"
    home.mkdir()
    env = broker_env(clean_env(home))  # copies the session keyring into home
    ring = Keyring.at_home(home)
    ring.policy.write_text(POLICY)
    with Registry(ring) as reg:
        reg.add("vic", ["viewer"])
        reg.add("pub", ["service:org.plantd.module.Pub"])
    proc = start_broker(env, home)
    yield proc
    kill_pid(proc.pid)


def key(broker: BrokerProcess, name: str) -> ClientSecurity:
    ring = Keyring.at_home(broker.home)
    return client_security(str(ring.secret_path(name)), {"PLANTD_HOME": str(broker.home)})


async def received(sub: Subscriber, seconds: float) -> list[str]:
    topics: list[str] = []
    deadline = asyncio.get_running_loop().time() + seconds
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        try:
            topic, _ = await sub.recv(timeout=left)
        except TimeoutError:
            break
        topics.append(topic)
    return topics


def test_forbidden_subscriptions_receive_nothing_and_publishing_needs_the_right(
    broker: BrokerProcess,
) -> None:
    front, back = broker.bus("event")

    async def scenario() -> None:
        vic, pub, admin = key(broker, "vic"), key(broker, "pub"), key(broker, "admin")
        everything = Subscriber(back, ("",), security=vic)  # would include secret.*
        secrets = Subscriber(back, ("secret.",), security=vic)
        public = Subscriber(back, ("org.plantd.module.Pub.",), security=vic)
        watcher = Subscriber(back, ("",), security=admin)
        publisher = Publisher(front, security=pub)
        rogue = Publisher(front, security=vic)  # a viewer has no publish right
        try:
            await asyncio.to_thread(wait_subscribed, front, "org.plantd.module.Pub.")
            for i in range(20):
                await publisher.publish("org.plantd.module.Pub.level", {"i": i})
                await admin_publish(front, admin, "secret.recipe", i)
                await rogue.publish("org.plantd.module.Pub.fake", {"i": i})
                await asyncio.sleep(0.02)
            got_public = await received(public, 1.0)
            assert "org.plantd.module.Pub.level" in got_public
            assert "org.plantd.module.Pub.fake" not in got_public  # the viewer's publish
            assert await received(secrets, 0.3) == []
            assert await received(everything, 0.3) == []
            seen = set(await received(watcher, 0.5))
            assert "secret.recipe" in seen and "org.plantd.module.Pub.fake" not in seen
        finally:
            for s in (everything, secrets, public, watcher):
                s.close()
            publisher.close()
            rogue.close()

    asyncio.run(scenario())


_admin_publishers: dict[str, Publisher] = {}


async def admin_publish(front: str, admin: ClientSecurity, topic: str, i: int) -> None:
    pub = _admin_publishers.get(front)
    if pub is None:
        pub = _admin_publishers[front] = Publisher(front, security=admin)
    await pub.publish(topic, {"i": i})


def test_an_unknown_key_gets_nothing_from_a_bus(broker: BrokerProcess) -> None:
    front, back = broker.bus("event")
    admin = key(broker, "admin")
    stranger = ClientSecurity(generate_keypair(), admin.server_public, "test")

    async def scenario() -> None:
        sub = Subscriber(back, ("",), security=stranger)
        witness = Subscriber(back, ("",), security=admin)  # proves the events were there
        pub = Publisher(front, security=admin)
        try:
            await asyncio.to_thread(wait_subscribed, front, "")
            for i in range(10):
                await pub.publish("anything", {"i": i})
                await asyncio.sleep(0.02)
            assert "anything" in await received(witness, 0.5)
            assert await received(sub, 0.3) == []
        finally:
            sub.close()
            witness.close()
            pub.close()

    asyncio.run(scenario())
