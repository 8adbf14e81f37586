"""The repository's `config` object: its id, format version and chunk size, fixed at creation."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass

from shared.errors import ConfigError
from shared.repository.backend import Backend
from shared.repository.errors import CorruptionError, ObjectNotFound
from shared.repository.manifest import utc_now

CONFIG_NAME = "config"
VERSION = 1
DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024


@dataclass(frozen=True)
class RepositoryConfig:
    id: str
    version: int
    chunk_size: int
    created_at: str


def load_or_create(backend: Backend, create: bool, chunk_size: int | None) -> RepositoryConfig:
    """Read the config; on a new repository write one first (when `create`)."""
    try:
        config = _load(backend)
    except ObjectNotFound:
        if not create:
            raise ConfigError(
                f"there is no Drover repository at {backend.location}",
                hint="check the repository location in the policy, or let Drover create it",
            ) from None
        backend.save(CONFIG_NAME, _new(chunk_size or DEFAULT_CHUNK_SIZE))
        # Two processes creating the same repository at once: the last rename won, use it.
        config = _load(backend)
    if chunk_size is not None and chunk_size != config.chunk_size:
        raise ConfigError(
            f"repository {backend.location} uses {config.chunk_size}-byte chunks, not {chunk_size}",
            hint="leave the chunk size unset for an existing repository",
        )
    return config


def _new(chunk_size: int) -> bytes:
    if chunk_size <= 0 or chunk_size % 4096:
        raise ConfigError(
            f"chunk size {chunk_size} is not a positive multiple of 4 KiB",
            hint="use the default (4 MiB) or a size like 1MiB, 8MiB",
        )
    config = RepositoryConfig(uuid.uuid4().hex, VERSION, chunk_size, utc_now())
    return json.dumps(asdict(config), indent=2).encode() + b"\n"


def _load(backend: Backend) -> RepositoryConfig:
    raw = backend.load(CONFIG_NAME)
    try:
        data = json.loads(raw)
        config = RepositoryConfig(
            str(data["id"]), int(data["version"]), int(data["chunk_size"]), str(data["created_at"])
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptionError(
            f"the config of repository {backend.location} is unreadable ({exc})",
            hint="restore the `config` file from a copy of the repository",
        ) from exc
    if config.version > VERSION:
        raise ConfigError(
            f"repository {backend.location} has format version {config.version}; "
            f"this Drover reads up to {VERSION}",
            hint="upgrade Drover on this machine",
        )
    return config
