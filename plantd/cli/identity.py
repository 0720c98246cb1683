"""``plant identity``, ``plant whoami`` and ``plant audit``: principals, keys and the audit
trail (see docs/security.md).

``add``, ``revoke``, ``rotate``, ``accept``, ``reject``, ``pending``, ``list`` and ``show`` go
through ``org.plantd.Identity`` when it answers (an admin on any host; the policy decides,
the daemon audits), and change this host's keyring files (``$PLANTD_HOME/identity``) only
when the service cannot be reached and the keyring is this host's (the broker endpoint is
local; or what answers there holds another broker key: another stack owns the port), or
with ``--local``. A new key pair is always made by the CLI, on the caller's host:
the service gets the public key only and never holds a secret. ``init`` and ``export`` are
local. Errors: a bad name/role/key exits 2, the service unreachable with no local keyring 3,
an unknown principal 4, not authorized 5 (naming the rule), a name or key that already
exists or a principal in the wrong state 6, an unsafe secret key file 9; ``audit verify``
exits 1 when the chain is broken (naming the first bad seq).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import typer

from plantd.cli import output_format
from plantd.cli.exitcodes import CliError, ExitCode
from plantd.cli.output import OutputFormat, emit, info
from plantd.cli.tokens import app as token_app

if TYPE_CHECKING:
    from plantd.identity.principals import Principal, Registry
    from plantd.security.keys import KeyPair, Keyring

app = typer.Typer(help="Principals and their keys.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit trail: list and verify.", no_args_is_help=True)

OUTPUT_OPT = typer.Option(None, "--output", "-o", help="Output format.")
ROLE_OPT = typer.Option(None, "--role", "-r", help="Role (repeatable).")
ACCEPT_ROLE_OPT = typer.Option(
    None, "--role", "-r", help="Roles to grant (default for a module: service:NAME)."
)
ID_LOCAL_OPT = typer.Option(
    False, "--local", help="Change this host's keyring files, not through org.plantd.Identity."
)
VERBOSE_OPT = typer.Option(
    False, "--verbose", "-v", help="Say on stderr which path served: the service or local files."
)
COLUMNS = ("name", "kind", "state", "roles", "public_key", "created", "revoked_at")
#: ``answered_by`` of a command: which path served it
BY_SERVICE = "org.plantd.Identity"
BY_LOCAL = "local keyring"
AUDIT_COLUMNS = (
    "seq", "time", "principal", "service", "operation", "scope", "key", "old", "new", "outcome",
)  # fmt: skip


def _keyring() -> Keyring:
    from plantd.config import plantd_home
    from plantd.security.keys import Keyring

    return Keyring.at_home(plantd_home().root)


@contextmanager
def _registry(*, create: bool = False) -> Iterator[Registry]:
    from plantd.identity.principals import Registry

    ring = _keyring()
    if not create and not ring.registry.exists():
        raise CliError(
            f"{ring.root}: no identity yet (run 'plant identity init')", ExitCode.NOT_FOUND
        )
    with Registry(ring) as reg:
        yield reg


def _record(operation: str, p: Principal, old: Any = None) -> None:
    """Every identity change goes into the audit trail, by the local OS user (the principal
    of a change made through the Identity service later)."""
    import getpass

    from plantd.identity.audit import AuditLog

    with AuditLog(_keyring().audit) as log:
        log.append(
            principal=f"local:{getpass.getuser()}",
            service="org.plantd.Identity",
            operation=operation,
            scope="identity",
            key=p.name,
            old=old,
            new={"state": p.state, "roles": list(p.roles), "public_key": p.public_key},
            outcome="ok",
        )


def _when(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def _doc(p: Principal, fmt: OutputFormat) -> dict[str, Any]:
    doc = p.to_json()
    if fmt is OutputFormat.table:
        doc.update(
            roles=",".join(p.roles), created=_when(p.created), revoked_at=_when(p.revoked_at)
        )
    return doc


def _emit_principals(
    ctx: typer.Context, output: OutputFormat | None, items: list[Principal]
) -> None:
    from plantd.cli.log import _fmt

    fmt = _fmt(ctx, output)
    emit([_doc(p, fmt) for p in items], fmt, columns=COLUMNS)


def _emit_one(ctx: typer.Context, output: OutputFormat | None, p: Principal, **extra: Any) -> None:
    from plantd.cli.log import _fmt

    fmt = _fmt(ctx, output)
    doc = {**_doc(p, fmt), **{k: v for k, v in extra.items() if v is not None}}
    emit(doc, fmt)


def ensure_initialised() -> bool:
    """What ``plant up`` runs first: ``identity init`` when security is on and there is no
    keyring yet; True when it made one."""
    from plantd.identity.principals import init_keyring
    from plantd.security.settings import security_enabled

    ring = _keyring()
    if not security_enabled() or ring.registry.exists() or ring.broker_secret.exists():
        return False
    _, admin = init_keyring(ring)
    _record("init", admin)
    info(f"identity initialised in {ring.root} (you are 'admin')")
    return True


def ensure_module_principal(name: str, service: str) -> None:
    """What ``plant module start`` runs: module ``name`` gets its own principal (role
    ``service:<service>``, secret on this host) unless it has one."""
    from plantd.identity.principals import Registry, ensure_service_principal
    from plantd.security.settings import security_enabled

    ring = _keyring()
    if not security_enabled() or not ring.registry.exists():
        return
    if ensure_service_principal(ring, name, service, "module"):
        with Registry(ring) as reg:
            _record("add", reg.get(name))
        info(f"principal {name!r} created (role service:{service})")


@app.command("init")
def init(
    ctx: typer.Context,
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Create the broker key pair and the 'admin' principal (role admin) for this user."""
    from plantd.identity.principals import init_keyring

    ring = _keyring()
    broker, admin = init_keyring(ring)
    _record("init", admin)
    info(f"identity initialised in {ring.root}")
    _emit_one(
        ctx,
        output,
        admin,
        secret_file=str(ring.secret_path(admin.name)),
        broker_public_key=broker.public,
    )


