"""Metric samples: producer -> metric bus -> consumer store -> ``latest``/``range`` over MDP."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from plantd.client import Client, Subscriber
from plantd.client.errors import RequestRejected
from plantd.metric import SERVICE
from plantd.metric.daemon import MetricModule, MetricSettings
from plantd.metric.sources import HostSource, SignalSource, parse_signal
from plantd.metric.store import MetricStore, MetricStoreSettings
from tests.support.modules import running_module
from tests.support.polling import wait_until_async

pytestmark = pytest.mark.timeout(30)


async def test_samples_flow_producer_bus_consumer_latest(
    tmp_path: Path,
    loop_broker: str,
    make_bus,  # type: ignore[no-untyped-def]
) -> None:
    bus = make_bus("metric")
    settings = MetricSettings(
        endpoint=loop_broker,
        heartbeat_interval=0.2,
        database=tmp_path / "m.sqlite",
        metric_bus=bus.frontend,
        metric_bus_sub=bus.backend,
        flush_interval=0.02,
        host_interval=0.2,
        device="box",
        signals=["sine period=2 rate=50 amplitude=10 offset=20 channel=temp units=C device=sim"],
    )
    sine = SignalSource(
        "sine",
        device="sim",
        channel="temp",
        period=2.0,
        rate=50.0,
        amplitude=10.0,
        offset=20.0,
        units="C",
    )
    async with running_module(MetricModule(settings), tmp_path) as module:
        assert module.store is not None and module.producer is not None
        store, producer = module.store, module.producer
        async with Client(loop_broker, timeout=5.0) as c:

            async def both_devices() -> bool:
                doc = await c.call(SERVICE, "list", {})
                return {ch["device"] for ch in doc["data"]["channels"]} >= {"sim", "box"}

            await wait_until_async(both_devices, 10)
            (temp,) = (await c.call(SERVICE, "latest", {"device": "sim"}))["data"]["samples"]
            assert temp["channel"] == "temp" and temp["units"] == "C"
            assert temp["tags"] == {"kind": "sine"}
            assert 10.0 <= temp["value"] <= 30.0
            assert temp["value"] == pytest.approx(sine.value(temp["timestamp"]))
            assert time.time() - temp["timestamp"] < 5

            host = await c.call(SERVICE, "latest", {"device": "box", "channel": "cpu.*"})
            channels = {s["channel"] for s in host["data"]["samples"]}
            assert "cpu.percent" in channels
            mem = await c.call(SERVICE, "latest", {"device": "box", "channel": "memory.percent"})
            (m,) = mem["data"]["samples"]
            assert m["units"] == "%" and 0 < m["value"] <= 100

            await wait_until_async(lambda: store.batcher.flushed >= 20, 10)
            since = time.time() - 60
            rng = (
                await c.call(
                    SERVICE,
                    "range",
                    {"device": "sim", "channel": "temp", "since": since, "limit": 5},
                )
            )["data"]
            assert len(rng["samples"]) == 5
            stamps = [s["timestamp"] for s in rng["samples"]]
            assert stamps == sorted(stamps)
            for s in rng["samples"]:
                assert s["value"] == pytest.approx(sine.value(s["timestamp"]))

            with pytest.raises(RequestRejected) as rejected:
                await c.call(SERVICE, "range", {"device": "sim"})
            assert rejected.value.code == "invalid_argument"
            health = await c.call(SERVICE, "health", {})
            assert health["status"] == "pass" and health["ingest"]["stored"] >= 20
    assert producer.errors == 0


async def test_producer_only_instance_publishes_without_registering(
    tmp_path: Path,
    loop_broker: str,
    make_bus,  # type: ignore[no-untyped-def]
) -> None:
    """consume=false: samples go out on the bus, but no worker takes requests it can't answer."""
    bus = make_bus("metric")
    settings = MetricSettings(
        endpoint=loop_broker,
        heartbeat_interval=0.2,
        metric_bus=bus.frontend,
        metric_bus_sub=bus.backend,
        consume=False,
        host_interval=0,
        signals=["ramp period=1 rate=50 channel=level device=edge"],
    )
    sub = Subscriber(bus.backend, ["org.plantd.Metric.edge"])
    try:
        async with running_module(MetricModule(settings), tmp_path) as module:
            assert module.store is None and not (tmp_path / "data").exists()
            topic, sample = await sub.recv(timeout=5)
            assert topic == "org.plantd.Metric.edge" and sample["channel"] == "level"
            async with Client(loop_broker, timeout=5.0) as c:
                assert await c.mmi_service(SERVICE) == "404"
    finally:
        sub.close()


async def test_store_keeps_latest_across_restart_and_trims(tmp_path: Path) -> None:
    settings = MetricStoreSettings(
        path=tmp_path / "m.sqlite", backend=None, max_rows=10, max_age=100.0
    )
    now = time.time()
    async with MetricStore(settings) as store:
        for i in range(30):
            assert store.add(
                {
                    "timestamp": now - 200 + i * 10,
                    "device": "d",
                    "channel": "c",
                    "value": i,
                    "units": "V",
                }
            )
        assert not store.add({"device": "d", "channel": "c", "value": "high"})
        assert not store.add({"device": "d", "channel": "c", "value": True})
        assert not store.add({"device": "", "channel": "c", "value": 1})
        await store.flush()
        # ts = now-200 .. now+90: 10 older than 100 s go by age, then 20 left > 10 rows
        assert await store.apply_retention(now) == 20
    async with MetricStore(settings) as store:
        (latest,) = store.latest_samples()
        assert latest["value"] == 29 and latest["units"] == "V"
        rows = await store.range({"device": "d", "channel": "c"})
        assert [r["value"] for r in rows] == list(range(20, 30))


def test_signal_shapes_and_specs() -> None:
    ramp = parse_signal("ramp period=4 rate=2 amplitude=2 offset=1 channel=level units=m")
    assert (ramp.channel, ramp.units, ramp.rate) == ("level", "m", 2.0)
    assert ramp.value(0.0) == 1.0 and ramp.value(2.0) == 2.0
    sine = SignalSource("sine", period=4.0)
    assert sine.value(1.0) == pytest.approx(1.0) and abs(sine.value(2.0)) < 1e-9
    square = SignalSource("square", period=2.0)
    assert square.value(0.5) == 1.0 and square.value(1.5) == -1.0
    noise = parse_signal("noise seed=3 amplitude=0.5")
    assert all(-0.5 <= noise.value(t) <= 0.5 for t in range(100))
    for bad in ("", "saw", "sine period=0", "sine color=red", "sine period"):
        with pytest.raises(ValueError):
            parse_signal(bad)
    assert not math.isnan(HostSource("h").samples(time.time())[0]["value"])
