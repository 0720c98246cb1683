"""The MMI documents: what the broker encodes, clients decode to the same values."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plantd.broker.core import BrokerCore, BrokerSettings
from plantd.protocol import mmi

names = st.text(min_size=1, max_size=20)
counts = st.integers(min_value=0, max_value=2**40)
seconds = st.floats(min_value=0, max_value=1e9, allow_nan=False)

services = st.builds(
    mmi.ServiceEntry,
    name=names,
    workers=counts,
    idle=counts,
    busy=counts,
    queue=counts,
    requests=counts,
    failed=counts,
)
workers = st.builds(
    mmi.WorkerEntry,
    identity=st.binary(min_size=1, max_size=8).map(bytes.hex),
    service=names,
    state=st.sampled_from(["idle", "busy"]),
    last_heartbeat_s=seconds,
    connected_s=seconds,
    served=counts,
    dialect=st.sampled_from(["mdp01", "mdp02"]),
)


def wire(doc: object) -> object:
    """Through JSON as the broker sends it."""
    return json.loads(json.dumps(doc, separators=(",", ":")))


@given(st.lists(services, max_size=5), st.booleans(), names)
def test_services_page_round_trips(entries: list[mmi.ServiceEntry], more: bool, last: str) -> None:
    doc = {"services": [mmi.encode_service(e) for e in entries], **mmi.encode_page_tail(more, last)}
    page = mmi.decode_services(wire(doc))
    assert page == mmi.ListingPage(entries, more, last if more else None)


@given(st.lists(workers, max_size=5))
def test_workers_page_round_trips(entries: list[mmi.WorkerEntry]) -> None:
    doc = {"workers": [mmi.encode_worker(e) for e in entries], **mmi.encode_page_tail(False, None)}
    assert mmi.decode_workers(wire(doc)).entries == entries


@given(
    st.builds(
        mmi.BrokerStatus,
        version=st.text(max_size=10),
        uptime_s=seconds,
        services=counts,
        workers=counts,
        queued=counts,
        queued_bytes=counts,
        counters=st.dictionaries(st.text(max_size=10), counts, max_size=4),
        settings=st.dictionaries(st.text(max_size=10), st.integers() | st.text(), max_size=4),
    )
)
def test_broker_status_round_trips(status: mmi.BrokerStatus) -> None:
    assert mmi.decode_broker(wire(mmi.encode_broker(status))) == status


def test_the_broker_core_documents_decode() -> None:
    """The pages the broker's routing core really builds decode without loss."""
    core = BrokerCore(BrokerSettings())
    status = mmi.decode_broker(wire(core.broker_info(core.started + 1.5)))
    assert status.uptime_s == 1.5 and status.services == 0
    assert status.counters["requests"] == 0
    assert status.settings["max_message_bytes"] == 1 << 20
    page = mmi.decode_services(json.loads(core.services_page()))
    assert page == mmi.ListingPage([], False, None)
    assert mmi.decode_workers(json.loads(core.workers_page(0.0))).entries == []


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"services": [{"workers": 1}]}, "services[0].name"),
        ({"services": [{"name": "a", "queue": "3"}]}, "services[0].queue"),
        ({"services": {"a": {}}}, "services"),
        ({"services": [], "more": "yes"}, "more"),
        ({"services": [], "more": True, "next": 3}, "next"),
        ([], "reply"),
    ],
)
def test_malformed_services_name_the_field(doc: object, field: str) -> None:
    with pytest.raises(mmi.MalformedDocument) as exc:
        mmi.decode_services(doc)
    assert exc.value.field == field


def test_malformed_broker_and_worker_name_the_field() -> None:
    with pytest.raises(mmi.MalformedDocument) as exc:
        mmi.decode_broker({"version": "1", "uptime_s": 1, "counters": {"x": 1.5}})
    assert exc.value.field == "broker.counters.x"
    with pytest.raises(mmi.MalformedDocument) as exc:
        mmi.decode_workers({"workers": [{"identity": "ab"}]})
    assert exc.value.field == "workers[0].service"


def test_unknown_fields_are_ignored() -> None:
    doc = {"services": [{"name": "a", "workers": 2, "weight": 7}], "more": False, "total": 1}
    assert mmi.decode_services(doc).entries == [mmi.ServiceEntry("a", workers=2)]
