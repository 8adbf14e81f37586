"""Opening an `ovirtsdk4.Connection` from EngineSettings, after checking them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ovirtsdk4 as sdk

from shared.engine.validation import validate_engine_url, validate_username
from shared.errors import ConfigError
from shared.settings import EngineSettings

REQUEST_TIMEOUT_S = 300


def open_connection(settings: EngineSettings, *, timeout_s: int = REQUEST_TIMEOUT_S) -> Any:
    """An unauthenticated SDK connection (it logs in on the first request)."""
    url = validate_engine_url(settings.url)
    username = validate_username(settings.username)
    password = settings.password.get_secret_value()
    if not password:
        raise ConfigError(
            f"no password for engine user {username}",
            hint="set engine.password / DROVER_ENGINE__PASSWORD",
        )
    return sdk.Connection(
        url=url,
        username=username,
        password=password,
        ca_file=_ca_file(settings.ca_file),
        timeout=timeout_s,
    )


def _ca_file(path: str) -> str | None:
    """The engine CA file, or None to trust the system's CAs."""
    if not path:
        return None
    if not Path(path).is_file():
        raise ConfigError(
            f"engine CA file {path} does not exist",
            hint="download it from https://ENGINE_HOST/ovirt-engine/services/pki-resource"
            "?resource=ca-certificate&format=X509-PEM-CA and set engine.ca_file",
        )
    return path
