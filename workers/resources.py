"""What a task needs to work: the state store, an engine client, a repository.

Built from the worker's settings and the manager document in Redis; never from the
message, so no credentials travel through the broker (or show in Flower).
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import SecretStr

from shared.engine.client import EngineClient, Guard
from shared.errors import ConfigError
from shared.repository.repository import Repository
from shared.sealed import opened_fields
from shared.settings import EngineSettings, get_settings
from shared.state import StateStore


@lru_cache(maxsize=1)
def state_store() -> StateStore:
    return StateStore.from_url(get_settings().redis_url)


def engine_settings(manager: str, store: StateStore | None = None) -> EngineSettings:
    stored = (store or state_store()).document("manager", manager)
    if stored is None:
        raise ConfigError(
            f"manager {manager!r} is not registered", hint="add it with `drover manager add`"
        )
    document = opened_fields(stored)
    return EngineSettings(
        url=document["url"],
        username=document["username"],
        password=SecretStr(document["password"]),
        ca_file=document.get("ca_file", ""),
    )


def connect_engine(manager: str, guard: Guard | None = None) -> EngineClient:
    """A client for `manager`; `guard` runs before every engine mutation (a job's fence)."""
    settings = engine_settings(manager)
    return EngineClient.connect(settings, guard) if guard else EngineClient.connect(settings)


@lru_cache(maxsize=8)
def repository(location: str) -> Repository:
    return Repository.open(location)
