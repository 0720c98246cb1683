"""The authorization policy: built-in roles plus rules, deny wins. Pure: no I/O, no clock.

A request is ``(principal, roles, service, operation, scope, key, access)``. A rule matches
it when its subject names the principal, one of its (expanded) roles, or ``*`` (any
authenticated principal), and its service/operation/scope/key globs match (fnmatch, case
sensitive; a request without a scope or key matches them as ""). Access levels are ordered
read < write < admin: an *allow* at level L allows requests up to L, a *deny* at level L
denies requests from L up (so "deny write" still lets reads through). Any matching deny
wins; otherwise the first matching allow decides; otherwise the default rule denies. The
decision names the rule, so a denial can say which rule refused it.

:func:`access_of` classifies operations (the one table: :data:`OPERATION_ACCESS`); unknown
operations of a service count as writes (fail closed: a viewer cannot call them).

Policy file (YAML or JSON, ``identity/policy.yaml``), parsed by :func:`parse_policy`::

    roles:
      shift-lead: {inherits: [operator]}
    rules:
      - name: recipes-frozen          # unique; shown in denials
        effect: deny                  # allow | deny
        subject: role:operator        # role:R | principal:NAME | "*"
        service: org.plantd.State     # globs below default to "*"
        operation: "*"
        scope: "recipes.*"
        except_scope: []              # scopes this rule does not cover
        key: "*"
        access: write                 # read | write | admin
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from fnmatch import fnmatchcase
from typing import Any

from plantd.security.errors import InvalidArgument
from plantd.vocabulary import METRIC_SERVICE, METRIC_TOPIC_PREFIX


class Access(IntEnum):
    read = 1
    write = 2
    admin = 3


STATE_SERVICE = "org.plantd.State"
IDENTITY_SERVICE = "org.plantd.Identity"
#: configuration scopes: writable by engineer, not by operator
CONFIG_SCOPES = ("plantd.*",)
#: the pseudo-operations the broker and the buses check (not MDP operations)
REGISTER_OPERATION = "@ready"  # a worker's READY for service S: (S, "@ready", admin)
PUBLISH_OPERATION = "@publish"  # a publish on bus B: ("@bus.B", "@publish", key=topic, write)
SUBSCRIBE_OPERATION = "@subscribe"  # a subscription: ("@bus.B", "@subscribe", key=topic, read)
BUS_SERVICE_PREFIX = "@bus."
ACT_AS_OPERATION = "@act-as"  # send requests for another principal: ("@broker", "@act-as", admin)
BROKER_PSEUDO_SERVICE = "@broker"
PROXY_SERVICE = "org.plantd.Proxy"
PSEUDO_ACCESS = {
    ACT_AS_OPERATION: Access.admin,
    REGISTER_OPERATION: Access.admin,
    PUBLISH_OPERATION: Access.write,
    SUBSCRIBE_OPERATION: Access.read,
}
#: what the viewer/operator/engineer rules match: real operations, not the "@" ones
_REAL_OPERATIONS = "[!@]*"
BUILTIN_ROLES = ("viewer", "operator", "engineer", "admin")
_NAME = r"[a-z][a-z0-9._-]{0,63}"
#: a service name as the broker accepts it (``org.plantd.State``: capitals allowed)
_SERVICE = r"[A-Za-z][A-Za-z0-9._-]{0,127}"
_ROLE_RE = re.compile(rf"service:{_SERVICE}|{_NAME}")

#: how each known operation counts. org.plantd.State's writes are exactly
#: plantd.state.service.WRITE_OPERATIONS (a test keeps them equal).
OPERATION_ACCESS: Mapping[str, Mapping[str, Access]] = {
    STATE_SERVICE: {
        **dict.fromkeys(
            ("list-scopes", "list-keys", "state-get", "get", "watch", "export", "health"),
            Access.read,
        ),
        **dict.fromkeys(
            ("create-scope", "delete-scope", "state-set", "set", "delete", "txn", "import"),
            Access.write,
        ),
        "backup": Access.admin,  # writes a file on the state daemon's host
    },
    "org.plantd.Logger": {"query": Access.read, "stats": Access.read},
    "org.plantd.module.Metric": dict.fromkeys(("list", "latest", "range"), Access.read),
    IDENTITY_SERVICE: {
        **dict.fromkeys(("list", "show", "pending", "whoami", "audit-list"), Access.read),
        **dict.fromkeys(
            ("add", "revoke", "rotate", "accept", "reject", "policy-set", "audit-verify"),
            Access.admin,
        ),
    },
}


def access_of(service: str, operation: str) -> Access:
    """Read, write or admin for ``operation`` of ``service``: MMI is a read, an unknown
    operation a write."""
    if service.startswith("mmi."):
        return Access.read
    if operation in PSEUDO_ACCESS:
        return PSEUDO_ACCESS[operation]
    return OPERATION_ACCESS.get(service, {}).get(operation, Access.write)


def validate_role(role: str) -> str:
    """``role`` if it is a syntactically valid role name (built-in, ``service:<name>`` or a
    policy-defined name); the policy says whether a custom role grants anything."""
    if not _ROLE_RE.fullmatch(role):
        raise InvalidArgument(
            f"role: {role!r} is not a role name (viewer, operator, engineer, admin,"
            " service:<name>, or a lower-case name defined in the policy)",
            "role",
        )
    return role


_WILDCARDS = re.compile(r"[*?\[]")


def _glob_may_match_prefix(glob: str, prefix: str) -> bool:
    """Whether ``glob`` might match some string starting with ``prefix`` (may say yes
    wrongly, never no wrongly)."""
    wild = _WILDCARDS.search(glob)
    if wild is None:
        return glob.startswith(prefix)
    literal = glob[: wild.start()]
    return literal.startswith(prefix) or prefix.startswith(literal)


def _glob_covers_prefix(glob: str, prefix: str) -> bool:
    """Whether ``glob`` matches every string starting with ``prefix`` (may say no wrongly,
    never yes wrongly): ``*``, or ``LITERAL*`` with ``prefix`` starting with LITERAL."""
    if not glob.endswith("*"):
        return False
    literal = glob[:-1]
    return _WILDCARDS.search(literal) is None and prefix.startswith(literal)


@dataclass(frozen=True)
class Rule:
    name: str
    effect: str  # "allow" | "deny"
    subject: str  # "role:R" | "principal:NAME" | "*"
    access: Access
    service: str = "*"
    operation: str = "*"
    scope: str = "*"
    key: str = "*"
    except_scope: tuple[str, ...] = ()

    def matches(
        self,
        subjects: frozenset[str],
        service: str,
        operation: str,
        scope: str,
        key: str,
        key_prefix: bool = False,
    ) -> bool:
        """Whether the rule applies. With ``key_prefix`` the key stands for every key that
        starts with it (a bus subscription): a deny applies when its key glob might match
        one of them, an allow only when it surely matches all of them (fail closed)."""
        if key_prefix:
            key_ok = (
                _glob_may_match_prefix(self.key, key)
                if self.effect == "deny"
                else _glob_covers_prefix(self.key, key)
            )
        else:
            key_ok = fnmatchcase(key, self.key)
        return (
            (self.subject == "*" or self.subject in subjects)
            and fnmatchcase(service, self.service)
            and fnmatchcase(operation, self.operation)
            and fnmatchcase(scope, self.scope)
            and not any(fnmatchcase(scope, g) for g in self.except_scope)
            and key_ok
        )

    def covers(self, access: Access) -> bool:
        return access <= self.access if self.effect == "allow" else access >= self.access


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: str  # the rule that decided; DEFAULT_RULE when none matched

    def __bool__(self) -> bool:
        return self.allowed


DEFAULT_RULE = "default-deny"


def _allow(name: str, subject: str, access: Access, **globs: Any) -> Rule:
    return Rule(name=name, effect="allow", subject=subject, access=access, **globs)


#: the rules of the built-in roles (in this order, before the policy file's rules)
BUILTIN_RULES: tuple[Rule, ...] = (
    _allow("builtin:mmi", "*", Access.read, service="mmi.*"),
    # read level: covers get/list/watch, MMI and bus subscriptions, never a write
    _allow("builtin:viewer-read", "role:viewer", Access.read),
    _allow(
        "builtin:operator-state",
        "role:operator",
        Access.write,
        service=STATE_SERVICE,
        operation=_REAL_OPERATIONS,
        except_scope=CONFIG_SCOPES,
    ),
    _allow(
        "builtin:operator-modules",
        "role:operator",
        Access.write,
        service="org.plantd.module.*",
        operation=_REAL_OPERATIONS,
    ),
    *(
        _allow(
            "builtin:engineer-config",
            "role:engineer",
            Access.write,
            service=STATE_SERVICE,
            operation=_REAL_OPERATIONS,
            scope=g,
        )
        for g in CONFIG_SCOPES
    ),
    _allow("builtin:admin", "role:admin", Access.admin),
    # the HTTP proxy acts for the principal its API token names (the broker then decides as
    # that principal); nobody else but admin may
    _allow(
        "builtin:proxy-act-as",
        f"role:service:{PROXY_SERVICE}",
        Access.admin,
        service=BROKER_PSEUDO_SERVICE,
        operation=ACT_AS_OPERATION,
    ),
    # topics not named after their service: the state daemon publishes each scope's changes
    # (topic = scope), the metric module its samples (org.plantd.Metric.<device>)
    _allow(
        "builtin:state-bus",
        f"role:service:{STATE_SERVICE}",
        Access.write,
        service=BUS_SERVICE_PREFIX + "state",
        operation=PUBLISH_OPERATION,
    ),
    _allow(
        "builtin:metric-bus",
        f"role:service:{METRIC_SERVICE}",
        Access.write,
        service=BUS_SERVICE_PREFIX + "metric",
        operation=PUBLISH_OPERATION,
        key=METRIC_TOPIC_PREFIX + "*",
    ),
)
#: role -> the roles it includes
BUILTIN_INHERITS: Mapping[str, tuple[str, ...]] = {
    "viewer": (),
    "operator": ("viewer",),
    "engineer": ("operator",),
    "admin": ("engineer",),
}


def service_rules(name: str) -> tuple[Rule, ...]:
    """What ``service:<name>`` grants: register as worker ``name``, publish topics under
    ``name`` on every bus, and read like a viewer (inherited)."""
    subject = f"role:service:{name}"
    return (
        _allow(
            f"builtin:service:{name}:register",
            subject,
            Access.admin,
            service=name,
            operation=REGISTER_OPERATION,
        ),
        _allow(
            f"builtin:service:{name}:publish",
            subject,
            Access.write,
            service=BUS_SERVICE_PREFIX + "*",
            operation=PUBLISH_OPERATION,
            key=f"{name}*",
        ),
    )


@dataclass(frozen=True)
class Policy:
    """Built-in roles plus ``rules`` and ``inherits`` from a policy file."""

    rules: tuple[Rule, ...] = ()
    inherits: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def with_rules(self, *rules: Rule) -> Policy:
        return Policy(self.rules + rules, self.inherits)

    def expand_roles(self, roles: Iterable[str]) -> frozenset[str]:
        """The roles and every role they include (``service:*`` includes viewer)."""
        table = {**BUILTIN_INHERITS, **self.inherits}
        seen: set[str] = set()
        todo = list(roles)
        while todo:
            role = todo.pop()
            if role in seen:
                continue
            seen.add(role)
            todo.extend(table.get(role, ("viewer",) if role.startswith("service:") else ()))
        return frozenset(seen)

    def decide(
        self,
        principal: str,
        roles: Iterable[str],
        service: str,
        operation: str,
        scope: str | None = None,
        key: str | None = None,
        access: Access | None = None,
        *,
        key_prefix: bool = False,
    ) -> Decision:
        """Allowed or not, and by which rule. ``access`` defaults to :func:`access_of`.
        ``key_prefix``: ``key`` is a topic prefix standing for every key that starts with it
        (bus subscriptions), see :meth:`Rule.matches`."""
        level = access_of(service, operation) if access is None else access
        expanded = self.expand_roles(roles)
        subjects = frozenset({f"principal:{principal}", *(f"role:{r}" for r in expanded)})
        candidates = [
            *BUILTIN_RULES,
            *(
                r
                for role in sorted(expanded)
                if role.startswith("service:")
                for r in service_rules(role.removeprefix("service:"))
            ),
            *self.rules,
        ]
        allow: Rule | None = None
        for rule in candidates:
            if not rule.covers(level) or not rule.matches(
                subjects, service, operation, scope or "", key or "", key_prefix
            ):
                continue
            if rule.effect == "deny":
                return Decision(False, rule.name)
            allow = allow or rule
        return Decision(True, allow.name) if allow else Decision(False, DEFAULT_RULE)


# ---------------------------------------------------------------------- policy file
class PolicyError(InvalidArgument):
    """A policy file error: ``source:line: path: message``."""


_RULE_FIELDS = (
    "name",
    "effect",
    "subject",
    "service",
    "operation",
    "scope",
    "except_scope",
    "key",
    "access",
)
_SUBJECT_RE = re.compile(rf"\*|principal:{_NAME}|role:(service:{_SERVICE}|{_NAME})")


def parse_policy(text: str, source: str = "policy") -> Policy:
    """Parse a YAML or JSON policy document; errors name the line and the field."""
    import yaml

    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise PolicyError(
            f"{source}{line}: not valid YAML/JSON: {getattr(exc, 'problem', exc)}"
        ) from None
    if root is None:
        return Policy()
    parser = _Parser(source)
    top = parser.mapping(root, "policy")
    unknown = set(top) - {"roles", "rules"}
    if unknown:
        name = sorted(unknown)[0]
        raise parser.error(top[name][0], name, "unknown section (expected roles, rules)")
    inherits: dict[str, tuple[str, ...]] = {}
    if "roles" in top:
        for role, (knode, vnode) in parser.mapping(top["roles"][1], "roles").items():
            where = f"roles.{role}"
            try:
                validate_role(role)
            except InvalidArgument as exc:
                raise parser.error(knode, where, str(exc)) from None
            if role in BUILTIN_ROLES:
                raise parser.error(knode, where, "a built-in role cannot be redefined")
            body = parser.mapping(vnode, where)
            for extra in set(body) - {"inherits"}:
                raise parser.error(
                    body[extra][0], f"{where}.{extra}", "unknown field (expected inherits)"
                )
            parents = (
                parser.strings(body["inherits"][1], f"{where}.inherits")
                if "inherits" in body
                else []
            )
            inherits[role] = tuple(parents)
    rules: list[Rule] = []
    if "rules" in top:
        node = top["rules"][1]
        if not isinstance(node, yaml.SequenceNode):
            raise parser.error(node, "rules", "expected a list of rules")
        names: set[str] = set()
        for i, item in enumerate(node.value):
            rule = parser.rule(item, f"rules[{i}]")
            if rule.name in names:
                raise parser.error(item, f"rules[{i}].name", f"duplicate rule name {rule.name!r}")
            names.add(rule.name)
            rules.append(rule)
    return Policy(tuple(rules), inherits)


class _Parser:
    """Walks yaml's node tree so every error can carry the node's line."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, node: Any, where: str, message: str) -> PolicyError:
        line = node.start_mark.line + 1
        return PolicyError(f"{self.source}:{line}: {where}: {message}", where)

    def mapping(self, node: Any, where: str) -> dict[str, tuple[Any, Any]]:
        import yaml

        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, where, "expected a mapping")
        out: dict[str, tuple[Any, Any]] = {}
        for knode, vnode in node.value:
            key = self.scalar(knode, where)
            if key in out:
                raise self.error(knode, f"{where}.{key}", "duplicate field")
            out[key] = (knode, vnode)
        return out

    def scalar(self, node: Any, where: str) -> str:
        import yaml

        if not isinstance(node, yaml.ScalarNode) or not isinstance(node.value, str):
            raise self.error(node, where, "expected a string")
        return str(node.value)

    def strings(self, node: Any, where: str) -> list[str]:
        import yaml

        if isinstance(node, yaml.ScalarNode):
            return [self.scalar(node, where)]
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, where, "expected a string or a list of strings")
        return [self.scalar(n, f"{where}[{i}]") for i, n in enumerate(node.value)]

    def rule(self, node: Any, where: str) -> Rule:
        body = self.mapping(node, where)
        for name, (knode, _) in body.items():
            if name not in _RULE_FIELDS:
                raise self.error(
                    knode,
                    f"{where}.{name}",
                    f"unknown field (expected one of {', '.join(_RULE_FIELDS)})",
                )
        for required in ("name", "effect", "subject", "access"):
            if required not in body:
                raise self.error(node, f"{where}.{required}", "missing (required)")
        values = {
            k: self.scalar(v, f"{where}.{k}") for k, (_, v) in body.items() if k != "except_scope"
        }
        checks: Sequence[tuple[str, bool, str]] = (
            ("effect", values["effect"] in ("allow", "deny"), "expected allow or deny"),
            (
                "subject",
                bool(_SUBJECT_RE.fullmatch(values["subject"])),
                "expected role:ROLE, principal:NAME or *",
            ),
            ("access", values["access"] in Access.__members__, "expected read, write or admin"),
            ("name", bool(values["name"].strip()), "must not be empty"),
        )
        for fname, ok, message in checks:
            if not ok:
                raise self.error(
                    body[fname][1], f"{where}.{fname}", f"{values[fname]!r}: {message}"
                )
        excepts = (
            self.strings(body["except_scope"][1], f"{where}.except_scope")
            if "except_scope" in body
            else []
        )
        return Rule(
            name=values["name"],
            effect=values["effect"],
            subject=values["subject"],
            access=Access[values["access"]],
            service=values.get("service", "*"),
            operation=values.get("operation", "*"),
            scope=values.get("scope", "*"),
            key=values.get("key", "*"),
            except_scope=tuple(excepts),
        )
