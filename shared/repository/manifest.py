"""What one backup holds: per disk, the digest of every non-zero chunk of the full image.

An incremental's manifest holds the full resolved map (its changed chunks over its parent's), so
every backup restores on its own; an index missing from `chunks` is a chunk of zeros.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, cast

from shared.errors import ConfigError

FORMATS = ("raw", "cow")  # the disk's format on the storage domain; chunks are always raw data
KINDS = ("full", "incremental")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_id(value: str, what: str) -> str:
    """Ids become object names, so they are restricted to a safe alphabet."""
    if not _ID.match(value):
        raise ConfigError(
            f"{what} {value!r} is not a valid id",
            hint="use letters, digits, '.', '_' and '-' (at most 128, not starting with a dot)",
        )
    return value


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class DiskManifest:
    disk_id: str
    name: str
    size: int
    format: str
    chunk_size: int
    chunks: dict[int, str]
    sha256: str | None = None
    # snapshot-chain backups: the qcow2 layers read, bottom up (volume id, format, bytes)
    chain: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_id(self.disk_id, "disk id")
        if self.format not in FORMATS:
            raise ConfigError(f"disk format {self.format!r} is neither 'raw' nor 'cow'")
        if self.size < 0 or self.chunk_size <= 0:
            raise ConfigError(f"disk {self.disk_id}: size and chunk size must be positive")
        beyond = [index for index in self.chunks if not 0 <= index < self.chunk_count]
        if beyond:
            raise ConfigError(
                f"disk {self.disk_id}: chunk index {beyond[0]} is outside a "
                f"{self.size}-byte disk of {self.chunk_size}-byte chunks"
            )

    @property
    def chunk_count(self) -> int:
        return -(-self.size // self.chunk_size)

    def chunk_length(self, index: int) -> int:
        return min(self.chunk_size, self.size - index * self.chunk_size)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["chunks"] = {str(index): digest for index, digest in sorted(self.chunks.items())}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DiskManifest:
        values = _known(cls, data)
        values["chunks"] = {int(index): str(d) for index, d in data.get("chunks", {}).items()}
        return cls(**values)


@dataclass(frozen=True)
class Manifest:
    backup_id: str
    vm_id: str
    vm_name: str
    kind: str
    parent_id: str | None
    mode: str
    created_at: str
    ovf: str
    checkpoint_id: str | None
    disks: list[DiskManifest]
    warnings: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_id(self.backup_id, "backup id")
        if self.kind not in KINDS:
            raise ConfigError(f"backup kind {self.kind!r} is neither 'full' nor 'incremental'")
        if self.kind == "incremental" and not self.parent_id:
            raise ConfigError(f"incremental backup {self.backup_id} names no parent backup")

    def disk(self, disk_id: str) -> DiskManifest:
        for disk in self.disks:
            if disk.disk_id == disk_id:
                return disk
        known = ", ".join(d.disk_id for d in self.disks) or "none"
        raise ConfigError(
            f"backup {self.backup_id} has no disk {disk_id!r}", hint=f"its disks are: {known}"
        )

    def summary(self) -> BackupSummary:
        return BackupSummary(
            **{f.name: getattr(self, f.name) for f in fields(BackupSummary) if f.name != "disks"},
            disks=[DiskSummary(d.disk_id, d.name, d.size, d.format) for d in self.disks],
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["disks"] = [disk.to_dict() for disk in self.disks]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        values = _known(cls, data)
        values["disks"] = [DiskManifest.from_dict(disk) for disk in data.get("disks", [])]
        return cls(**values)


@dataclass(frozen=True)
class DiskSummary:
    disk_id: str
    name: str
    size: int
    format: str


@dataclass(frozen=True)
class BackupSummary:
    """A manifest without its chunk maps and OVF: cheap to list by the thousand."""

    backup_id: str
    vm_id: str
    vm_name: str
    kind: str
    parent_id: str | None
    mode: str
    created_at: str
    checkpoint_id: str | None
    disks: list[DiskSummary]
    warnings: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BackupSummary:
        values = _known(cls, data)
        values["disks"] = [DiskSummary(**_known(DiskSummary, d)) for d in data.get("disks", [])]
        return cls(**values)


def resolve_chunks(
    parent: Mapping[int, str], changed: Mapping[int, str | None], size: int, chunk_size: int
) -> dict[int, str]:
    """An incremental's full map: the parent's chunks, overlaid by the changed ones.

    `changed` maps each re-read chunk index to its new digest, or None when it is now zeros.
    Indexes beyond a disk that shrank are dropped.
    """
    count = -(-size // chunk_size)
    merged = {index: digest for index, digest in parent.items() if index < count}
    for index, digest in changed.items():
        if digest is None:
            merged.pop(index, None)
        else:
            merged[index] = digest
    return merged


def _known(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """Only the fields `cls` knows, so newer manifests with extra fields still load."""
    names = {f.name for f in fields(cast(Any, cls))}
    return {key: value for key, value in data.items() if key in names}
