"""``plant policy show|check|set|diff``: the authorization policy (``identity/policy.yaml``,
docs/security.md) read and changed through ``org.plantd.Identity``.

Like ``plant identity``, every command asks the service first (an admin on any host; the
policy decides who may ``set``, the daemon audits it) and uses this host's files only with
``--local`` or when the service cannot be reached and the keyring is this host's
(``answered_by`` says which). ``set`` sends the digest of the text it replaces
(``--prev-digest`` from an earlier ``show``, else the digest read just before sending), so a
change made meanwhile is refused instead of overwritten (exit 6; ``--force`` skips it).
Exit codes: 0 ok; 1 ``check`` answered "denied"; 2 a policy that does not parse (the line
and field named) or one that would lock the admins out; 3 the service unreachable and the
keyring not here; 4 no such file; 5 not authorized (the rule named); 6 conflict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from plantd.cli.exitcodes import CliError, ExitCode
from plantd.cli.identity import BY_LOCAL, BY_SERVICE, ID_LOCAL_OPT, OUTPUT_OPT, VERBOSE_OPT
from plantd.cli.identity import _identity_call as identity_call
from plantd.cli.identity import _keyring as keyring
from plantd.cli.output import OutputFormat, emit, info

app = typer.Typer(help="The authorization policy: show, check, set, diff.", no_args_is_help=True)

FILE_ARG = typer.Argument(..., help="The policy file (YAML, or JSON).", show_default=False)
CHECK_ROLE_OPT = typer.Option(
    None, "--role", "-r", help="Decide for a holder of these roles (repeatable)."
)
CHECK_FILE_OPT = typer.Option(
    None, "--file", "-f", help="Decide with this policy file instead of the current one."
)


def _fmt(ctx: typer.Context, output: OutputFormat | None) -> OutputFormat:
    from plantd.cli.log import _fmt as resolve

    return resolve(ctx, output)


def _read_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"{path}: no such file", ExitCode.NOT_FOUND) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{path}: cannot read it: {exc}", ExitCode.USAGE) from None


def _local_current() -> dict[str, Any]:
    """What ``policy-get`` answers, from this host's file."""
    from plantd.identity import policyfile
    from plantd.identity.authority import load_policy
    from plantd.identity.policy import Policy, PolicyError

    path = keyring().policy
    text = policyfile.read_text(path)
    error = None
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        policy, error = Policy(), str(exc)
    return {
        "file": str(path),
        "text": text,
        "digest": policyfile.digest(text),
        "rules": [r.name for r in policy.rules],
        "roles": dict(policy.inherits),
        "error": error,
    }


def _current(ctx: typer.Context, local: bool, verbose: bool) -> dict[str, Any]:
    data = identity_call(ctx, local, verbose, "policy-get")
    if data is not None:
        return {**data, "answered_by": BY_SERVICE}
    return {**_local_current(), "answered_by": BY_LOCAL}


