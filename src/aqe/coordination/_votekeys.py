"""Ed25519 keys for voters, key files, and the signed bytes of a vote.

Public through :mod:`aqe.coordination.voting`; see its docstring for :func:`vote_bytes`.
Key files: ``<dir>/<agent>.key`` holds the private key as unencrypted PKCS#8 PEM, created
with mode 0600 (a raw 32-byte seed in base64 is read too); ``<dir>/<agent>.pub`` holds the
raw 32-byte public key in base64, the form ``Voter.public_key`` stores. ``<agent>`` is the
agent id made path-safe (:func:`aqe.log.encode_token`).
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from aqe.errors import ConfigError
from aqe.events import VoteCast
from aqe.log.subjects import encode_token

__all__ = [
    "KeyFiles",
    "KeyPair",
    "generate_keypair",
    "key_file_stem",
    "load_private_key",
    "load_public_key",
    "public_key_b64",
    "sign_vote",
    "verify_vote",
    "vote_bytes",
    "write_keypair",
]

_VOTE_DOMAIN = b"aqe.coord.vote.v1\x00"


@dataclass(frozen=True)
class KeyPair:
    """An Ed25519 private key and its public key (raw 32 bytes, base64)."""

    private_key: Ed25519PrivateKey
    public_key: str


class KeyFiles(msgspec.Struct, frozen=True, kw_only=True):
    """Where :func:`write_keypair` put an agent's keys."""

    agent_id: str
    private_path: str
    public_path: str
    public_key: str


def generate_keypair() -> KeyPair:
    """A fresh Ed25519 key pair."""
    key = Ed25519PrivateKey.generate()
    return KeyPair(key, public_key_b64(key))


def public_key_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The raw 32-byte public key, base64: the form ``Voter.public_key`` stores."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def load_public_key(value: str, *, field: str = "public key") -> Ed25519PublicKey:
    """Parse a base64 raw Ed25519 public key.

    Raises:
        ConfigError: not base64 of exactly 32 bytes (the message names ``field``).
    """
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{field}: not base64: {value!r}") from None
    if len(raw) != 32:
        raise ConfigError(f"{field}: an Ed25519 public key is 32 bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def key_file_stem(agent_id: str) -> str:
    """The file name (without suffix) of an agent's keys: its id, made path-safe."""
    return encode_token(agent_id)


def write_keypair(
    directory: Path, agent_id: str, keypair: KeyPair | None = None, *, overwrite: bool = False
) -> KeyFiles:
    """Write ``<dir>/<agent>.key`` (PKCS#8 PEM, mode 0600) and ``<dir>/<agent>.pub``.

    Raises:
        ConfigError: the key file exists and ``overwrite`` is False.
    """
    keypair = keypair or generate_keypair()
    directory.mkdir(parents=True, exist_ok=True)
    stem = key_file_stem(agent_id)
    private_path, public_path = directory / f"{stem}.key", directory / f"{stem}.pub"
    pem = keypair.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        # Created 0600 from the start: the key is never readable by others, not even briefly.
        fd = os.open(private_path, flags, 0o600)
    except FileExistsError:
        raise ConfigError(
            f"key file {private_path} already exists for agent {agent_id!r} (use --force)"
        ) from None
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    os.chmod(private_path, 0o600)
    public_path.write_text(keypair.public_key + "\n", encoding="ascii")
    return KeyFiles(
        agent_id=agent_id,
        private_path=str(private_path),
        public_path=str(public_path),
        public_key=keypair.public_key,
    )


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read a private key file: PKCS#8 PEM, or the raw 32-byte seed in base64.

    Raises:
        ConfigError: missing, readable by group or others (as ssh refuses), or not an
            Ed25519 private key; the message names the file.
    """
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"key file {path}: {exc.strerror or exc}") from None
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"key file {path} is accessible by others (mode {stat.S_IMODE(mode):o}); "
            f"run `chmod 600 {path}`"
        )
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"key file {path}: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"key file {path}: not an Ed25519 key ({type(key).__name__})")
        return key
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"key file {path}: neither PEM nor base64") from None
    if len(raw) != 32:
        raise ConfigError(f"key file {path}: an Ed25519 seed is 32 bytes, got {len(raw)}")
    return Ed25519PrivateKey.from_private_bytes(raw)


def vote_bytes(proposal_id: str, voter: str, choice: str) -> bytes:
    """The canonical bytes a vote signature covers (see the module docstring)."""
    out = bytearray(_VOTE_DOMAIN)
    for value in (proposal_id, voter, choice):
        encoded = value.encode("utf-8")
        out += len(encoded).to_bytes(4, "big")
        out += encoded
    return bytes(out)


def sign_vote(private_key: Ed25519PrivateKey, proposal_id: str, voter: str, choice: str) -> str:
    """Sign a vote; returns the 64-byte signature in base64 (``VoteCast.signature``)."""
    signature = private_key.sign(vote_bytes(proposal_id, voter, choice))
    return base64.b64encode(signature).decode("ascii")


def verify_vote(public_key: Ed25519PublicKey, vote: VoteCast) -> bool:
    """True when ``vote.signature`` is the voter's key's signature over its fields."""
    try:
        signature = base64.b64decode(vote.signature, validate=True)
    except (binascii.Error, ValueError):
        return False
    if len(signature) != 64:
        return False
    try:
        public_key.verify(signature, vote_bytes(vote.proposal_id, vote.voter, vote.choice))
    except InvalidSignature:
        return False
    return True