def _principal(doc: dict[str, Any]) -> Principal:
    from plantd.identity.principals import Principal

    return Principal(
        name=doc["name"],
        public_key=doc["public_key"],
        roles=tuple(doc.get("roles", ())),
        kind=doc["kind"],
        state=doc["state"],
        created=doc["created"],
        revoked_at=doc.get("revoked_at"),
    )


def _unreachable_fallback(ctx: typer.Context, reason: str, verbose: bool) -> None:
    """The service cannot be reached: go on with the local keyring if it is the broker's
    (the endpoint is on this host and the registry is here), else fail with exit 3."""
    from plantd.cli import client_settings
    from plantd.config import parse_endpoints
    from plantd.security.settings import is_local_endpoint

    endpoint = client_settings(ctx).endpoint
    ring = _keyring()
    local = all(is_local_endpoint(e) for e in parse_endpoints(endpoint))
    if not local:
        raise CliError(
            f"{BY_SERVICE} at {endpoint} cannot be reached ({reason}) and that broker is not"
            " on this host: its keyring cannot be changed from here",
            ExitCode.UNREACHABLE,
        )
    if verbose:
        info(f"answered by the {BY_LOCAL} {ring.root} ({BY_SERVICE} cannot be reached: {reason})")


def _identity_call(
    ctx: typer.Context,
    local: bool,
    verbose: bool,
    operation: str,
    payload: Any = None,
    *,
    write: bool = False,
    check_with: str = "plant identity show",
) -> Any | None:
    """The reply data of ``org.plantd.Identity`` ``operation``, or None when the command is
    to use this host's keyring instead (``--local``, or the service is unreachable and the
    keyring is local). A refusal (not authorized: exit 5 naming the rule) is an error, never
    a fallback; so is a write whose reply did not come (it may have been applied)."""
    if local:
        if verbose:
            info(f"answered by the {BY_LOCAL} {_keyring().root} (--local)")
        return None
    from plantd.cli import client_settings
    from plantd.client import SyncClient
    from plantd.client.errors import (
        AuthenticationFailed,
        BrokerUnreachable,
        RequestTimeout,
        ServiceUnavailable,
        UnknownService,
    )
    from plantd.security.curve import KEY_MISMATCH
    from plantd.security.errors import InsecureKeyFile, NotFound
    from plantd.vocabulary import IDENTITY_SERVICE

    s = client_settings(ctx)
    try:
        with SyncClient(s.endpoint, timeout=s.timeout) as client:
            # ask the broker first: a request to a service without workers would wait for
            # one, and a write that timed out cannot fall back (it may have been applied)
            if client.mmi_service(IDENTITY_SERVICE, timeout=min(s.timeout, 3.0)) != "200":
                raise UnknownService(f"no {IDENTITY_SERVICE} worker at the broker")
            try:
                data = client.call(IDENTITY_SERVICE, operation, payload)["data"]
            except RequestTimeout as exc:
                if not write:
                    raise
                raise CliError(
                    f"{IDENTITY_SERVICE} did not answer '{operation}' in time; it may have been"
                    f" applied: check with '{check_with}'",
                    ExitCode.TIMEOUT,
                ) from exc
        if verbose:
            info(f"answered by {IDENTITY_SERVICE} at {s.endpoint}")
        return data
    except InsecureKeyFile:
        raise
    except NotFound as exc:  # no key to call with: only this host's files can serve
        reason = str(exc)
    except (BrokerUnreachable, RequestTimeout, ServiceUnavailable, UnknownService) as exc:
        reason = str(exc) or type(exc).__name__
    except AuthenticationFailed as exc:
        if KEY_MISMATCH not in str(exc):
            raise  # our key was refused: an error, not a reason to go around the service
        # what answers there is not this keyring's broker (another stack owns the port)
        reason = str(exc)
    _unreachable_fallback(ctx, reason, verbose)
    return None


