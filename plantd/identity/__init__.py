"""Identity groundwork: principal keys on disk, the principal registry, the policy engine,
the hash-chained audit log and the CURVE/ZAP glue.

Nothing here is wired into the broker or the daemons yet (issue 13 enforcement comes later);
see docs/security.md, section "Status". Submodules import zmq/yaml/sqlite lazily or on
import of that submodule only, so ``import plantd.identity`` stays cheap.
"""
