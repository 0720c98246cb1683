"""The policy file (``identity/policy.yaml``) as a thing that changes: its digest, what a new
text changes, whether it would lock the admins out, and replacing it safely. Shared by
``org.plantd.Identity`` (``policy-set`` and its watch for hand edits) and ``plant policy set
--local``.

A digest is the sha256 of the file's UTF-8 text; an absent file counts as empty text (both
mean "the built-in policy only"), so the ``prev_digest`` of a keyring without a policy file
is :data:`EMPTY_DIGEST`. A change is audited in scope :data:`POLICY_SCOPE`, key = the file
name, old ``{"digest"}`` -> new ``{"digest", "added", "removed", "modified"}`` (rule names).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from plantd.identity.policy import IDENTITY_SERVICE, Policy
from plantd.security.errors import Conflict, InvalidArgument
from plantd.security.keys import write_durably

EMPTY_DIGEST = hashlib.sha256(b"").hexdigest()
#: the audit scope of policy changes (``plant audit list --scope policy``)
POLICY_SCOPE = "policy"
SET_OPERATION = "policy-set"
#: a change of the file nobody made through ``policy-set`` (a hand edit)
CHANGED_ON_DISK = "policy-changed-on-disk"
#: the principal of a hand edit's audit row
FILE_PRINCIPAL = "local:file"
#: the policy file is not secret (the keyring directory is 0700 anyway)
POLICY_MODE = 0o644
#: audit values over 4 KiB are stored as a digest of the value: keep rule lists below that
_MAX_VALUE_JSON = 3000
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")


def digest(text: str | None) -> str:
    """The digest of a policy text (None: no file, the same as empty)."""
    return hashlib.sha256((text or "").encode("utf-8")).hexdigest()


def read_text(path: Path) -> str | None:
    """The policy file's text, None when there is none."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def file_stamp(path: Path) -> tuple[int, int, int] | None:
    """(mtime, size, inode) of the file, None when absent: what changes on any write."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def validate_digest(value: Any, field: str = "prev_digest") -> str:
    if not isinstance(value, str) or not _DIGEST_RE.fullmatch(value):
        raise InvalidArgument(
            f"field '{field}': expected a sha256 digest (64 lower-case hex digits)", field
        )
    return value


def rule_changes(old: Policy | None, new: Policy) -> dict[str, Any]:
    """Rule names ``added``, ``removed`` and ``modified`` (same name, other contents) from
    ``old`` to ``new``; with ``old`` unknown, just ``rules`` (every name of ``new``). Kept
    small enough to stay a readable audit value (else counts only)."""
    new_rules = {r.name: r for r in new.rules}
    if old is None:
        doc: dict[str, Any] = {"rules": sorted(new_rules)}
    else:
        old_rules = {r.name: r for r in old.rules}
        doc = {
            "added": sorted(set(new_rules) - set(old_rules)),
            "removed": sorted(set(old_rules) - set(new_rules)),
            "modified": sorted(
                n for n in new_rules.keys() & old_rules if new_rules[n] != old_rules[n]
            ),
        }
        if dict(old.inherits) != dict(new.inherits):
            doc["roles_modified"] = True
    if len(json.dumps(doc)) > _MAX_VALUE_JSON:
        doc = {k: len(v) if isinstance(v, list) else v for k, v in doc.items()}
    return doc


def lockout(policy: Policy, principals: Iterable[tuple[str, tuple[str, ...]]]) -> str | None:
    """Why ``policy`` would lock its administrators out, or None when at least one of
    ``principals`` (name, roles) may still call ``policy-set`` on ``org.plantd.Identity``
    under it. The broker and the service both decide exactly that question for a
    ``policy-set``, so whoever passes can still undo the change through the service."""
    refusals: list[str] = []
    for name, roles in principals:
        decision = policy.decide(name, roles, IDENTITY_SERVICE, SET_OPERATION)
        if decision.allowed:
            return None
        refusals.append(f"{name} ({', '.join(roles) or 'no roles'}) by rule {decision.rule!r}")
    if not refusals:
        return None  # nobody to check (no registry here): nothing to protect
    return (
        f"the new policy would refuse {SET_OPERATION} on {IDENTITY_SERVICE} to "
        + "; ".join(refusals[:3])
        + (f" and {len(refusals) - 3} more" if len(refusals) > 3 else "")
        + ": nobody could change it back through the service"
    )


def replace(path: Path, text: str, prev_digest: str | None) -> str:
    """Write ``text`` to ``path`` durably and atomically (temporary file, fsync, rename)
    unless the file's digest is no longer ``prev_digest`` (:class:`Conflict`: it changed
    meanwhile). Blocking; returns the digest of the text it replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # setters in other processes (the service, 'plant policy set --local') take turns, so
    # the digest compared is the one replaced; a hand edit takes no lock
    lock = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, POLICY_MODE)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = digest(read_text(path))
        if prev_digest is not None and old != prev_digest:
            raise Conflict(
                f"{path.name} changed meanwhile (its digest is {old[:12]}..., the text you"
                f" edited had {prev_digest[:12]}...): look at it again ('plant policy show')"
                " or use --force"
            )
        write_durably(path, text, POLICY_MODE)
        return old
    finally:
        os.close(lock)  # releases the lock


__all__ = [
    "CHANGED_ON_DISK",
    "EMPTY_DIGEST",
    "FILE_PRINCIPAL",
    "POLICY_SCOPE",
    "SET_OPERATION",
    "digest",
    "file_stamp",
    "lockout",
    "read_text",
    "replace",
    "rule_changes",
    "validate_digest",
]
