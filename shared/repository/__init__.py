"""The backup repository: content-addressed, compressed chunks and one manifest per backup."""

from shared.repository.backend import Backend
from shared.repository.chunks import digest_of, is_zero
from shared.repository.config import DEFAULT_CHUNK_SIZE, RepositoryConfig
from shared.repository.errors import BackupNotFound, CorruptionError, ObjectNotFound
from shared.repository.local import LocalBackend
from shared.repository.maintenance import CheckReport, PruneReport
from shared.repository.manifest import (
    BackupSummary,
    DiskManifest,
    DiskSummary,
    Manifest,
    resolve_chunks,
    utc_now,
)
from shared.repository.memory import MemoryBackend
from shared.repository.repository import Repository

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "Backend",
    "BackupNotFound",
    "BackupSummary",
    "CheckReport",
    "CorruptionError",
    "DiskManifest",
    "DiskSummary",
    "LocalBackend",
    "Manifest",
    "MemoryBackend",
    "ObjectNotFound",
    "PruneReport",
    "Repository",
    "RepositoryConfig",
    "digest_of",
    "is_zero",
    "resolve_chunks",
    "utc_now",
]
