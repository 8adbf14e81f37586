"""What the steps of one backup job share: decided in `prepare` and `start`, kept in Redis.

The request (what was asked) and the OVF are stored once beside it; task messages carry
only the job id (and a disk id), so nothing large travels through the broker.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from shared.engine.models import DiskInfo
from shared.jobs import BackupRequest


@dataclass(frozen=True)
class DiskRef:
    id: str
    name: str
    size: int
    format: str  # raw | cow
    storage_domain_id: str = ""
    interface: str = ""
    bootable: bool = False
    incremental_capable: bool = False  # an incremental can read only what changed
    incremental: bool = False  # this backup reads only what changed since the parent

    @classmethod
    def from_info(cls, info: DiskInfo, *, incremental_capable: bool) -> DiskRef:
        return cls(
            id=info.id,
            name=info.name or "",
            size=int(info.size),
            format=str(info.format),
            storage_domain_id=info.storage_domain_id or "",
            interface=str(info.interface or ""),
            bootable=bool(info.bootable),
            incremental_capable=incremental_capable,
        )


@dataclass(frozen=True)
class JobContext:
    request: BackupRequest
    vm_name: str
    cluster: str
    chunk_size: int
    disks: tuple[DiskRef, ...] = field(default_factory=tuple)
    kind: str = "full"
    parent_id: str | None = None
    from_anchor: str | None = None  # the parent's checkpoint or kept snapshot
    handle: str = ""  # the engine backup or snapshot the disks are read through
    anchor: str | None = None  # this backup's checkpoint or kept snapshot

    @property
    def job_id(self) -> str:
        return self.request.job_id

    @property
    def vm_id(self) -> str:
        return self.request.vm_id

    @property
    def disk_ids(self) -> list[str]:
        return [d.id for d in self.disks]

    def disk(self, disk_id: str) -> DiskRef | None:
        return next((d for d in self.disks if d.id == disk_id), None)

    def as_full(self) -> JobContext:
        disks = tuple(replace(d, incremental=False) for d in self.disks)
        return replace(self, kind="full", parent_id=None, from_anchor=None, disks=disks)

    def started(self, handle: str, anchor: str | None) -> JobContext:
        return replace(self, handle=handle, anchor=anchor)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["request"]  # stored once, beside the context
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], request: BackupRequest) -> JobContext:
        values = dict(data)
        values["disks"] = tuple(DiskRef(**d) for d in values.get("disks", ()))
        return cls(request=request, **values)
