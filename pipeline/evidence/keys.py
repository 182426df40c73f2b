"""The seal signing key: Ed25519, from a file, named by a key id.

The private key is a PEM file (PKCS#8, unencrypted, readable by the sealing process only) named by
ROOMLOGS_SEAL_KEY_FILE; `roomlogs seals keygen --out FILE` makes one. Its key id is the first 16 hex digits
of the SHA-256 of the raw 32-byte public key, and every seal names the key id it was signed with; the
public keys are kept in `seal_keys` (and served by the API at /v1/seal-keys), so a seal signed by a key
since rotated out still verifies. Rotation: make a new key, point the setting at it, restart the sealing
process; it registers the new public key on its first run, and older seals keep verifying with theirs.

Who uses it: the sealing run (`SealKey.load`, `sign`), verifiers (`verify_signature` with a public key
from the database, the API, or a file).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pipeline.errors import ConfigurationError

__all__ = ["SealKey", "key_id_of", "public_key_pem", "read_public_key", "verify_signature"]

ALGORITHM = "ed25519"


def key_id_of(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


@dataclass(frozen=True)
class SealKey:
    key_id: str
    public_raw: bytes
    _private: Ed25519PrivateKey

    @classmethod
    def load(cls, path: str | Path, *, setting: str = "ROOMLOGS_SEAL_KEY_FILE") -> SealKey:
        try:
            key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        except OSError as e:
            raise ConfigurationError(f"{setting}={str(path)!r} cannot be read ({e.strerror})") from None
        except (ValueError, TypeError) as e:
            raise ConfigurationError(
                f"{setting}={str(path)!r} is not an unencrypted PEM private key ({e}): make one with "
                "`roomlogs seals keygen --out FILE`"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigurationError(f"{setting}={str(path)!r} is not an Ed25519 key")
        return cls.of(key)

    @classmethod
    def of(cls, key: Ed25519PrivateKey) -> SealKey:
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls(key_id_of(raw), raw, key)

    @classmethod
    def generate(cls, path: str | Path) -> SealKey:
        """A new key written to `path` (mode 0600; refuses to overwrite)."""
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        return cls.of(key)

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)


def verify_signature(public_raw: bytes, signature: bytes, data: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def public_key_pem(public_raw: bytes) -> str:
    return (
        Ed25519PublicKey.from_public_bytes(public_raw)
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def read_public_key(path: str | Path) -> bytes:
    """A public key file (PEM, as `roomlogs seals keys` and the API give it) as raw bytes."""
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as e:
        raise ConfigurationError(f"{path}: not a readable PEM public key ({e})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigurationError(f"{path}: not an Ed25519 public key")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
