"""Registered engines ("managers"): the model, its checks and what the API may show of it.

The password is stored sealed (workers need it to talk to the engine, `shared.sealed`) and never
shown: every view for an operator replaces it with `***`.

`connect` is how the orchestrator reaches an engine: it first checks, within
PROBE_TIMEOUT_S, that something answers HTTP at the engine URL, because the SDK's login has no
timeout of its own (libcurl waits up to 300 s for a connection that nobody answers).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from orchestrator.policies import NAME_HINT, NAME_PATTERN
from shared.engine.errors import EngineUnreachable
from shared.engine.validation import validate_engine_url, validate_username
from shared.errors import ConfigError
from shared.settings import EngineSettings

if TYPE_CHECKING:
    from shared.engine.client import EngineClient

KIND = "manager"
HIDDEN = "***"
SECRETS = ("password",)  # stored sealed
PROBE_TIMEOUT_S = 5.0  # for each of connecting, sending and reading the answer


class Manager(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    name: str = Field(pattern=NAME_PATTERN)
    url: str
    username: str
    password: SecretStr
    ca_file: str = ""

    def engine_settings(self) -> EngineSettings:
        return EngineSettings(
            url=self.url, username=self.username, password=self.password, ca_file=self.ca_file
        )

    def document(self) -> dict[str, Any]:
        """What is stored: everything, the password included."""
        return self.model_dump() | {"password": self.password.get_secret_value()}

    def public(self) -> dict[str, Any]:
        return self.model_dump() | {"password": HIDDEN}


def checked_manager(manager: Manager) -> Manager:
    """The manager with its URL and user name normalised, or a ConfigError saying what is wrong."""
    if not manager.password.get_secret_value():
        raise ConfigError(
            f"manager {manager.name!r}: the password is empty",
            hint="give the engine user's password",
        )
    if manager.ca_file and not Path(manager.ca_file).is_file():
        raise ConfigError(
            f"manager {manager.name!r}: CA file {manager.ca_file} does not exist on the API host",
            hint="copy the engine CA (pki-resource?resource=ca-certificate) there, "
            "at the same path on the workers",
        )
    return manager.model_copy(
        update={
            "url": validate_engine_url(manager.url),
            "username": validate_username(manager.username),
        }
    )


def connect(settings: EngineSettings) -> EngineClient:
    """`EngineClient.connect`, after `probe` found the engine answering; an API caller
    waits for an engine outage seconds, not the workers' minutes."""
    from shared.engine.client import EngineClient
    from shared.engine.retry import INTERACTIVE

    probe(settings.url, PROBE_TIMEOUT_S)
    return EngineClient.connect(settings, retry=INTERACTIVE)


def probe(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """EngineUnreachable unless something answers HTTP at the engine URL within `timeout_s`.

    Only reachability is probed: any answer will do (the API answers 401 without
    credentials), no credentials are sent, and the certificate is left to the SDK, which
    checks it against the manager's CA file when it logs in right after.
    """
    url = validate_engine_url(url)
    try:
        with (
            httpx.Client(verify=False, timeout=timeout_s) as client,  # reachability only
            client.stream("GET", url),  # the status line and headers; the body is not read
        ):
            pass
    except httpx.TimeoutException:
        reason = f"no answer within {timeout_s:g} s"
    except httpx.HTTPError as e:
        reason = str(e) or type(e).__name__
    else:
        return
    raise EngineUnreachable(
        f"the engine at {url} does not answer: {reason}",
        hint="check the engine URL, the network and that the engine is up",
        reached=False,
    )


def manager_from(data: dict[str, Any]) -> Manager:
    """A Manager from input or a stored document, with a readable error."""
    try:
        return Manager.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"manager: {_summary(e)}") from None


def _summary(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "manager"
        if item["type"] == "string_pattern_mismatch":
            parts.append(f"{where} is not a valid name: {NAME_HINT}")
        elif item["type"] == "extra_forbidden":
            parts.append(f"unknown key {where!r} (allowed: {', '.join(Manager.model_fields)})")
        elif item["type"] == "missing":
            parts.append(f"{where} is required")
        else:
            parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)