@app.command("show")
def show(
    ctx: typer.Context,
    local: bool = ID_LOCAL_OPT,
    verbose: bool = VERBOSE_OPT,
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """The policy in force: its text, digest (for 'set --prev-digest') and rule names.
    raw: the text only (edit it and 'plant policy set' it back)."""
    doc = _current(ctx, local, verbose)
    fmt = _fmt(ctx, output)
    if fmt is OutputFormat.json:
        emit(doc, fmt)
        return
    text = doc.get("text") or ""
    if fmt is OutputFormat.table:  # YAML comments: the output is still a policy file
        header = [
            f"# file: {doc['file']}",
            f"# digest: {doc['digest']}",
            f"# rules: {', '.join(doc['rules']) or '(built-in only)'}",
        ]
        if doc.get("error"):
            header.append(f"# error (the last good policy is in force): {doc['error']}")
        text = "\n".join(header) + "\n" + text
    emit(text.rstrip("\n"), OutputFormat.raw)


@app.command("check")
def check(
    ctx: typer.Context,
    service: str = typer.Argument(..., help="Service, e.g. org.plantd.State."),
    operation: str = typer.Argument(..., help="Operation, e.g. set."),
    scope: str | None = typer.Option(None, "--scope", help="Scope of the request."),
    key: str | None = typer.Option(None, "--key", help="Key (or topic) of the request."),
    principal: str | None = typer.Option(
        None, "--principal", "-p", help="Decide for this principal (default: you)."
    ),
    role: list[str] | None = CHECK_ROLE_OPT,
    file: Path | None = CHECK_FILE_OPT,
    local: bool = ID_LOCAL_OPT,
    verbose: bool = VERBOSE_OPT,
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """What the policy decides for a request, and by which rule (exit 1 when denied)."""
    request: dict[str, Any] = {"service": service, "operation": operation}
    for name, value in (("scope", scope), ("key", key), ("principal", principal)):
        if value is not None:
            request[name] = value
    if role:
        request["roles"] = list(role)
    if file is not None:
        request["text"] = _read_file(file)
    data = identity_call(ctx, local, verbose, "policy-check", request)
    if data is not None:
        doc = {**data, "answered_by": BY_SERVICE}
    else:
        doc = {**_local_check(request), "answered_by": BY_LOCAL}
    emit(doc, _fmt(ctx, output))
    if not doc["allowed"]:
        raise CliError(f"denied by rule {doc['rule']!r}", ExitCode.REJECTED)


def _local_check(request: dict[str, Any]) -> dict[str, Any]:
    from plantd.identity.authority import Authority
    from plantd.identity.policy import parse_policy

    principal = request.get("principal")
    roles = request.get("roles")
    if principal is None and roles is None:
        raise CliError("--principal or --role: whom to decide for", ExitCode.USAGE)
    with Authority(keyring()) as auth:
        policy = parse_policy(request["text"], "file") if "text" in request else auth.policy
        if roles is None:
            roles = list(auth.roles(principal))
            if auth.principal(principal) is None:
                raise CliError(f"principal {principal!r}: not active here", ExitCode.NOT_FOUND)
    decision = policy.decide(
        principal or "",
        roles,
        request["service"],
        request["operation"],
        request.get("scope"),
        request.get("key"),
    )
    return {
        "principal": principal,
        "roles": roles,
        "allowed": decision.allowed,
        "rule": decision.rule,
    }


def _set_local(text: str, prev_digest: str | None) -> dict[str, Any]:
    """The local path of ``set``: the service's checks on this host's files, audited as
    ``local:<os user>`` (the Identity daemon then knows the digest and adds no row)."""
    import getpass

    from plantd.identity import policyfile
    from plantd.identity.audit import AuditLog
    from plantd.identity.authority import Authority
    from plantd.identity.policy import parse_policy

    ring = keyring()
    path = ring.policy
    policy = parse_policy(text, path.name)
    with Authority(ring) as auth:
        old_policy = auth.policy
        admins = [(name, auth.roles(name)) for name in auth.active_keys().values()]
    reason = policyfile.lockout(policy, admins)
    if reason is not None:
        raise CliError(reason, ExitCode.USAGE)
    old = policyfile.replace(path, text, prev_digest)
    new = policyfile.digest(text)
    changes = policyfile.rule_changes(old_policy, policy)
    if old != new:
        with AuditLog(ring.audit) as trail:
            trail.append(
                principal=f"local:{getpass.getuser()}",
                service=BY_SERVICE,
                operation=policyfile.SET_OPERATION,
                scope=policyfile.POLICY_SCOPE,
                key=path.name,
                old={"digest": old},
                new={"digest": new, **changes},
                outcome="ok",
            )
    return {
        "file": str(path),
        "digest": new,
        "previous": old,
        "changed": old != new,
        "rules": [r.name for r in policy.rules],
        **changes,
    }


@app.command("set")
def set_(
    ctx: typer.Context,
    file: Path = FILE_ARG,
    prev_digest: str | None = typer.Option(
        None, "--prev-digest", help="The digest 'plant policy show' gave for the text you edited."
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace the policy even if it changed since it was read."
    ),
    local: bool = ID_LOCAL_OPT,
    verbose: bool = VERBOSE_OPT,
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Install FILE as the policy (checked by the service first; audited)."""
    import uuid

    if force and prev_digest is not None:
        raise CliError("--force and --prev-digest exclude each other", ExitCode.USAGE)
    text = _read_file(file)
    if prev_digest is None and not force:
        current = _current(ctx, local, False)
        prev_digest = current["digest"]
        local = local or current["answered_by"] == BY_LOCAL
    request: dict[str, Any] = {"text": text, "request_id": uuid.uuid4().hex}
    if prev_digest is not None:
        request["prev_digest"] = prev_digest
    data = identity_call(
        ctx, local, verbose, "policy-set", request, write=True, check_with="plant policy show"
    )
    if data is not None:
        doc = {**data, "answered_by": BY_SERVICE}
    else:
        doc = {**_set_local(text, prev_digest), "answered_by": BY_LOCAL}
    if not doc["changed"]:
        info("the policy already had this text: nothing changed")
    emit(doc, _fmt(ctx, output))


@app.command("diff")
def diff(
    ctx: typer.Context,
    file: Path = FILE_ARG,
    local: bool = ID_LOCAL_OPT,
    verbose: bool = VERBOSE_OPT,
    output: OutputFormat | None = OUTPUT_OPT,
) -> None:
    """Unified diff from the policy in force to FILE (json: with both digests)."""
    import difflib

    from plantd.identity import policyfile

    text = _read_file(file)
    current = _current(ctx, local, verbose)
    lines = difflib.unified_diff(
        (current.get("text") or "").splitlines(keepends=True),
        text.splitlines(keepends=True),
        fromfile=f"{current['file']} (in force)",
        tofile=str(file),
    )
    patch = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    fmt = _fmt(ctx, output)
    if fmt is OutputFormat.json:
        emit(
            {
                "diff": patch,
                "changed": bool(patch),
                "digest": current["digest"],
                "file_digest": policyfile.digest(text),
                "answered_by": current["answered_by"],
            },
            fmt,
        )
    elif patch:
        emit(patch.rstrip("\n"), OutputFormat.raw)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="policy", help="The authorization policy: show, check, set, diff.")


__all__ = ["app", "register"]