def _emit_remote(ctx: typer.Context, output: OutputFormat | None, data: Any, **extra: Any) -> None:
    _emit_one(ctx, output, _principal(data), answered_by=BY_SERVICE, **extra)


def _new_pair(public_key: str | None) -> KeyPair | None:
    """The key pair the CLI makes for a principal when no public key is given (on the
    caller's host: the service never sees a secret)."""
    from plantd.security.keys import generate_keypair

    return generate_keypair() if public_key is None else None


def _keep_secret(name: str, pair: KeyPair | None) -> str | None:
    """Write the secret of a pair the service accepted to this host's keyring (0600)."""
    if pair is None:
        return None
    from plantd.security.keys import write_secret

    ring = _keyring()
    ring.ensure()
    path = ring.secret_path(name)
    write_secret(path, name, pair)
    return str(path)


@app.command("add")
def add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Principal name (lower-case letters, digits, . _ -)."),
    role: list[str] | None = ROLE_OPT,
    kind: str = typer.Option("person", "--kind", help="person, module or daemon."),
    public_key: str | None = typer.Option(
        None, "--public-key", help="Z85 public key of a principal on another host (no secret here)."
    ),
    pending: bool = typer.Option(False, "--pending", help="Hold it pending until accepted."),
    local: bool = ID_LOCAL_OPT,
    verbose: bool = VERBOSE_OPT,
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Register a principal; without --public-key its key pair is made here (the secret
    under this host's secrets/, 0600)."""
    if pending and public_key is None:
        raise CliError("--pending needs --public-key (a key presented by a peer)", ExitCode.USAGE)
    pair = _new_pair(public_key)
    request = {
        "name": name,
        "roles": list(role or ()),
        "kind": kind,
        "public_key": public_key or (pair.public if pair else None),
        "pending": pending,
    }
    data = _identity_call(ctx, local, verbose, "add", request, write=True)
    if data is not None:
        _emit_remote(ctx, output, data, secret_file=_keep_secret(name, pair))
        return
    with _registry() as reg:
        p, made = reg.add(
            name,
            role or (),
            kind=kind,
            public_key=public_key,
            state="pending" if pending else "active",
        )
        secret = str(reg.keyring.secret_path(name)) if made is not None else None
    _record("add", p)
    _emit_one(ctx, output, p, secret_file=secret, answered_by=BY_LOCAL)


@app.command("list")
def list_(
    ctx: typer.Context,
    state: str | None = typer.Option(None, "--state", help="active, pending or revoked."),
    local: bool = ID_LOCAL_OPT,
    verbose: bool = VERBOSE_OPT,
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Every principal (name order)."""
    data = _identity_call(ctx, local, verbose, "list", {"state": state} if state else None)
    if data is not None:
        _emit_principals(ctx, output, [_principal(d) for d in data["principals"]])
        return
    with _registry() as reg:
        items = reg.list_principals(state)
    _emit_principals(ctx, output, items)


@app.command("show")
def show(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Principal name."),
    local: bool = ID_LOCAL_OPT,
    verbose: bool = VERBOSE_OPT,
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """One principal."""
    data = _identity_call(ctx, local, verbose, "show", {"name": name})
    if data is not None:
        _emit_remote(ctx, output, data)
        return
    with _registry() as reg:
        p = reg.get(name)
    _emit_one(ctx, output, p, answered_by=BY_LOCAL)


def _forget_secret(p: Principal) -> None:
    """After a revocation through the service: delete this host's copy of the revoked key."""
    from plantd.security.errors import IdentityError
    from plantd.security.keys import read_certificate

    path = _keyring().secret_path(p.name)
    try:
        held = read_certificate(path)
    except IdentityError:
        return
    if held.public == p.public_key:
        path.unlink(missing_ok=True)


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Principal name."),
    local: bool = ID_LOCAL_OPT,
    verbose: bool = VERBOSE_OPT,
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Revoke a principal: its key is never accepted again (its local secret is deleted)."""
    data = _identity_call(ctx, local, verbose, "revoke", {"name": name}, write=True)
    if data is not None:
        _forget_secret(_principal(data))
        _emit_remote(ctx, output, data)
        return
    with _registry() as reg:
        before = reg.get(name)
        p = reg.revoke(name)
    _record("revoke", p, old={"state": before.state})
    _emit_one(ctx, output, p, answered_by=BY_LOCAL)


@app.command("rotate")
def rotate(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Principal name."),
    public_key: str | None = typer.Option(
        None, "--public-key", help="The new Z85 public key (else a pair is made here)."
    ),
    local: bool = ID_LOCAL_OPT,
    verbose: bool = VERBOSE_OPT,
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Give a principal a new key; the old key is revoked."""
    pair = _new_pair(public_key)
    request = {"name": name, "public_key": public_key or (pair.public if pair else None)}
    data = _identity_call(ctx, local, verbose, "rotate", request, write=True)
    if data is not None:
        _emit_remote(ctx, output, data, secret_file=_keep_secret(name, pair))
        return
    with _registry() as reg:
        before = reg.get(name)
        p, made = reg.rotate(name, public_key)
        secret = str(reg.keyring.secret_path(name)) if made is not None else None
    _record("rotate", p, old={"public_key": before.public_key})
    _emit_one(ctx, output, p, secret_file=secret, answered_by=BY_LOCAL)


@app.command("export")
def export(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Principal name, or 'broker'."),
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """The public certificate to copy to another host (raw/table: the zcert text)."""
    from plantd.cli.log import _fmt
    from plantd.security.keys import read_certificate

    ring = _keyring()
    path = ring.broker_public if name == "broker" else ring.public_path(name)
    if name != "broker":
        with _registry() as reg:
            reg.get(name)  # NotFound for an unknown name
    pair = read_certificate(path)
    fmt = _fmt(ctx, output)
    if fmt is OutputFormat.json:
        emit({"name": name, "public_key": pair.public, "file": str(path)}, fmt)
    else:
        sys.stdout.write(path.read_text(encoding="utf-8"))


@app.command("pending")
def pending(
    ctx: typer.Context,
    local: bool = ID_LOCAL_OPT,
    verbose: bool = VERBOSE_OPT,
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Principals waiting for 'accept' or 'reject'."""
    data = _identity_call(ctx, local, verbose, "pending")
    if data is not None:
        _emit_principals(ctx, output, [_principal(d) for d in data["principals"]])
        return
    with _registry() as reg:
        items = reg.list_principals("pending")
    _emit_principals(ctx, output, items)


@app.command("accept")
def accept(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Pending principal."),
    role: list[str] | None = ACCEPT_ROLE_OPT,
    local: bool = ID_LOCAL_OPT,
    verbose: bool = VERBOSE_OPT,
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Accept a pending principal (it becomes active)."""
    data = _identity_call(
        ctx, local, verbose, "accept", {"name": name, "roles": list(role or ())}, write=True
    )
    if data is not None:
        _emit_remote(ctx, output, data)
        return
    with _registry() as reg:
        p = reg.accept(name, role or ())
    _record("accept", p, old={"state": "pending"})
    _emit_one(ctx, output, p, answered_by=BY_LOCAL)


@app.command("reject")
def reject(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Pending principal."),
    local: bool = ID_LOCAL_OPT,
    verbose: bool = VERBOSE_OPT,
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Reject a pending principal; its key is never accepted later."""
    data = _identity_call(ctx, local, verbose, "reject", {"name": name}, write=True)
    if data is not None:
        _emit_remote(ctx, output, data)
        return
    with _registry() as reg:
        p = reg.reject(name)
    _record("reject", p, old={"state": "pending"})
    _emit_one(ctx, output, p, answered_by=BY_LOCAL)


def _service(ctx: typer.Context, operation: str, payload: Any = None) -> Any | None:
    """The reply data of ``org.plantd.Identity``, or None when the service cannot be
    reached (no broker, no identity daemon): the caller then reads the local keyring.
    A refusal (e.g. not authorized) is an error, not a fallback."""
    from plantd.cli import client_settings
    from plantd.client import SyncClient
    from plantd.client.errors import (
        BrokerUnreachable,
        RequestTimeout,
        ServiceUnavailable,
        UnknownService,
    )
    from plantd.vocabulary import IDENTITY_SERVICE

    s = client_settings(ctx)
    try:
        with SyncClient(s.endpoint, timeout=min(s.timeout, 3.0)) as client:
            return client.call(IDENTITY_SERVICE, operation, payload)["data"]
    except (BrokerUnreachable, RequestTimeout, ServiceUnavailable, UnknownService):
        return None


def whoami(
    ctx: typer.Context,
    identity: str | None = typer.Option(
        None, "--identity", "-i", help="Secret key file (env PLANTD_CLIENT_IDENTITY)."
    ),
    local: bool = typer.Option(False, "--local", help="Only this host's keyring, no service."),
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Who the broker sees (asks org.plantd.Identity), else which key this CLI would use."""
    from plantd.config import plantd_home
    from plantd.security.errors import NotFound
    from plantd.security.keys import client_identity_path, load_secret

    seen = None if local else _service(ctx, "whoami")
    home = plantd_home().root
    path, source = client_identity_path(identity, home, dict(os.environ))
    doc: dict[str, Any] = {"file": str(path), "source": source}
    try:
        pair = load_secret(path)
    except NotFound:
        if seen is None:
            raise
        pair = None
    if pair is not None:
        doc["public_key"] = pair.public
        ring = _keyring()
        if seen is None and ring.registry.exists():
            from plantd.identity.principals import Registry

            with Registry(ring) as reg:
                p = reg.by_key(pair.public)
            if p is not None:
                doc.update(principal=p.name, roles=list(p.roles), state=p.state)
    if seen is not None:
        doc.update(
            principal=seen.get("principal"),
            roles=seen.get("roles", []),
            peer=seen.get("peer"),
            secure=seen.get("secure"),
            answered_by="org.plantd.Identity",
        )
    else:
        doc["answered_by"] = "local keyring"
    doc.setdefault("principal", None)
    emit(doc, output_format(ctx, output))


def _epoch(value: str | None) -> float | None:
    from plantd.cli.log import parse_when

    try:
        when = parse_when(value)
    except CliError as exc:
        raise CliError(f"--since: {exc}", exc.code) from None
    if when is None or isinstance(when, float):
        return when
    try:
        return datetime.fromisoformat(when).timestamp()
    except ValueError:
        raise CliError(f"--since: cannot read {value!r} as a time", ExitCode.USAGE) from None


def _audit_sources() -> Any:
    """This host's chains (the keyring's and those daemons registered); exit 4 if none."""
    from plantd.identity.audit import host_sources

    ring = _keyring()
    sources = host_sources(ring.audit)
    if not sources:
        raise CliError(f"{ring.audit}: no audit log yet", ExitCode.NOT_FOUND)
    return sources


def _audit_pages(ctx: typer.Context, local: bool, query: dict[str, Any]) -> Iterator[Any]:
    """Pages of audit rows: from org.plantd.Identity when reachable, else the local file."""
    if not local:
        page = _service(ctx, "audit-list", query)
        if page is not None:
            yield page
            while page["more"]:
                page = _service(ctx, "audit-list", {**query, "after": page["next"]})
                if page is None:
                    raise CliError(
                        "org.plantd.Identity went away while paging", ExitCode.UNREACHABLE
                    )
                yield page
            return
    from plantd.identity.audit import merged_query

    sources = _audit_sources()
    after = query.get("after")
    filters = {k: query.get(k) for k in ("since", "principal", "scope", "key")}
    while True:
        got = merged_query(sources, after=after, limit=query["limit"], **filters)
        yield {"rows": got.rows, "more": got.more, "next": got.next}
        if not got.more:
            return
        after = got.next


LOCAL_OPT = typer.Option(False, "--local", help="Read this host's audit files, not the service.")


@audit_app.command("list")
def audit_list(
    ctx: typer.Context,
    since: str | None = typer.Option(None, "--since", help="From: 10m, 2h, 1d, epoch or ISO."),
    principal: str | None = typer.Option(None, "--principal", help="Only this principal."),
    scope: str | None = typer.Option(None, "--scope", help="Only this scope."),
    key: str | None = typer.Option(None, "--key", help="Only this key."),
    limit: int = typer.Option(1000, "--limit", "-n", min=1, help="At most N rows."),
    local: bool = LOCAL_OPT,
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Audit rows, oldest first (read page by page, from org.plantd.Identity if it runs)."""
    from plantd.cli.log import _fmt
    from plantd.identity.audit import MAX_PAGE

    fmt = _fmt(ctx, output)
    rows: list[dict[str, Any]] = []
    query = {
        "since": _epoch(since),  # once: "10m" must not move between pages
        "principal": principal,
        "scope": scope,
        "key": key,
        "limit": min(MAX_PAGE, limit),
    }
    for page in _audit_pages(ctx, local, {k: v for k, v in query.items() if v is not None}):
        rows.extend(page["rows"])
        if len(rows) >= limit:
            break
    rows = rows[:limit]
    if fmt is OutputFormat.table:
        rows = [{**r, "time": _when(r["ts"])} for r in rows]
    emit(rows, fmt, columns=AUDIT_COLUMNS)


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context, local: bool = LOCAL_OPT, output: OutputFormat | None = OUTPUT_OPT
) -> None:
    """Check every hash chain on this host; exit 1 naming the first bad row."""
    from plantd.identity.audit import verify_sources

    doc = None if local else _service(ctx, "audit-verify")
    if doc is None:
        doc = verify_sources(_audit_sources())
    fmt = output_format(ctx, output)
    if fmt is OutputFormat.table and doc.get("sources"):  # one line per chain
        emit(doc["sources"], fmt, columns=["source", "ok", "rows", "first_bad_seq", "reason"])
    else:
        emit(doc, fmt)
    if not doc["ok"]:
        bad = doc.get("first_bad_seq")
        chain = f"chain '{doc['source']}' " if doc.get("source") else ""
        where = f"seq {bad}: " if bad is not None else ""
        raise CliError(
            f"audit log {chain}is broken at {where}{doc.get('reason')}", ExitCode.REJECTED
        )


def register(root: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
    root.add_typer(app, name="identity", help="Principals and their keys (this host's keyring).")
    root.add_typer(audit_app, name="audit", help="The audit trail: list and verify.")
    root.command("whoami")(whoami)


__all__ = ["app", "audit_app", "register"]
