"""``python -m plantd.proxy.reference``: the endpoint reference of docs/proxy.md, generated
from the route table (tests/proxy/test_reference.py checks the page carries this output)."""

from __future__ import annotations

import sys

from plantd.proxy.api import ROUTES
from plantd.proxy.routes import Route

BEGIN = "<!-- BEGIN GENERATED REFERENCE (python -m plantd.proxy.reference) -->"
END = "<!-- END GENERATED REFERENCE -->"


def _params(route: Route) -> str:
    parts = []
    for p in route.params:
        if p.where == "path":
            continue
        name = f"`{p.name}`" + ("*" if p.required else "")
        kind = p.type if p.enum is None else " or ".join(p.enum)
        where = " (header)" if p.where == "header" else ""
        parts.append(f"{name} {kind}{where}")
    return ", ".join(parts) or "-"


def reference() -> str:
    """The markdown table of every endpoint, in declaration order, between the markers."""
    lines = [BEGIN, "", "| method | path | what | parameters | success |", "|---|---|---|---|---|"]
    for r in ROUTES.routes:
        statuses = "/".join(str(s) for s in (r.status, *r.also))
        media = ", ".join(f"`{m}`" for m in r.responses)
        lines.append(
            f"| {r.method} | `{r.path}` | {r.summary} | {_params(r)} | {statuses} {media} |"
        )
    lines += ["", END]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(reference() + "\n")
