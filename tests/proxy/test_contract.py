"""Contract of every proxy endpoint against a real stack (broker, state, logger, metric)."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse

import pytest

from plantd.logbus import LogBusHandler
from tests.support.modules import bus_logger
from tests.support.polling import wait_until
from tests.support.processes import run_plant
from tests.support.proxy import HttpReply, ProxyStack, SseReader

pytestmark = pytest.mark.timeout(90)


def problem(reply: HttpReply, status: int, code: str) -> dict:
    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"].startswith("application/problem+json")
    doc = reply.json()
    assert doc["status"] == status and doc["code"] == code, doc
    assert doc["type"] == f"urn:plantd:problem:{code}" and doc["title"] and doc["detail"]
    assert "Traceback" not in doc["detail"]
    return doc


def test_broker_endpoints(stack: ProxyStack) -> None:
    services = stack.request("GET", "/v1/services").json()["services"]
    assert {"org.plantd.State", "org.plantd.Logger"} <= {s["name"] for s in services}
    workers = stack.request("GET", "/v1/workers").json()["workers"]
    assert sum(w["service"] == "org.plantd.State" for w in workers) == 4
    assert stack.request("GET", "/v1/broker").json()["workers"] >= 6


def test_call_any_operation_and_streamed_partials(stack: ProxyStack) -> None:
    r = stack.request("POST", "/v1/services/org.plantd.State/health", {})
    assert r.status == 200 and r.json()["success"] is True
    assert r.json()["data"]["service"] == "org.plantd.State"
    for i in range(5):
        stack.request("PUT", f"/v1/state/scopes/stream/keys/k{i}", i)
    r = stack.request(
        "POST", "/v1/services/org.plantd.State/list-keys",
        {"service": "stream", "stream": True, "limit": 2},
    )  # fmt: skip
    assert r.status == 200 and r.headers["Content-Type"].startswith("application/x-ndjson")
    parts = [json.loads(line) for line in r.body.decode().splitlines()]
    assert [len(p["data"]["keys"]) for p in parts] == [2, 2, 1]
    assert [p["data"]["more"] for p in parts] == [True, True, False]
    # a refusal of the service is a problem with its code
    doc = problem(stack.request("POST", "/v1/services/org.plantd.State/state-get",
                                {"service": "stream"}), 400, "invalid_argument")  # fmt: skip
    assert doc["field"] == "key" and doc["exit_code"] == 2


def test_errors_are_precise_problems(stack: ProxyStack, peer) -> None:  # type: ignore[no-untyped-def]
    doc = problem(stack.request("POST", "/v1/services/org.plantd.State/health", raw=b"{nope"),
                  400, "invalid_json")  # fmt: skip
    assert "invalid JSON" in doc["detail"]
    doc = problem(
        stack.request("POST", "/v1/services/org.plantd.Nope/x", {}), 404, "unknown_service"
    )
    assert doc["exit_code"] == 8 and "org.plantd.Nope" in doc["detail"]
    big = b'"' + b"x" * (1024 * 1024 + 10) + b'"'
    doc = problem(
        stack.request("PUT", "/v1/state/scopes/s/keys/big", raw=big), 413, "body_too_large"
    )
    assert "1048576 bytes" in doc["detail"]
    doc = problem(stack.request("GET", "/v1/state/scopes?limit=abc"), 400, "invalid_argument")
    assert doc["field"] == "limit" and "expected integer" in doc["detail"]
    doc = problem(stack.request("GET", "/v1/state/scopes?limit=100000"), 400, "invalid_argument")
    assert doc["field"] == "limit"
    problem(stack.request("GET", "/v1/nothing"), 404, "no_such_endpoint")
    problem(stack.request("PATCH", "/v1/state/txn", {}), 405, "method_not_allowed")
    # timeout: a worker that sleeps longer than the request may wait
    peer("plantd-worker", stack.broker.endpoint, "test.Sleepy")
    wait_until(
        lambda: (
            stack.request("POST", "/v1/services/test.Sleepy/sleep", {"seconds": 0}).status == 200
        ),
        15,
    )
    doc = problem(stack.request("POST", "/v1/services/test.Sleepy/sleep?timeout=0.2", {"seconds": 1.5}),
                  504, "timeout")  # fmt: skip
    assert doc["exit_code"] == 7 and "within 0.2s" in doc["detail"]
    # the proxy keeps serving
    assert stack.request("GET", "/v1/broker").status == 200


def test_state_keys_etags_and_preconditions(stack: ProxyStack) -> None:
    base = "/v1/state/scopes/plc1/keys/sp"
    created = stack.request("PUT", base, {"t": 21.5})
    assert created.status == 201
    rev = created.json()["mod_revision"]
    assert created.headers["ETag"] == f'"{rev}"'
    got = stack.request("GET", base)
    assert got.status == 200 and got.json()["value"] == {"t": 21.5}
    assert got.headers["ETag"] == f'"{rev}"'
    # compare-and-set: the right revision wins, a stale one is 412 with the current revision
    upd = stack.request("PUT", base, 22, headers={"If-Match": f'"{rev}"'})
    assert upd.status == 200 and upd.json()["version"] == 2
    new = upd.json()["mod_revision"]
    doc = problem(stack.request("PUT", base, 23, headers={"If-Match": f'"{rev}"'}), 412, "conflict")
    assert doc["current_revision"] == new and doc["exit_code"] == 6
    # create only
    problem(stack.request("PUT", base, 1, headers={"If-None-Match": "*"}), 412, "conflict")
    assert stack.request("PUT", "/v1/state/scopes/plc1/keys/fresh", 1,
                         headers={"If-None-Match": "*"}).status == 201  # fmt: skip
    problem(stack.request("PUT", base, 1, headers={"If-Match": "abc"}), 400, "invalid_argument")
    # ttl
    assert stack.request("PUT", "/v1/state/scopes/plc1/keys/tmp?ttl=30", 1).json()["version"] == 1
    assert stack.request("GET", "/v1/state/scopes/plc1/keys/tmp").json()["expires"] is not None
    # delete, with a stale If-Match first
    problem(stack.request("DELETE", base, headers={"If-Match": f'"{rev}"'}), 412, "conflict")
    assert stack.request("DELETE", base, headers={"If-Match": f'"{new}"'}).status == 200
    doc = problem(stack.request("GET", base), 404, "not_found")
    assert doc["exit_code"] == 4
    problem(stack.request("DELETE", base), 404, "not_found")
    # keys with characters that need escaping in a path
    odd = urllib.parse.quote("a b/c?d", safe="")
    assert stack.request("PUT", f"/v1/state/scopes/plc1/keys/{odd}", "v").status == 201
    assert stack.request("GET", f"/v1/state/scopes/plc1/keys/{odd}").json()["key"] == "a b/c?d"


def test_state_listings_page_and_txn(stack: ProxyStack) -> None:
    for i in range(5):
        stack.request("PUT", f"/v1/state/scopes/paged/keys/k{i}", i)
    seen, after = [], None
    for _ in range(10):
        q = "limit=2" + (f"&after={after}" if after else "")
        page = stack.request("GET", f"/v1/state/scopes/paged/keys?{q}").json()
        seen += [k["key"] for k in page["keys"]]
        if not page["more"]:
            assert page["next"] is None
            break
        after = page["next"]
    assert seen == [f"k{i}" for i in range(5)]
    names = stack.request("GET", "/v1/state/scopes/paged/keys?values=false&prefix=k1").json()[
        "keys"
    ]
    assert [k["key"] for k in names] == ["k1"] and "value" not in names[0]
    scopes = stack.request("GET", "/v1/state/scopes?prefix=pag").json()
    assert scopes["scopes"] == ["paged"] and scopes["more"] is False
    r = stack.request("POST", "/v1/state/txn", {"scope": "paged", "ops": [
        {"op": "set", "key": "t1", "value": 1}, {"op": "delete", "key": "k0"}]})  # fmt: skip
    assert r.status == 200 and len(r.json()["results"]) == 2
    doc = problem(stack.request("POST", "/v1/state/txn", {"scope": "paged", "ops": [
        {"op": "check", "key": "t1", "prev_revision": 1}]}), 409, "conflict")  # fmt: skip
    assert doc["index"] == 0
    problem(stack.request("POST", "/v1/state/txn", [1]), 400, "invalid_argument")
    assert stack.request("DELETE", "/v1/state/scopes/paged").json()["deleted_keys"] == 5
    problem(stack.request("GET", "/v1/state/scopes/paged/keys"), 404, "not_found")


def test_if_match_race_two_writers_one_412_nothing_lost(stack: ProxyStack) -> None:
    url = "/v1/state/scopes/race/keys/counter"
    rev = stack.request("PUT", url, []).json()["mod_revision"]
    barrier = threading.Barrier(2)
    replies: dict[str, HttpReply] = {}

    def write(name: str) -> None:
        barrier.wait(5)
        replies[name] = stack.request("PUT", url, [name], headers={"If-Match": f'"{rev}"'})

    threads = [threading.Thread(target=write, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    statuses = sorted(r.status for r in replies.values())
    assert statuses == [200, 412], {n: r.body for n, r in replies.items()}
    (loser,) = [n for n, r in replies.items() if r.status == 412]
    (winner,) = [n for n, r in replies.items() if r.status == 200]
    current = replies[loser].json()["current_revision"]
    assert current == replies[winner].json()["mod_revision"]
    # the loser re-reads and retries at the current revision: both writes are kept
    value = stack.request("GET", url).json()["value"]
    assert (
        stack.request("PUT", url, [*value, loser], headers={"If-Match": f'"{current}"'}).status
        == 200
    )
    assert stack.request("GET", url).json()["value"] == [winner, loser]


def test_watch_sse_resumes_with_last_event_id_every_revision_once(stack: ProxyStack) -> None:
    stack.request("PUT", "/v1/state/scopes/w/keys/init", 0)  # the scope exists before
    start = stack.request("PUT", "/v1/state/scopes/w/keys/k", 0).json()["revision"]
    revisions = [start]
    reader = SseReader(stack.url, f"/v1/state/watch?scope=w&since={start - 1}", stack.auth)
    assert reader.status == 200 and reader.response.getheader("Content-Type") == "text/event-stream"
    for i in range(1, 4):
        revisions.append(stack.request("PUT", "/v1/state/scopes/w/keys/k", i).json()["revision"])
    first = reader.take(3)
    reader.close()  # disconnect after three of the four
    assert [e.event for e in first] == ["set"] * 3
    for i in range(4, 8):  # written while nobody watches
        revisions.append(stack.request("PUT", "/v1/state/scopes/w/keys/k", i).json()["revision"])
    again = SseReader(
        stack.url,
        "/v1/state/watch?scope=w",
        headers={**stack.auth, "Last-Event-ID": first[-1].id or ""},
    )
    second = again.take(len(revisions) - 3)
    revisions.append(stack.request("PUT", "/v1/state/scopes/w/keys/k", 8).json()["revision"])
    second += again.take(1)
    again.close()
    got = [int(e.id or 0) for e in first + second]
    assert got == revisions  # every revision, once, in order
    assert [e.data["value"] for e in first + second] == list(range(9))
    problem(
        stack.request("GET", "/v1/state/watch", headers={"Last-Event-ID": "x"}),
        400,
        "invalid_argument",
    )


def test_logs_query_pages_and_tail(stack: ProxyStack) -> None:
    page = stack.request("GET", "/v1/logs?limit=2&service=org.plantd.*").json()
    assert len(page["records"]) == 2 and page["more"] is True
    nxt = stack.request("GET", "/v1/logs?limit=2&service=org.plantd.*&after="
                        + urllib.parse.quote(json.dumps(page["next"]))).json()  # fmt: skip
    assert {r["id"] for r in nxt["records"]}.isdisjoint({r["id"] for r in page["records"]})
    problem(stack.request("GET", "/v1/logs?after=nope"), 400, "invalid_argument")
    problem(stack.request("GET", "/v1/logs?level=loud"), 400, "invalid_argument")
    reader = SseReader(stack.url, "/v1/logs/tail?lines=2", stack.auth)
    backlog = reader.take(2)
    assert all(e.event == "record" for e in backlog)
    ids = [json.loads(e.id or "[]")[1] for e in backlog]
    assert ids == sorted(ids)
    reader.close()
    resumed = SseReader(
        stack.url, "/v1/logs/tail", headers={**stack.auth, "Last-Event-ID": backlog[0].id or ""}
    )
    (nxt_event,) = resumed.take(1)
    resumed.close()
    assert nxt_event.id == backlog[1].id
    # a record published now reaches a tail that starts at "now"
    live = SseReader(stack.url, "/v1/logs/tail?lines=0&service=test.Tail", stack.auth)
    handler = LogBusHandler("test.Tail", stack.broker.bus("log")[0])
    log = bus_logger("test.tail", handler)
    done = threading.Event()

    def publish() -> None:  # PUB/SUB joins late: publish until the tail has one
        for i in range(300):
            if done.wait(0.05):
                return
            log.info("tail line %d", i)

    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        (event,) = live.take(1)
        assert event.data["service"] == "test.Tail" and event.data["msg"].startswith("tail line")
    finally:
        done.set()
        publisher.join(5)
        handler.close()
        live.close()


def test_metric_endpoints(stack: ProxyStack) -> None:
    assert wait_until(
        lambda: stack.request("GET", "/v1/metric/latest?device=sim").json()["samples"], 20
    )
    channels = stack.request("GET", "/v1/metric/channels").json()["channels"]
    assert ("sim", "temp") in {(c["device"], c["channel"]) for c in channels}
    r = stack.request("GET", "/v1/metric/range?device=sim&channel=temp&limit=3").json()
    assert 1 <= len(r["samples"]) <= 3 and "more" in r
    problem(stack.request("GET", "/v1/metric/range?device=sim"), 400, "invalid_argument")


def test_health_metrics_openapi_docs(stack: ProxyStack) -> None:
    health = stack.request("GET", "/healthz")
    assert health.status == 200 and health.json()["status"] == "pass"
    assert "proxy:broker" in health.json()["checks"]
    metrics = stack.request("GET", "/metrics").body.decode()
    assert re.search(
        r'plantd_proxy_requests_total\{method="GET",route="/healthz",status="200"\}', metrics
    )
    doc = stack.request("GET", "/openapi.json").json()
    assert doc["openapi"] == "3.1.0"
    assert {"/v1/state/scopes/{scope}/keys/{key}", "/v1/state/watch", "/v1/logs/tail",
            "/v1/services/{service}/{operation}", "/v1/metric/range"} <= set(doc["paths"])  # fmt: skip
    put = doc["paths"]["/v1/state/scopes/{scope}/keys/{key}"]["put"]
    assert {"If-Match", "If-None-Match"} <= {p["name"] for p in put["parameters"]}
    assert "application/problem+json" in put["responses"]["default"]["content"]
    page = stack.request("GET", "/docs")
    assert page.status == 200 and b"/openapi.json" in page.body
    assert not re.search(rb"(src|href)=[\"']https?://", page.body)  # nothing from outside
    # the lifecycle's health port and the daemon list agree
    out = run_plant(stack.env, "daemon", "status", "proxy", "-o", "json")
    assert out.returncode == 0, out.stderr
    assert stack.url in out.stdout


def test_cors_off_by_default(stack: ProxyStack) -> None:
    r = stack.request("GET", "/v1/broker", headers={"Origin": "http://example.test"})
    assert r.status == 200 and "Access-Control-Allow-Origin" not in r.headers
    time.sleep(0)
