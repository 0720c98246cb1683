"""Bearer tokens (plant identity token ...), the per-token rate limit, CORS and the loopback
rule of the proxy, as real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from plantd.identity.tokens import InvalidToken, TokenStore
from plantd.security.keys import Keyring
from tests.support.broker import BrokerProcess
from tests.support.clock import FakeClock
from tests.support.polling import wait_until
from tests.support.ports import free_port
from tests.support.processes import run_plant
from tests.support.proxy import ProxyStack, proxy_env, start_proxy

pytestmark = pytest.mark.timeout(90)


def _stack(broker: BrokerProcess, home: Path, **settings: str) -> ProxyStack:
    proxy, url = start_proxy(broker, home, **settings)
    return ProxyStack(home, broker, proxy, url, [proxy])


def test_token_store_hashes_expires_and_revokes(tmp_path: Path) -> None:
    clock = FakeClock()
    with TokenStore(Keyring(tmp_path / "identity"), clock=clock) as store:
        token, text = store.create("alice", expires_in=60)
        assert store.verify(text).principal == "alice"
        raw = b"".join(p.read_bytes() for p in (tmp_path / "identity").glob("tokens.db*"))
        assert text[len("plantd_") + 13 :].encode() not in raw  # only the hash is stored
        assert (tmp_path / "identity" / "tokens.db").stat().st_mode & 0o077 == 0
        with pytest.raises(InvalidToken, match="not known"):
            store.verify(text[:-1] + ("A" if text[-1] != "A" else "B"))
        with pytest.raises(InvalidToken, match="malformed"):
            store.verify("hello")
        clock.now += 61
        with pytest.raises(InvalidToken, match="expired"):
            store.verify(text)
        assert not store.any_active()
        _, other = store.create("bob")
        assert store.any_active()
        store.revoke(store.verify(other).id)
        with pytest.raises(InvalidToken, match="revoked"):
            store.verify(other)
        assert [t.state(clock()) for t in store.list_tokens()] == ["expired", "revoked"]
        assert token.id in {t.id for t in store.list_tokens("alice")}


def test_tokens_required_once_issued_and_principal_resolved(
    broker: BrokerProcess, plantd_home: Path
) -> None:
    stack = _stack(broker, plantd_home)
    env = stack.env
    assert stack.request("GET", "/v1/broker").status == 200  # no token issued yet: open
    assert run_plant(env, "identity", "token", "create", "nobody").returncode == 4
    out = run_plant(env, "identity", "token", "create", "admin", "--expires", "1d", "-o", "json")
    assert out.returncode == 0, out.stderr
    issued = json.loads(out.stdout)
    assert issued["principal"] == "admin" and issued["state"] == "active"
    bearer = {"Authorization": f"Bearer {issued['token']}"}

    def anonymous_refused() -> bool:
        return stack.request("GET", "/v1/broker").status == 401

    assert wait_until(anonymous_refused, 5)
    r = stack.request("GET", "/v1/broker")
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert r.json()["code"] == "unauthorized" and r.json()["exit_code"] == 5
    assert stack.request("GET", "/v1/broker", headers=bearer).status == 200
    bad = stack.request("GET", "/v1/broker", headers={"Authorization": "Bearer plantd_x"})
    assert bad.status == 401 and "malformed" in bad.json()["detail"]
    basic = stack.request("GET", "/v1/broker", headers={"Authorization": "Basic abc"})
    assert basic.status == 401 and "Bearer" in basic.json()["detail"]
    for public in ("/healthz", "/openapi.json", "/docs", "/metrics"):
        assert stack.request("GET", public).status == 200, public
    listed = json.loads(run_plant(env, "identity", "token", "list", "-o", "json").stdout)
    assert [t["id"] for t in listed] == [issued["id"]] and "token" not in listed[0]
    assert "hash" not in listed[0]
    out = run_plant(env, "identity", "token", "revoke", issued["id"], "-o", "json")
    assert out.returncode == 0 and json.loads(out.stdout)["state"] == "revoked"
    assert wait_until(lambda: stack.request("GET", "/v1/broker", headers=bearer).status == 401, 5)
    assert run_plant(env, "identity", "token", "revoke", "0123456789ab").returncode == 4
    assert run_plant(env, "identity", "token", "revoke", "nope").returncode == 2
    assert (
        run_plant(env, "identity", "token", "create", "admin", "--expires", "soon").returncode == 2
    )


def test_rate_limit_per_token_and_cors_when_configured(
    broker: BrokerProcess, plantd_home: Path
) -> None:
    stack = _stack(
        broker, plantd_home, rate_limit="0.5", rate_burst="3", cors_origins="http://hmi.test"
    )
    statuses = [stack.request("GET", "/v1/broker").status for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    r = stack.request("GET", "/v1/broker")
    assert r.json()["code"] == "rate_limited" and int(r.headers["Retry-After"]) >= 1
    assert stack.request("GET", "/healthz").status == 200  # health is not rate limited
    r = stack.request("GET", "/healthz", headers={"Origin": "http://hmi.test"})
    assert r.headers["Access-Control-Allow-Origin"] == "http://hmi.test"
    r = stack.request("GET", "/healthz", headers={"Origin": "http://evil.test"})
    assert "Access-Control-Allow-Origin" not in r.headers
    pre = stack.request(
        "OPTIONS",
        "/v1/state/scopes/s/keys/k",
        headers={"Origin": "http://hmi.test", "Access-Control-Request-Method": "PUT"},
    )
    assert pre.status == 204 and "If-Match" in pre.headers["Access-Control-Allow-Headers"]


@pytest.mark.parametrize("listen", ["0.0.0.0:{port}", "192.0.2.1:{port}", "nonsense"])
def test_refuses_a_non_loopback_listen_address(
    broker: BrokerProcess, plantd_home: Path, listen: str
) -> None:
    env = proxy_env(broker)
    env["PLANTD_PROXY_LISTEN"] = listen.format(port=free_port())
    proc = subprocess.run(
        [sys.executable, "-m", "plantd.daemons.run", "proxy"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    refusal = [line for line in proc.stderr.splitlines() if "PLANTD_PROXY_LISTEN" in line]
    assert len(refusal) == 1
    if listen != "nonsense":
        assert "loopback only until identity enforcement" in refusal[0]
