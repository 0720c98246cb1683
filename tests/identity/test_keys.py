"""Key files: zcert format both ways with pyzmq, 0600 secrets whatever the umask, and the
refusal of a group/world-readable secret."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
import zmq.auth

from plantd.security.errors import InsecureKeyFile, InvalidArgument, NotFound
from plantd.security.keys import (
    Keyring,
    check_secret_file,
    client_identity_path,
    default_identity_path,
    generate_keypair,
    load_secret,
    read_certificate,
    write_public,
    write_secret,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secret_is_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    pair = generate_keypair()
    old = os.umask(0)
    try:
        write_secret(tmp_path / "x.key_secret", "x", pair)
    finally:
        os.umask(old)
    assert mode(tmp_path / "x.key_secret") == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["x.key_secret"]  # no temp file left


def test_our_files_are_read_by_pyzmq_and_pyzmqs_by_us(tmp_path: Path) -> None:
    pair = generate_keypair()
    write_secret(tmp_path / "a.key_secret", "a", pair)
    write_public(tmp_path / "a.key", "a", pair.public)
    public, secret = zmq.auth.load_certificate(tmp_path / "a.key_secret")
    assert (public.decode(), secret.decode() if secret else None) == (pair.public, pair.secret)
    assert zmq.auth.load_certificate(tmp_path / "a.key")[1] is None
    pub_file, secret_file = zmq.auth.create_certificates(tmp_path, "b")
    theirs = read_certificate(Path(secret_file))
    assert (theirs.public, theirs.secret) == tuple(
        k.decode() if k else None for k in zmq.auth.load_certificate(secret_file)
    )
    assert read_certificate(Path(pub_file)).secret is None


@pytest.mark.parametrize("bits", [0o640, 0o604, 0o644, 0o660])
def test_group_or_world_readable_secret_is_refused_in_one_line(tmp_path: Path, bits: int) -> None:
    path = tmp_path / "s.key_secret"
    write_secret(path, "s", generate_keypair())
    path.chmod(bits)
    with pytest.raises(InsecureKeyFile) as err:
        load_secret(path)
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message and f"{bits:04o}" in message and "chmod 600" in message
    assert isinstance(err.value, PermissionError)


def test_missing_secret_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        check_secret_file(tmp_path / "nope")


def test_corrupt_key_names_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.key"
    path.write_text('curve\n    public-key = "tooshort"\n')
    with pytest.raises(InvalidArgument, match=r"bad.key:2: public-key: a CURVE key is 40"):
        read_certificate(path)


def test_identity_lookup_order(tmp_path: Path) -> None:
    assert client_identity_path("/x/id", tmp_path, {"PLANTD_CLIENT_IDENTITY": "/y"}) == (
        Path("/x/id"),
        "--identity",
    )
    assert client_identity_path(None, tmp_path, {"PLANTD_CLIENT_IDENTITY": "/y"}) == (
        Path("/y"),
        "PLANTD_CLIENT_IDENTITY",
    )
    assert client_identity_path(None, tmp_path, {}) == (default_identity_path(tmp_path), "default")
    assert default_identity_path(tmp_path) == Keyring.at_home(tmp_path).secret_path("admin")


def test_identity_may_name_a_principal_of_this_keyring(tmp_path: Path, monkeypatch: Any) -> None:
    ring = Keyring.at_home(tmp_path)
    assert client_identity_path("vic", tmp_path, {}) == (ring.secret_path("vic"), "--identity")
    assert client_identity_path(None, tmp_path, {"PLANTD_CLIENT_IDENTITY": "vic"})[0] == (
        ring.secret_path("vic")
    )
    # a file of that name in the working directory is taken as a file
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vic").write_text("")
    assert client_identity_path("vic", tmp_path, {}) == (Path("vic"), "--identity")
    assert client_identity_path("./vic", tmp_path, {})[0] == Path("./vic")
