"""A subscriber that stops reading: memory stays bounded, loss is visible, it resyncs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil
import pytest
import zmq

from plantd.security.settings import default_client
from tests.support.broker import broker_env, start_broker
from tests.support.processes import kill_pid

pytestmark = pytest.mark.timeout(120)


def test_stalled_subscriber_bounded_memory_visible_loss_and_resync(
    plantd_home: Path, plantd_env: dict[str, str]
) -> None:
    broker = start_broker(broker_env(plantd_env), plantd_home)
    try:
        front, back = broker.bus("log")
        ctx = zmq.Context.instance()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 1000)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        default_client().apply(sub)
        sub.connect(back)
        pub = ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.setsockopt(zmq.SNDHWM, 1000)
        default_client().apply(pub)
        pub.connect(front)
        payload = "x" * 400
        seq = 0

        def publish(n: int) -> int:
            nonlocal seq
            dropped = 0
            for _ in range(n):
                seq += 1
                doc = json.dumps({"seq": seq, "msg": payload}).encode()
                try:
                    pub.send_multipart([b"svc.info", doc], zmq.NOBLOCK)
                except zmq.Again:
                    dropped += 1
            return dropped

        # join: publish until the subscription has propagated (bounded)
        for _ in range(200):
            publish(1)
            if sub.poll(20):
                break
        else:
            pytest.fail("subscription never propagated")
        while sub.poll(100):
            sub.recv_multipart()

        proc = psutil.Process(broker.pid)
        rss0 = proc.memory_info().rss
        sent_from = seq + 1
        for _ in range(20):  # 200,000 x ~420 B = 84 MB offered while the subscriber sleeps
            publish(10_000)
            time.sleep(0.01)
        time.sleep(0.5)
        rss1 = proc.memory_info().rss
        sent_to = seq
        assert rss1 - rss0 < 40e6, f"broker grew {(rss1 - rss0) / 1e6:.1f} MB"

        # the subscriber reads again: it gets a bounded backlog, and seq shows the gap
        seen: list[int] = []
        while sub.poll(300):
            seen.append(json.loads(sub.recv_multipart()[1])["seq"])
        received = [s for s in seen if s >= sent_from]
        missed = (sent_to - sent_from + 1) - len(received)
        assert received, "nothing got through"
        assert missed > 0, "no loss despite a stalled subscriber: HWMs not in effect?"
        assert len(received) < 40_000  # bounded by the high-water marks, not by what was sent
        assert received == sorted(received)  # order kept; loss shows as gaps in seq

        # resync: new messages arrive again, in order, right after the gap
        before = seq
        for _ in range(100):
            publish(1)
            time.sleep(0.002)
        fresh: list[int] = []
        while sub.poll(500):
            fresh.append(json.loads(sub.recv_multipart()[1])["seq"])
        assert fresh and fresh[-1] == seq and all(s > before for s in fresh)
        print(
            f"SLOW_CONSUMER sent={sent_to - sent_from + 1} received={len(received)} "
            f"missed={missed} broker_rss_growth_mb={(rss1 - rss0) / 1e6:.1f}"
        )
        sub.close()
        pub.close()
    finally:
        kill_pid(broker.pid)
