"""Settings loading shared by every daemon and client.

Layering (later wins): dataclass defaults -> optional YAML file -> environment
``PLANTD_<SERVICE>_<SETTING>`` -> explicit overrides (CLI flags). One loader keeps every
daemon's configuration story identical, and errors always name the file or variable at fault.

The module is imported by the CLI on every invocation, so it stays cheap: PyYAML and
platformdirs are imported only when actually needed.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NewType, TypeVar

from plantd.exitcodes import ExitCode
from plantd.vocabulary import BROKER_ENDPOINT, CLIENT_SCOPE, bus

__all__ = [
    "LOCAL_BROKER",
    "ClientSettings",
    "ConfigError",
    "DaemonSettings",
    "Endpoints",
    "Home",
    "config_file_for",
    "env_var",
    "load_client_settings",
    "load_settings",
    "parse_endpoints",
    "plantd_home",
]

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}


class ConfigError(ValueError):
    """A setting could not be loaded; the message names the source (file or variable)."""

    exit_code = ExitCode.USAGE


#: a setting naming one or more ZeroMQ endpoints, comma-separated
#: (``tcp://host-a:9797,tcp://host-b:9797``): brokers a worker registers with and a client
#: fails over between, or bus ends a publisher or subscriber uses all of. Loading checks it
#: with :func:`parse_endpoints`; the value stays the (normalised) string.
Endpoints = NewType("Endpoints", str)
#: the default of every broker ``endpoint`` setting: the local broker
LOCAL_BROKER = Endpoints(BROKER_ENDPOINT)

_SCHEMES = ("tcp", "ipc", "inproc")


def parse_endpoints(
    value: str | typing.Iterable[str], setting: str = "endpoint"
) -> tuple[str, ...]:
    """``"tcp://a:9797, tcp://b:9797"`` (or a sequence) -> ``("tcp://a:9797", "tcp://b:9797")``.

    The one parser of endpoint lists: every error names ``setting`` and the item at fault
    (empty items, unknown schemes, a TCP endpoint without a numeric port, duplicates)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for n, raw in enumerate(items, 1):
        item = str(raw).strip()
        where = f"{setting}={value if isinstance(value, str) else ','.join(items)!r}: item {n}"
        if not item:
            raise ConfigError(f"{where} is empty (expected SCHEME://ADDRESS, comma-separated)")
        scheme, sep, address = item.partition("://")
        if not sep or scheme not in _SCHEMES or not address:
            raise ConfigError(
                f"{where} {item!r} is not tcp://HOST:PORT, ipc://PATH or inproc://NAME"
            )
        if scheme == "tcp":
            host, colon, port = address.rpartition(":")
            if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"{where} {item!r} needs HOST:PORT with a port 1-65535")
        if item in out:
            raise ConfigError(f"{where} {item!r} is listed twice")
        out.append(item)
    if not out:
        raise ConfigError(f"{setting}: no endpoint given")
    return tuple(out)


@dataclass
class DaemonSettings:
    """Fields every daemon has; daemon settings dataclasses subclass this."""

    health_port: int = 0
    health_host: str = "127.0.0.1"
    log_level: str = "info"
    #: log bus frontend the daemon also publishes its log records to ("" = off)
    log_bus: str = bus("log").publish


@dataclass
class ClientSettings:
    """How the CLI and the TUI reach the broker (``PLANTD_CLIENT_*``); ``endpoint`` may list
    several brokers, the client fails over between them."""

    endpoint: Endpoints = LOCAL_BROKER
    timeout: float = 5.0
    retries: int = 0
    scope: str = CLIENT_SCOPE


@dataclass(frozen=True)
class Home:
    """The PLANTD_HOME tree: run/ holds pid files, log/ daemon logs, data/ durable state."""

    root: Path

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def log(self) -> Path:
        return self.root / "log"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def ensure(self) -> Home:
        """Create the tree (idempotent) so callers can write without checking."""
        for d in (self.run, self.log, self.data):
            d.mkdir(parents=True, exist_ok=True)
        return self


def plantd_home(env: Mapping[str, str] | None = None) -> Home:
    """Resolve PLANTD_HOME, defaulting to the platform's per-user state directory."""
    env = os.environ if env is None else env
    raw = env.get("PLANTD_HOME", "").strip()
    if raw:
        return Home(Path(raw).expanduser().absolute())
    import platformdirs  # lazy: only needed when PLANTD_HOME is unset

    return Home(Path(platformdirs.user_state_dir("plantd")))


