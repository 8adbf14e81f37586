"""Typed settings, built once from the environment (DROVER_*) and an optional YAML file.

The YAML file is named by DROVER_CONFIG; environment variables win over the file.
Nested keys use a double underscore: DROVER_ENGINE__PASSWORD.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from shared.errors import ConfigError

CONFIG_ENV = "DROVER_CONFIG"


class EngineSettings(BaseModel):
    """The oVirt / OLVM / RHV engine Drover talks to."""

    url: str = ""  # https://HOST/ovirt-engine/api
    username: str = "admin@internal"
    password: SecretStr = SecretStr("")
    ca_file: str = ""


class LogSettings(BaseModel):
    level: str = "INFO"
    format: Literal["auto", "console", "json"] = "auto"  # auto: console on a terminal


class WorkerSettings(BaseModel):
    concurrency: int = 2
    task_time_limit_s: int = 6 * 3600
    # A Redis broker re-delivers a message its worker has not acknowledged after this long;
    # live workers keep refreshing theirs (workers.liveness), so it bounds how long the
    # message of a worker that died waits for another worker.
    visibility_timeout_s: int = 120


class SshSettings(BaseModel):
    """SSH transfer mode."""

    # netcat: the workers listen for the hosts' data connections on a port of this range
    netcat_ports: tuple[int, int] = (50000, 50099)
    netcat_bind: str = ""  # empty: the address the worker reaches the host from
    connections: int = 4  # readers (agents) per disk at once


class ProxySettings(BaseModel):
    """A proxy-VM worker (`drover worker --proxy`, disk attachment mode)."""

    root: Path = Path("/")  # where the node's /sys, /etc and /dev are (tests: a lab proxy's root)
    manager: str = ""  # the engine the proxy VM belongs to; empty: the only registered one


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DROVER_", env_nested_delimiter="__", extra="ignore"
    )

    redis_url: str = "redis://127.0.0.1:6379/0"
    broker_url: str = ""  # defaults to redis_url; amqp://... works too
    state_dir: Path = Path("~/.local/share/drover").expanduser()
    engine: EngineSettings = Field(default_factory=EngineSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    api_tokens: list[SecretStr] = Field(default_factory=list)
    api_url: str = "http://127.0.0.1:8400"  # where the CLI finds the API
    api_token: SecretStr = SecretStr("")  # the CLI's bearer token (one of api_tokens)
    repository: str = ""  # default backup repository; empty: <state_dir>/repository
    flower_user: str = ""
    flower_password: SecretStr = SecretStr("")
    secret_key: SecretStr = SecretStr("")  # seals stored secrets (shared.sealed)
    ssh: SshSettings = Field(default_factory=SshSettings)
    proxy: ProxySettings = Field(default_factory=ProxySettings)

    @property
    def default_repository(self) -> str:
        return self.repository or str(self.state_dir / "repository")

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))


class _YamlSource(PydanticBaseSettingsSource):
    """Values from the YAML file named by DROVER_CONFIG, below the environment."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get(CONFIG_ENV)
        return read_yaml(Path(path)) if path else {}


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}", hint=f"check {CONFIG_ENV}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings, not {type(data).__name__}")
    return data


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as e:
        raise ConfigError(
            f"invalid settings: {_summary(e)}", hint="check DROVER_* and the YAML file"
        ) from e


def _summary(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in error.errors()
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
