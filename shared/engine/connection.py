"""Opening an `ovirtsdk4.Connection` from EngineSettings, after checking them.

The connection is the SDK's, told to say who answered when something failed: a 5xx that is
not the engine API's XML keeps its status (the SDK would only report the content type), and
an SSO answer that is neither a token nor an SSO error raises `SsoUnavailable`. The retry
policy (`shared.engine.retry`) needs both to know whether a request reached the engine.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import ovirtsdk4 as sdk

from shared.engine.errors import SsoUnavailable
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
    return EngineConnection(
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


_XML = re.compile(r"^\s*(?:application|text)/xml", re.IGNORECASE)


class EngineConnection(sdk.Connection):  # type: ignore[misc]  # ovirtsdk4 has no type hints
    def wait(self, context: Any, failed_auth: bool = False) -> Any:
        response = super().wait(context, failed_auth)
        content_type = self._get_header_value(response.headers, "content-type") or ""
        if response.code >= 500 and not _XML.match(content_type):
            reason = f" {response.reason}" if getattr(response, "reason", "") else ""
            raise sdk.Error(
                f"HTTP response code is {response.code}{reason}, not from the engine API.",
                response.code,
            )
        return response

    def _get_access_token(self) -> Any:
        try:
            return super()._get_access_token()
        except sdk.AuthError:
            raise
        except (sdk.Error, ValueError) as e:  # e.g. a proxy's HTML page instead of JSON
            raise SsoUnavailable(str(e)) from e
