"""Secrets at rest: what Drover must keep (engine and host passwords, SSH keys) is stored sealed.

Sealed with Fernet (AES-128-CBC + HMAC-SHA256) under the fleet's key: `DROVER_SECRET_KEY`,
or the file `<state_dir>/secret.key`, made (mode 0600) the first time it is needed. The API
and the workers must share the key: set `DROVER_SECRET_KEY` on every node of a fleet that does
not share its state directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from shared.errors import ConfigError
from shared.settings import Settings, get_settings

KEY_FILE = "secret.key"


def fleet_key(settings: Settings | None = None) -> bytes:
    settings = settings or get_settings()
    configured = settings.secret_key.get_secret_value()
    if configured:
        return configured.encode()
    return _key_file(settings.state_dir / KEY_FILE)


def _key_file(path: Path) -> bytes:
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


def seal(secret: str, key: bytes | None = None) -> str:
    if not secret:
        return ""
    return _fernet(key).encrypt(secret.encode()).decode()


def unseal(token: str, key: bytes | None = None) -> str:
    if not token:
        return ""
    try:
        return _fernet(key).decrypt(token.encode()).decode()
    except InvalidToken:
        raise ConfigError(
            "a stored secret cannot be opened with this node's secret key",
            hint="give every node the same DROVER_SECRET_KEY, then register the secret again",
        ) from None


def _fernet(key: bytes | None) -> Fernet:
    try:
        return Fernet(key or fleet_key())
    except ValueError:
        raise ConfigError(
            "DROVER_SECRET_KEY is not a Fernet key",
            hint='make one with python -c "from cryptography.fernet import Fernet; '
            'print(Fernet.generate_key().decode())"',
        ) from None


SEALED = "sealed"  # a stored document's list of the fields it holds sealed


def sealed_fields(
    document: dict[str, Any], fields: tuple[str, ...], key: bytes | None = None
) -> dict[str, Any]:
    """The document to store: `fields` sealed, and named under SEALED."""
    values = {f: seal(str(document[f]), key) for f in fields}
    return document | values | {SEALED: list(fields)}


def opened_fields(document: dict[str, Any], key: bytes | None = None) -> dict[str, Any]:
    """A stored document as it was given: its sealed fields opened (a document written
    before secrets were sealed holds them as they are)."""
    names = document.get(SEALED) or []
    opened = {k: v for k, v in document.items() if k != SEALED}
    return opened | {f: unseal(str(document[f]), key) for f in names}
