"""Private keys from PEM files, with one-line errors naming the file and its role."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from inclavare.errors import ConfigError


def load_private_key(path: str, role: str) -> PrivateKeyTypes:
    """Read an unencrypted PEM private key; ``role`` names it in errors (e.g. "admin key")."""
    try:
        with open(path, "rb") as fh:
            return load_pem_private_key(fh.read(), password=None)
    except OSError as exc:
        raise ConfigError(f"cannot read {role} {path}: {exc.strerror}") from exc
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{role} {path} is not an unencrypted PEM private key") from exc