def env_var(service: str, setting: str) -> str:
    """The environment variable name for a setting: ``PLANTD_<SERVICE>_<SETTING>``."""
    return f"PLANTD_{service.upper()}_{setting.upper()}"


def config_file_for(service: str, env: Mapping[str, str] | None = None) -> Path | None:
    """First existing config file for ``service``, or None (no file is required).

    An explicit ``PLANTD_<SERVICE>_CONFIG`` must exist: a typo there should not silently
    fall back to defaults.
    """
    env = os.environ if env is None else env
    explicit = env.get(env_var(service, "config"), "").strip()
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"{env_var(service, 'config')}={explicit}: config file does not exist"
            )
        return path
    xdg = env.get("XDG_CONFIG_HOME", "").strip()
    user_dir = Path(xdg) if xdg else Path.home() / ".config"
    for candidate in (
        user_dir / "plantd" / f"{service}.yaml",
        Path("/etc/plantd") / f"{service}.yaml",
    ):
        if candidate.is_file():
            return candidate
    return None


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml  # lazy: only when a config file exists

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path}: cannot read config file: {reason}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping of setting: value at top level")
    return {str(k).replace("-", "_"): v for k, v in doc.items()}


def _base_type(tp: Any) -> tuple[Any, bool]:
    """Unwrap ``X | None`` into (X, optional)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def coerce(value: Any, tp: Any, source: str) -> Any:
    """Convert ``value`` (string from env, or YAML scalar) to ``tp``; errors name ``source``."""
    base, optional = _base_type(tp)
    if value is None or (
        optional and isinstance(value, str) and value.strip().lower() in {"", "none", "null"}
    ):
        if optional:
            return None
        raise ConfigError(f"{source}: a value is required")
    if base is Endpoints:
        if isinstance(value, list):
            value = ",".join(map(str, value))
        if not isinstance(value, str):
            raise ConfigError(f"{source}={value!r}: expected endpoints, comma-separated")
        return ",".join(parse_endpoints(value, source))
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            text = str(value).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError
        if base is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, int):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            return int(str(value).strip(), 0)
        if base is float:
            if isinstance(value, bool):
                raise ValueError
            return float(str(value).strip()) if isinstance(value, str) else float(value)
        if base is Path:
            return Path(str(value)).expanduser()
        if base is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
        origin = typing.get_origin(base)
        if origin in (list, tuple) and typing.get_args(base):
            item_tp = typing.get_args(base)[0]
            items = (
                value
                if isinstance(value, list)
                else [p.strip() for p in str(value).split(",") if p.strip()]
            )
            converted = [coerce(v, item_tp, source) for v in items]
            return converted if origin is list else tuple(converted)
    except (ValueError, TypeError):
        name = getattr(base, "__name__", str(base))
        raise ConfigError(f"{source}={value!r}: expected {name}") from None
    return value


def load_settings(
    cls: type[T],
    service: str,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> T:
    """Build ``cls`` (a dataclass) for ``service`` from defaults, file, env and overrides.

    ``overrides`` entries whose value is None are ignored, so CLI flags that were not given
    can be passed straight through.
    """
    env = os.environ if env is None else env
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: hints.get(f.name, str) for f in dataclasses.fields(cls) if f.init}
    values: dict[str, Any] = {}

    path = config_file if config_file is not None else config_file_for(service, env)
    if path is not None:
        for key, raw in _read_yaml(path).items():
            if key not in fields:
                known = ", ".join(sorted(fields))
                raise ConfigError(f"{path}: unknown setting {key!r} (known: {known})")
            values[key] = coerce(raw, fields[key], f"{path}: {key}")

    for name, tp in fields.items():
        var = env_var(service, name)
        if var in env:
            values[name] = coerce(env[var], tp, var)

    for key, raw in (overrides or {}).items():
        if raw is None:
            continue
        key = key.replace("-", "_")
        if key not in fields:
            raise ConfigError(f"unknown setting {key!r} for {service}")
        values[key] = coerce(raw, fields[key], f"--{key.replace('_', '-')}")

    return cls(**values)


def load_client_settings(
    overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> ClientSettings:
    """Client settings for the CLI and TUI (service name ``client``)."""
    return load_settings(ClientSettings, "client", overrides, env)
