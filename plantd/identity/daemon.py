"""The identity daemon ``org.plantd.Identity``: the registry, policy and audit trail served
over MDP (a module on the SDK; the operations live in :mod:`plantd.identity.service`).

It writes the registry and appends to the audit trail of this host's keyring
(``$PLANTD_HOME/identity``); its own audit rows go out on the event bus
(``audit.org.plantd.Identity``) with the chain head (``audit.head``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from plantd.identity.audit import DEFAULT_RETENTION
from plantd.identity.auditwriter import AuditWriter
from plantd.identity.authority import Authority
from plantd.identity.guard import Guard
from plantd.identity.service import SERVICE, IdentityService
from plantd.module import Module, ModuleSettings, every, operation
from plantd.security.keys import Keyring
from plantd.security.settings import security_enabled
from plantd.vocabulary import HEALTH_PORTS

#: how often the policy file is looked at for hand edits (seconds; a ``stat`` each)
POLICY_WATCH_INTERVAL = 0.5


@dataclass
class IdentitySettings(ModuleSettings):
    """``PLANTD_IDENTITY_*``."""

    health_port: int = HEALTH_PORTS["identity"]
    #: audit rows older than this are pruned (seconds; default one year)
    audit_retention: float = DEFAULT_RETENTION
    #: the audit chain head is published on the event bus this often (seconds)
    audit_head_interval: float = 10.0


class IdentityModule(Module[IdentitySettings]):
    name = "identity"
    service = SERVICE
    settings_class = IdentitySettings
    description = "plantd identity: principals, policy and the audit trail"

    authority: Authority
    audit: AuditWriter
    identity: IdentityService

    async def setup(self) -> None:
        assert self.ctx is not None
        s = self.settings
        ring = Keyring.at_home(self.ctx.home.root)
        secure = security_enabled()
        self.authority = Authority(ring)
        self.audit = await AuditWriter.open(
            ring.audit,
            service=SERVICE,
            publish=lambda topic, doc: self.publish("event", topic, doc),
            retention=s.audit_retention,
            head_interval=s.audit_head_interval,
        )
        guard = Guard(self.authority, service=SERVICE, secure=secure)
        self.identity = IdentityService(ring, guard, self.audit)
        self.ctx.add_check("identity:audit", self._audit_check)
        self.log.info("identity serving %s (security %s)", ring.root, "on" if secure else "off")

    # the operations: each hands the request to the service (authorized, audited there)
    async def _call(self, name: str, doc: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.identity.operations()[name](doc)
        return result

    @operation("whoami")
    async def whoami(self, doc: Any) -> dict[str, Any]:
        return await self._call("whoami", doc)

    @operation("list")
    async def list_(self, doc: Any) -> dict[str, Any]:
        return await self._call("list", doc)

    @operation("show")
    async def show(self, doc: Any) -> dict[str, Any]:
        return await self._call("show", doc)

    @operation("pending")
    async def pending(self, doc: Any) -> dict[str, Any]:
        return await self._call("pending", doc)

    @operation("add")
    async def add(self, doc: Any) -> dict[str, Any]:
        return await self._call("add", doc)

    @operation("revoke")
    async def revoke(self, doc: Any) -> dict[str, Any]:
        return await self._call("revoke", doc)

    @operation("rotate")
    async def rotate(self, doc: Any) -> dict[str, Any]:
        return await self._call("rotate", doc)

    @operation("accept")
    async def accept(self, doc: Any) -> dict[str, Any]:
        return await self._call("accept", doc)

    @operation("reject")
    async def reject(self, doc: Any) -> dict[str, Any]:
        return await self._call("reject", doc)

    @operation("policy-get")
    async def policy_get(self, doc: Any) -> dict[str, Any]:
        return await self._call("policy-get", doc)

    @operation("policy-check")
    async def policy_check(self, doc: Any) -> dict[str, Any]:
        return await self._call("policy-check", doc)

    @operation("policy-set")
    async def policy_set(self, doc: Any) -> dict[str, Any]:
        return await self._call("policy-set", doc)

    @operation("policy-reload")
    async def policy_reload(self, doc: Any) -> dict[str, Any]:
        return await self._call("policy-reload", doc)

    @operation("audit-verify")
    async def audit_verify(self, doc: Any) -> dict[str, Any]:
        return await self._call("audit-verify", doc)

    @operation("audit-list")
    async def audit_list(self, doc: Any) -> AsyncIterator[dict[str, Any]]:
        """One page; with ``stream: true`` every page as a PARTIAL reply."""
        async for page in self.identity.audit_list(doc):
            yield page

    @every(POLICY_WATCH_INTERVAL)
    async def watch_policy(self) -> None:
        """A hand edit of the policy file lands in the audit trail within this interval."""
        await self.identity.watch_policy()

    async def teardown(self) -> None:
        await self.audit.close()
        self.authority.close()

    def health(self) -> dict[str, Any]:
        return {
            "requests": self.identity.requests,
            "denied": self.identity.denied,
            "audit": self.audit.head_doc(),
            "policy_error": self.authority.policy_error,
        }

    def _audit_check(self) -> tuple[str, dict[str, Any]]:
        problem = self.audit.last_error or self.authority.policy_error
        if problem:
            return "warn", {"output": problem}
        return "pass", {"observedValue": self.audit.head.seq, "observedUnit": "audit seq"}

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        yield CounterMetricFamily(
            "plantd_identity_requests", "Identity requests served", value=self.identity.requests
        )
        yield CounterMetricFamily(
            "plantd_identity_denied", "Identity requests refused", value=self.identity.denied
        )
        yield GaugeMetricFamily(
            "plantd_identity_audit_seq", "Last audit row written", value=self.audit.head.seq
        )


DAEMON = IdentityModule
