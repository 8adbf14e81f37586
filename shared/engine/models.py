"""Typed values the engine client returns; plain data, no SDK objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

DiskFormat = Literal["raw", "cow"]
Direction = Literal["download", "upload"]


@dataclass(frozen=True)
class DiskInfo:
    id: str
    name: str
    size: int  # provisioned (virtual) size in bytes
    format: DiskFormat
    storage_domain_id: str
    image_id: str  # the active volume
    backup: str  # "incremental" | "none"
    interface: str = ""  # of the VM's attachment, e.g. "virtio_scsi"; "" when not attached
    bootable: bool = False
    status: str = ""  # "ok" | "locked" | "illegal"


@dataclass(frozen=True)
class VmInfo:
    id: str
    name: str
    cluster_id: str
    cluster_name: str
    status: str  # "up", "down", ...
    disks: list[DiskInfo] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    host_id: str = ""  # the host it runs on; "" when it is down
    virtio_scsi: bool = True  # its VirtIO-SCSI controller is enabled


@dataclass(frozen=True)
class BackupInfo:
    id: str
    phase: str  # initializing, starting, ready, finalizing, succeeded, failed
    to_checkpoint_id: str | None
    from_checkpoint_id: str | None
    disk_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class TransferInfo:
    id: str
    phase: str  # initializing, transferring, finalizing_success, finished_success, ...
    transfer_url: str | None  # on the host (port 54322)
    proxy_url: str | None  # through the engine (port 54323)
    host_id: str | None
    disk_id: str | None = None
    backup_id: str | None = None
    direction: str = ""


class EngineVersion(NamedTuple):
    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


class StorageDomainInfo(NamedTuple):
    id: str
    name: str
    type: str  # storage type: nfs, glusterfs, iscsi, fcp, ...
    address: str = ""  # file domains: the server
    path: str = ""  # file domains: the export path (glusterfs: the volume name)


class HostInfo(NamedTuple):
    id: str
    name: str
    address: str
    cluster_id: str
    status: str  # up, maintenance, non_responsive, ...


@dataclass(frozen=True)
class SnapshotInfo:
    id: str
    description: str
    status: str  # ok, locked, in_preview


@dataclass(frozen=True)
class SnapshotVolume:
    """The volume holding one disk's data as of a snapshot."""

    disk_id: str
    volume_id: str
    storage_domain_id: str
    format: DiskFormat


class ClusterInfo(NamedTuple):
    id: str
    name: str


@dataclass(frozen=True)
class CleanupReport:
    cancelled_transfers: list[str] = field(default_factory=list)
    finalized_backups: list[str] = field(default_factory=list)
