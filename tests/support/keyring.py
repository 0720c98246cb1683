"""Security on in every test: one keyring made per test session, copied into each test's
PLANTD_HOME (a copy of a few small files, not seven fresh key pairs and a registry).

The test process itself authenticates as that keyring's ``admin`` (``PLANTD_CLIENT_IDENTITY``
and ``PLANTD_CLIENT_BROKER_KEY``, set by :func:`use_in_this_process`), so in-process clients
talk to broker processes of any test home, and in-process brokers (``PLANTD_HOME`` of the
session keyring) accept them.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

_template: Path | None = None


def template_home() -> Path:
    """The session's PLANTD_HOME holding the keyring every test copies."""
    global _template
    if _template is None:
        from plantd.identity.principals import init_keyring
        from plantd.security.keys import Keyring

        root = Path(tempfile.mkdtemp(prefix="plantd-keyring-"))
        atexit.register(shutil.rmtree, root, True)
        init_keyring(Keyring.at_home(root))
        _template = root
    return _template


def install_keyring(home: Path) -> Path:
    """Copy the session keyring into ``home`` (unless it has one); its identity dir."""
    target = home / "identity"
    if not target.exists():
        shutil.copytree(template_home() / "identity", target)
    return target


def use_in_this_process() -> None:
    """Make the test process a client (and in-process brokers a server) of the session
    keyring."""
    home = template_home()
    ring = home / "identity"
    os.environ["PLANTD_HOME"] = str(home)
    os.environ["PLANTD_CLIENT_IDENTITY"] = str(ring / "secrets" / "admin.key_secret")
    os.environ["PLANTD_CLIENT_BROKER_KEY"] = str(ring / "broker.key")
