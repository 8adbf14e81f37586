"""Checks of the engine settings an operator types in, with the expected form in the message."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from shared.errors import ConfigError

API_PATH = "/ovirt-engine/api"
URL_FORM = "https://ENGINE_HOST[:PORT]/ovirt-engine/api"
_USER = re.compile(r"^[^@\s]+@[^@\s]+$")


def validate_engine_url(url: str) -> str:
    """The URL without a trailing slash, or ConfigError naming the expected form."""
    text = (url or "").strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        raise _bad_url(text, str(e)) from e
    if parts.scheme != "https":
        raise _bad_url(text, "it must use https")
    if not parts.hostname:
        raise _bad_url(text, "it has no host")
    if parts.path.rstrip("/") != API_PATH:
        raise _bad_url(text, f"the path must be {API_PATH}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise _bad_url(text, "it must not carry a query, fragment or credentials")
    return f"https://{parts.netloc}{API_PATH}"


def _bad_url(url: str, why: str) -> ConfigError:
    shown = url if "@" not in url else "(hidden: it contains credentials)"
    return ConfigError(
        f"engine URL {shown or '(empty)'} is invalid: {why}",
        hint=f"expected {URL_FORM}, set engine.url / DROVER_ENGINE__URL",
    )


def validate_username(name: str) -> str:
    """`user@domain` (e.g. admin@internal), or ConfigError."""
    text = (name or "").strip()
    if not _USER.match(text):
        raise ConfigError(
            f"engine user name {text or '(empty)'!r} is invalid: it must be user@domain",
            hint="for example admin@internal; set engine.username / DROVER_ENGINE__USERNAME",
        )
    return text
