"""What the steps of one backup job hand to each other (JSON in Celery messages)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

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
    incremental_capable: bool = False

    @classmethod
    def from_info(cls, info: Any) -> DiskRef:
        return cls(
            id=info.id,
            name=info.name or "",
            size=int(info.size),
            format=str(info.format),
            storage_domain_id=info.storage_domain_id or "",
            interface=str(info.interface or ""),
            bootable=bool(info.bootable),
            incremental_capable=str(info.backup) == "incremental",
        )


@dataclass(frozen=True)
class JobContext:
    request: BackupRequest
    vm_name: str
    cluster: str
    ovf: str
    disks: tuple[DiskRef, ...] = field(default_factory=tuple)
    kind: str = "full"
    parent_id: str | None = None
    from_checkpoint: str | None = None
    engine_backup_id: str = ""
    to_checkpoint: str | None = None

    @classmethod
    def new(cls, request: BackupRequest, vm: Any, ovf: str) -> JobContext:
        disks = tuple(DiskRef.from_info(d) for d in vm.disks if not _excluded(d, request))
        return cls(request, vm.name, vm.cluster_name or "", ovf, disks)

    @property
    def disk_ids(self) -> list[str]:
        return [d.id for d in self.disks]

    def disk(self, disk_id: str) -> DiskRef:
        return next(d for d in self.disks if d.id == disk_id)

    def with_kind(
        self, kind: str, parent_id: str | None, from_checkpoint: str | None
    ) -> JobContext:
        return replace(self, kind=kind, parent_id=parent_id, from_checkpoint=from_checkpoint)

    def with_engine_backup(self, backup: Any) -> JobContext:
        return replace(self, engine_backup_id=backup.id, to_checkpoint=backup.to_checkpoint_id)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["request"] = self.request.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobContext:
        values = dict(data)
        values["request"] = BackupRequest.from_dict(values["request"])
        values["disks"] = tuple(DiskRef(**d) for d in values.get("disks", ()))
        return cls(**values)


def _excluded(disk: Any, request: BackupRequest) -> bool:
    return disk.id in request.excluded_disks or (disk.name or "") in request.excluded_disks
