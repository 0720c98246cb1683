"""Principal key pairs on disk, in the czmq zcert text format pyzmq reads.

Layout of the keyring (``$PLANTD_HOME/identity/``, see docs/security.md)::

    identity/                       0700
      broker.key                    the broker's public key (give it to every client)
      broker.key_secret             the broker's secret key, 0600
      principals/<name>.key         public key of every principal this host knows
      secrets/<name>.key_secret     0600; only for principals that live on this host
      principals.db                 the registry (plantd.identity.principals)
      audit.db, audit.db.head       the audit log and its head sidecar (plantd.identity.audit)
      policy.yaml                   optional extra roles and rules (plantd.identity.policy)

Secrets are written with mode 0600 from the start (a temporary file opened 0600, fsynced,
then renamed over the target): pyzmq's ``create_certificates`` honours the umask and
writes them 0644 (security-notes trap 3). :func:`check_secret_file` refuses a secret that
group or others can read, naming the file and the fix.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from plantd.security.errors import InsecureKeyFile, InvalidArgument, NotFound

#: the 85 characters of Z85 (ZeroMQ RFC 32)
Z85_ALPHABET = frozenset(
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
)
#: a CURVE key is 32 bytes, 40 characters in Z85
Z85_KEY_LENGTH = 40
PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
BROKER = "broker"


@dataclass(frozen=True)
class KeyPair:
    """A CURVE key pair as Z85 text; ``secret`` is None for a public-only certificate."""

    public: str
    secret: str | None = None


def validate_z85_key(key: str, field: str = "public_key") -> str:
    """``key`` if it is a 40-character Z85 CURVE key, else InvalidArgument naming ``field``."""
    if len(key) != Z85_KEY_LENGTH:
        raise InvalidArgument(
            f"{field}: a CURVE key is {Z85_KEY_LENGTH} Z85 characters, got {len(key)}", field
        )
    bad = sorted(set(key) - Z85_ALPHABET)
    if bad:
        raise InvalidArgument(f"{field}: not a Z85 character: {bad[0]!r}", field)
    return key


def generate_keypair() -> KeyPair:
    """A fresh CURVE key pair (libzmq's generator)."""
    import zmq

    public, secret = zmq.curve_keypair()
    return KeyPair(public.decode("ascii"), secret.decode("ascii"))


def _zcert_text(name: str, pair: KeyPair, *, secret: bool) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    kind = "**Secret** " if secret else ""
    lines = [
        f"#   ****  Generated on {when} UTC by plantd  ****",
        f"#   ZeroMQ CURVE {kind}Certificate",
        "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions."
        if secret
        else "#   Exchange securely, or use a secure mechanism to verify the contents",
        "",
        "metadata",
        f'    name = "{name}"',
        "curve",
        f'    public-key = "{pair.public}"',
    ]
    if secret:
        lines.append(f'    secret-key = "{pair.secret}"')
    return "\n".join(lines) + "\n"


def write_durably(path: Path, text: str, mode: int) -> None:
    """Write ``text`` to ``path`` atomically and durably (temporary file, fsync, rename,
    directory fsync), with ``mode`` from the first byte on (not the umask's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # left by a crash of an earlier process with this pid
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # O_CREAT's mode is masked by the umask; fchmod is not
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_public(path: Path, name: str, public: str) -> None:
    """Write a public certificate (0644: public keys are meant to be shared)."""
    validate_z85_key(public)
    write_durably(path, _zcert_text(name, KeyPair(public), secret=False), 0o644)


def write_secret(path: Path, name: str, pair: KeyPair) -> None:
    """Write a secret certificate (public + secret), 0600, atomically."""
    if pair.secret is None:
        raise InvalidArgument("secret_key: a secret certificate needs the secret key", "secret")
    validate_z85_key(pair.public)
    validate_z85_key(pair.secret, "secret_key")
    write_durably(path, _zcert_text(name, pair, secret=True), 0o600)


def check_secret_file(path: Path) -> None:
    """Refuse a secret key file that group or others can read (one line naming the file)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        raise NotFound(f"{path}: secret key file does not exist") from None
    if mode & 0o077:
        raise InsecureKeyFile(
            f"{path}: secret key file is readable by group or others (mode {mode:04o});"
            f" run 'chmod 600 {path}'",
            str(path),
        )


def read_certificate(path: Path) -> KeyPair:
    """Parse a zcert file (ours or pyzmq's): the public key and, if present, the secret."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFound(f"{path}: key file does not exist") from None
    values: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "=" not in stripped:
            continue
        field, _, raw = stripped.partition("=")
        value = raw.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        values.setdefault(field.strip(), value)
        if field.strip() in ("public-key", "secret-key"):
            try:
                validate_z85_key(value, field.strip())
            except InvalidArgument as exc:
                raise InvalidArgument(f"{path}:{lineno}: {exc}", field.strip()) from None
    if "public-key" not in values:
        raise InvalidArgument(f"{path}: no public-key in the certificate", "public-key")
    return KeyPair(values["public-key"], values.get("secret-key"))


def load_secret(path: Path) -> KeyPair:
    """A secret certificate, after :func:`check_secret_file`."""
    check_secret_file(path)
    pair = read_certificate(path)
    if pair.secret is None:
        raise InvalidArgument(f"{path}: no secret-key in the certificate", "secret-key")
    return pair


@dataclass(frozen=True)
class Keyring:
    """Paths of the keyring under ``$PLANTD_HOME/identity`` (nothing is created here)."""

    root: Path

    @classmethod
    def at_home(cls, home: Path) -> Keyring:
        return cls(home / "identity")

    @property
    def principals_dir(self) -> Path:
        return self.root / "principals"

    @property
    def secrets_dir(self) -> Path:
        return self.root / "secrets"

    @property
    def broker_public(self) -> Path:
        return self.root / (BROKER + PUBLIC_SUFFIX)

    @property
    def broker_secret(self) -> Path:
        return self.root / (BROKER + SECRET_SUFFIX)

    @property
    def registry(self) -> Path:
        return self.root / "principals.db"

    @property
    def audit(self) -> Path:
        return self.root / "audit.db"

    @property
    def policy(self) -> Path:
        return self.root / "policy.yaml"

    def public_path(self, name: str) -> Path:
        return self.principals_dir / (name + PUBLIC_SUFFIX)

    def secret_path(self, name: str) -> Path:
        return self.secrets_dir / (name + SECRET_SUFFIX)

    def ensure(self) -> Keyring:
        """Create the directories, private to the user (0700; public keys stay readable
        by whoever the user lets into the tree)."""
        for d in (self.root, self.principals_dir, self.secrets_dir):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)
        return self


def default_identity_path(home: Path) -> Path:
    """The key the CLI uses when neither ``--identity`` nor ``PLANTD_CLIENT_IDENTITY`` is
    given: the ``admin`` principal that ``plant identity init`` creates."""
    return Keyring.at_home(home).secret_path("admin")


def client_identity_path(explicit: str | None, home: Path, env: dict[str, str]) -> tuple[Path, str]:
    """Which key a client uses, and why: ``--identity``, then ``PLANTD_CLIENT_IDENTITY``,
    then :func:`default_identity_path`. Either may name a principal of this host's keyring
    (``--identity vic``) instead of a secret key file."""
    if explicit:
        return _identity_file(explicit, home), "--identity"
    from_env = env.get("PLANTD_CLIENT_IDENTITY", "").strip()
    if from_env:
        return _identity_file(from_env, home), "PLANTD_CLIENT_IDENTITY"
    return default_identity_path(home), "default"


def _identity_file(given: str, home: Path) -> Path:
    """A path as given, or a bare name that is no file here: that principal's secret."""
    path = Path(given).expanduser()
    if os.sep in given or path.exists() or given.endswith(SECRET_SUFFIX):
        return path
    return Keyring.at_home(home).secret_path(given)
