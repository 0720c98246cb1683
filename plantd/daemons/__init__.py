"""Registry of plantd daemons, in dependency (start) order.

Modules are imported lazily: listing daemons or reading their pid files must not pull in
zmq, aiohttp or sqlite. A daemon whose module is not installed yet (state and logger are
written separately) is simply absent from :func:`available`.

A daemon module exposes its :class:`plantd.daemons.lifecycle.Daemon` subclass either as the
module attribute ``DAEMON`` or as the only ``Daemon`` subclass defined in the module.

Layers: this package is the daemon framework (registry, :mod:`.lifecycle`, :mod:`.process`,
:mod:`.health`, :mod:`.run`); :mod:`plantd.module` is the SDK on top of it; each service's
daemon lives with its service (``plantd/<service>/daemon.py``) and is found here by name, never
imported, so the framework imports neither the SDK nor a service. ``plantd.daemons.<name>``
modules of the built-in daemons are deprecated aliases of their new homes.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plantd.exitcodes import ExitCode

if TYPE_CHECKING:
    from plantd.daemons.lifecycle import Daemon

# name -> candidate modules (first existing wins); dict order is the start order (stop order
# is the reverse). Each service keeps its daemon next to its code.
REGISTRY: dict[str, tuple[str, ...]] = {
    "broker": ("plantd.broker.daemon",),
    "state": ("plantd.state.daemon",),
    "logger": ("plantd.logger.daemon",),
    "echo": ("plantd.echo",),
    "metric": ("plantd.metric.daemon",),
    "proxy": ("plantd.proxy.daemon",),
}
#: entry-point group where installed packages declare their modules (``name = "pkg.mod:Class"``)
ENTRY_POINT_GROUP = "plantd.modules"

_ROOT = Path(__file__).resolve().parent.parent  # the plantd package directory


class UnknownDaemon(LookupError):
    """The name is not a registered daemon, or its module is not installed."""

    exit_code = ExitCode.USAGE


def _module_exists(module: str) -> bool:
    """Whether ``module`` (under plantd) exists, found on disk so no parent package runs."""
    parts = module.split(".")[1:]
    base = _ROOT.joinpath(*parts)
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def module_for(name: str) -> str | None:
    """The module implementing daemon ``name``, or None if not installed."""
    for module in REGISTRY.get(name, ()):
        if _module_exists(module):
            return module
    return None


def exists(name: str) -> bool:
    """True if ``name`` is registered and its module is installed (nothing is imported)."""
    return module_for(name) is not None


def is_module(name: str) -> bool:
    """``name`` is a module an installed package declares (``plantd.modules`` entry points)."""
    return name not in REGISTRY and name in installed()


def installed() -> dict[str, str]:
    """Modules that installed packages declare: name -> ``module:Class``."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_installed(name: str) -> type[Daemon[Any]]:
    """The class an installed package declares as module ``name`` (LookupError if none)."""
    from importlib.metadata import entry_points

    from plantd.daemons.lifecycle import Daemon

    for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, Daemon)):
            raise TypeError(f"entry point {name} = {ep.value} is not a plantd Module")
        return cls
    raise LookupError(name)


def available() -> list[str]:
    """Registered daemons whose module exists, in start order."""
    return [name for name in REGISTRY if exists(name)]


def resolve(names: list[str] | tuple[str, ...]) -> list[str]:
    """Expand ``all`` (or nothing) to every available daemon; validate and order the rest."""
    if not names or "all" in names:
        return available()
    unknown = [n for n in names if n not in REGISTRY and not is_module(n)]
    if unknown:
        raise UnknownDaemon(f"unknown daemon {unknown[0]!r} (known: {', '.join(REGISTRY)})")
    missing = [n for n in names if n in REGISTRY and not exists(n)]
    if missing:
        raise UnknownDaemon(f"daemon {missing[0]!r} is not installed in this build")
    wanted = set(names)
    modules = [n for n in dict.fromkeys(names) if n not in REGISTRY]
    return [n for n in REGISTRY if n in wanted] + modules


def load(name: str) -> type[Daemon[Any]]:
    """Import the daemon module and return its Daemon class."""
    from plantd.daemons.lifecycle import Daemon

    if name not in REGISTRY:
        try:
            return load_installed(name)
        except LookupError:
            raise UnknownDaemon(
                f"unknown daemon or module {name!r} (daemons: {', '.join(REGISTRY)}; "
                "modules: plant module list)"
            ) from None
    if not exists(name):
        raise UnknownDaemon(f"daemon {name!r} is not installed in this build")
    module = importlib.import_module(module_for(name) or "")
    cls = getattr(module, "DAEMON", None)
    if cls is None:
        candidates = [
            obj
            for obj in vars(module).values()
            if isinstance(obj, type)
            and issubclass(obj, Daemon)
            and obj is not Daemon
            and obj.__module__ == module.__name__
        ]
        if len(candidates) != 1:
            raise UnknownDaemon(f"module {module.__name__} defines no single Daemon class")
        cls = candidates[0]
    return cls
