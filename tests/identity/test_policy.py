"""The policy engine: built-in roles, deny wins, the operation table, the file format, and
properties checked by hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plantd.identity.policy import (
    DEFAULT_RULE,
    OPERATION_ACCESS,
    REGISTER_OPERATION,
    STATE_SERVICE,
    Access,
    Policy,
    PolicyError,
    Rule,
    access_of,
    parse_policy,
)
from plantd.state.service import OPERATIONS, WRITE_OPERATIONS

BUILTIN = Policy()


def test_state_write_classification_is_the_services_own() -> None:
    table = OPERATION_ACCESS[STATE_SERVICE]
    assert set(table) == set(OPERATIONS)
    assert {op for op, a in table.items() if a >= Access.write} - {"backup"} == WRITE_OPERATIONS


def test_access_of() -> None:
    assert access_of(STATE_SERVICE, "get") is Access.read
    assert access_of(STATE_SERVICE, "set") is Access.write
    assert access_of("mmi.service", "") is Access.read
    assert access_of("org.plantd.module.Pump", "start") is Access.write  # unknown: a write


def decide(
    roles: list[str], service: str, op: str, scope: str = "", key: str = ""
) -> tuple[bool, str]:
    d = BUILTIN.decide("someone", roles, service, op, scope, key)
    return d.allowed, d.rule


def test_builtin_roles() -> None:
    assert decide(["viewer"], STATE_SERVICE, "get", "line1", "speed")[0]
    assert decide(["viewer"], STATE_SERVICE, "set", "line1", "speed") == (False, DEFAULT_RULE)
    assert decide(["operator"], STATE_SERVICE, "set", "line1", "speed") == (
        True,
        "builtin:operator-state",
    )
    assert not decide(["operator"], STATE_SERVICE, "set", "plantd.broker", "x")[0]
    assert decide(["engineer"], STATE_SERVICE, "set", "plantd.broker", "x") == (
        True,
        "builtin:engineer-config",
    )
    assert decide(["operator"], "org.plantd.module.Pump", "start")[0]
    assert not decide(["engineer"], STATE_SERVICE, "backup")[0]
    assert decide(["admin"], STATE_SERVICE, "backup")[0]
    assert decide([], "mmi.service", "") == (True, "builtin:mmi")
    assert not decide([], STATE_SERVICE, "get")[0]


def test_service_role_registers_only_as_itself() -> None:
    ok = BUILTIN.decide(
        "pump", ["service:org.plantd.module.Pump"], "org.plantd.module.Pump", REGISTER_OPERATION
    )
    assert ok.allowed and ok.rule.endswith(":register")
    rogue = BUILTIN.decide(
        "pump", ["service:org.plantd.module.Pump"], STATE_SERVICE, REGISTER_OPERATION
    )
    assert not rogue.allowed
    assert not BUILTIN.decide("op", ["operator"], STATE_SERVICE, REGISTER_OPERATION).allowed


def test_deny_names_its_rule() -> None:
    policy = BUILTIN.with_rules(
        Rule(
            "recipes-frozen",
            "deny",
            "role:operator",
            Access.write,
            service=STATE_SERVICE,
            scope="recipes.*",
        )
    )
    d = policy.decide("o", ["operator"], STATE_SERVICE, "set", "recipes.a", "k")
    assert (d.allowed, d.rule) == (False, "recipes-frozen")
    assert policy.decide("o", ["operator"], STATE_SERVICE, "get", "recipes.a", "k").allowed


def test_policy_file_roles_and_rules() -> None:
    policy = parse_policy(
        "roles:\n"
        "  shift-lead: {inherits: [operator]}\n"
        "rules:\n"
        "  - name: leads-config\n"
        "    effect: allow\n"
        "    subject: role:shift-lead\n"
        "    service: org.plantd.State\n"
        "    scope: plantd.recipes\n"
        "    access: write\n"
        "  - {name: no-bob, effect: deny, subject: 'principal:bob', access: read}\n",
        "policy.yaml",
    )
    assert (
        policy.decide("x", ["shift-lead"], STATE_SERVICE, "set", "plantd.recipes", "k").rule
        == "leads-config"
    )
    assert policy.decide("x", ["shift-lead"], STATE_SERVICE, "set", "line", "k").allowed
    assert policy.decide("bob", ["admin"], STATE_SERVICE, "get").rule == "no-bob"
    assert parse_policy('{"rules": []}').rules == ()  # JSON works too


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "rules:\n  - name: a\n    effect: allow\n    subject: '*'\n    access: rw\n",
            "policy.yaml:5: rules[0].access: 'rw': expected read, write or admin",
        ),
        (
            "rules:\n  - name: a\n    effect: maybe\n    subject: '*'\n    access: read\n",
            "policy.yaml:3: rules[0].effect",
        ),
        (
            "rules:\n  - name: a\n    effect: allow\n    subject: someone\n    access: read\n",
            "policy.yaml:4: rules[0].subject",
        ),
        (
            "rules:\n  - name: a\n    effect: allow\n    access: read\n",
            "policy.yaml:2: rules[0].subject: missing",
        ),
        (
            "rules:\n  - {name: a, effect: allow, subject: '*', access: read, colour: red}\n",
            "policy.yaml:2: rules[0].colour: unknown field",
        ),
        (
            "rules:\n  - {name: a, effect: allow, subject: '*', access: read}\n"
            "  - {name: a, effect: deny, subject: '*', access: read}\n",
            "policy.yaml:3: rules[1].name: duplicate rule name 'a'",
        ),
        ("roles:\n  viewer: {inherits: [admin]}\n", "policy.yaml:2: roles.viewer: a built-in role"),
        ("grants: []\n", "policy.yaml:1: grants: unknown section"),
        ("rules: [\n", "policy.yaml:2: not valid YAML/JSON"),
    ],
)
def test_policy_file_errors_name_line_and_field(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy(text, "policy.yaml")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------- properties
NAMES = st.sampled_from(["alice", "bob", "pump"])
ROLES = st.sampled_from(["viewer", "operator", "engineer", "admin", "service:pump", "custom"])
SERVICES = st.sampled_from(
    [STATE_SERVICE, "org.plantd.module.Pump", "pump", "mmi.service", "@bus.event"]
)
OPS = st.sampled_from(["get", "set", "delete", "backup", "start", REGISTER_OPERATION, "@publish"])
SCOPES = st.sampled_from(["", "line1", "plantd.broker", "recipes.a"])
KEYS = st.sampled_from(["", "speed", "pump.x"])
GLOBS = st.sampled_from(["*", "line*", "plantd.*", "org.plantd.*", "get", "s*", "pump*"])
SUBJECTS = st.sampled_from(
    ["*", "role:viewer", "role:operator", "role:custom", "principal:alice", "principal:bob"]
)
ACCESS = st.sampled_from(list(Access))


@st.composite
def rules(draw: st.DrawFn, effect: str | None = None) -> Rule:
    return Rule(
        name=f"r{draw(st.integers(0, 10_000))}",
        effect=effect or draw(st.sampled_from(["allow", "deny"])),
        subject=draw(SUBJECTS),
        access=draw(ACCESS),
        service=draw(GLOBS),
        operation=draw(GLOBS),
        scope=draw(GLOBS),
        key=draw(GLOBS),
    )


REQUESTS = st.tuples(NAMES, st.lists(ROLES, max_size=3), SERVICES, OPS, SCOPES, KEYS, ACCESS)


@settings(max_examples=300, deadline=None)
@given(st.lists(rules(), max_size=6), REQUESTS)
def test_deny_always_wins(extra: list[Rule], request: tuple) -> None:
    name, roles, service, op, scope, key, access = request
    policy = Policy(tuple(extra))
    subjects = {f"principal:{name}", *(f"role:{r}" for r in policy.expand_roles(roles))}
    denying = [
        r
        for r in extra
        if r.effect == "deny"
        and r.covers(access)
        and r.matches(frozenset(subjects), service, op, scope, key)
    ]
    decision = policy.decide(name, roles, service, op, scope, key, access)
    if denying:
        assert not decision.allowed and decision.rule == denying[0].name


@settings(max_examples=300, deadline=None)
@given(
    st.lists(rules(), max_size=6).filter(
        lambda rs: all(r.subject not in ("*", "role:viewer") for r in rs)
    ),
    NAMES,
    SERVICES,
    OPS,
    SCOPES,
    KEYS,
    st.sampled_from([Access.write, Access.admin]),
)
def test_a_viewer_never_writes(
    extra: list[Rule], name: str, service: str, op: str, scope: str, key: str, access: Access
) -> None:
    extra = [r for r in extra if r.subject != f"principal:{name}"]
    assert (
        not Policy(tuple(extra)).decide(name, ["viewer"], service, op, scope, key, access).allowed
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(rules(), max_size=6), rules(effect="allow"), REQUESTS)
def test_adding_an_allow_never_removes_an_allowed_decision(
    extra: list[Rule], allow: Rule, request: tuple
) -> None:
    before = Policy(tuple(extra)).decide(*request)
    after = Policy((*extra, allow)).decide(*request)
    if before.allowed:
        assert after.allowed
    if not after.allowed:
        assert not before.allowed


@settings(max_examples=300, deadline=None)
@given(st.lists(rules(), max_size=6), rules(effect="deny"), REQUESTS)
def test_adding_a_deny_never_grants(extra: list[Rule], deny: Rule, request: tuple) -> None:
    before = Policy(tuple(extra)).decide(*request)
    after = Policy((*extra, deny)).decide(*request)
    if after.allowed:
        assert before.allowed and after.rule == before.rule


@settings(max_examples=200, deadline=None)
@given(st.lists(rules(), max_size=6), REQUESTS)
def test_decision_names_a_rule_that_exists(extra: list[Rule], request: tuple) -> None:
    policy = Policy(tuple(extra))
    d = policy.decide(*request)
    known = {r.name for r in extra} | {DEFAULT_RULE}
    assert d.rule in known or d.rule.startswith("builtin:")
    assert d.allowed == (
        d.rule != DEFAULT_RULE and not any(r.name == d.rule and r.effect == "deny" for r in extra)
    )


# ------------------------------------------------------- bus subscriptions are prefixes

TOPIC = st.text(alphabet="ab.", max_size=4)
KEY_GLOB = st.one_of(
    st.just("*"),
    TOPIC,
    TOPIC.map(lambda t: t + "*"),
    st.tuples(TOPIC, TOPIC).map(lambda p: f"{p[0]}?{p[1]}"),
    st.tuples(TOPIC, TOPIC).map(lambda p: f"{p[0]}*{p[1]}"),
)


@settings(max_examples=300, deadline=None)
@given(
    allow_key=KEY_GLOB,
    deny_key=KEY_GLOB,
    prefix=TOPIC,
    suffix=TOPIC,
)
def test_an_allowed_subscription_never_reaches_a_topic_its_principal_may_not_read(
    allow_key: str, deny_key: str, prefix: str, suffix: str
) -> None:
    """A subscription to P delivers every topic P...: allowed only if each of them is."""
    policy = Policy(
        (
            Rule("allow-some", "allow", "principal:sub", Access.read, service="@bus.event",
                 key=allow_key),
            Rule("deny-some", "deny", "principal:sub", Access.read, service="@bus.event",
                 key=deny_key),
        )
    )  # fmt: skip
    subscribe = policy.decide("sub", (), "@bus.event", "@subscribe", key=prefix, key_prefix=True)
    if subscribe:
        exact = policy.decide("sub", (), "@bus.event", "@subscribe", key=prefix + suffix)
        assert exact, (allow_key, deny_key, prefix, suffix)


def test_a_deny_on_some_topics_refuses_the_catch_all_subscription() -> None:
    policy = Policy(
        (Rule("no-secrets", "deny", "role:viewer", Access.read, service="@bus.*",
              key="secret.*"),)
    )  # fmt: skip

    def sub(topic: str) -> bool:
        return bool(policy.decide("v", ("viewer",), "@bus.event", "@subscribe", key=topic,
                                  key_prefix=True))  # fmt: skip

    assert not sub("")  # everything would include secret.*
    assert not sub("secret.")
    assert not sub("sec")
    assert sub("line1.") and sub("public")
