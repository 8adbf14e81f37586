"""What a job is asked to do: the values sent in Celery messages (never secrets).

Engine credentials stay in Redis under the manager's name; a message names the manager.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class GuestCommand:
    """A command run inside the guest over SSH before or after the snapshot."""

    command: str
    host: str  # the guest's address
    host_key: str = ""  # pinned: public key or SHA256 fingerprint (shared.ssh_trust)
    user: str = "root"
    port: int = 22
    key_file: str = ""  # a path on the workers; the key itself never travels

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> GuestCommand | None:
        return cls(**data) if data else None


@dataclass(frozen=True)
class BackupRequest:
    """One VM's backup, as expanded from a policy."""

    job_id: str
    policy: str
    manager: str
    vm_id: str
    vm_name: str
    repository: str
    mode: str = "image_transfer"
    incremental: bool = True  # incremental when a valid chain exists
    full_every: int = 7  # every N-th backup of the chain is full
    excluded_disks: tuple[str, ...] = ()  # disk ids or names
    disk_ids: tuple[str, ...] = ()  # the disks to back up, decided once when the job is queued
    quiesce: bool = True
    pre_command: GuestCommand | None = None
    post_command: GuestCommand | None = None
    priority: int = 5  # 0 (low) .. 9 (high)
    # snapshot-chain modes: keep this backup's snapshot for the next incremental (a policy
    # of the VM is incremental) or remove it once the backup is committed
    keep_snapshot: bool = False
    snapshot_chain: bool = False  # image_transfer through snapshot chains, not the backup API
    netcat: bool = False  # ssh: the data over a plain TCP connection, not the SSH session

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["excluded_disks"] = list(self.excluded_disks)
        data["disk_ids"] = list(self.disk_ids)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackupRequest:
        values = dict(data)
        values["excluded_disks"] = tuple(values.get("excluded_disks") or ())
        values["disk_ids"] = tuple(values.get("disk_ids") or ())
        values["pre_command"] = GuestCommand.from_dict(values.get("pre_command"))
        values["post_command"] = GuestCommand.from_dict(values.get("post_command"))
        return cls(**values)


@dataclass(frozen=True)
class RestoreRequest:
    job_id: str
    manager: str
    repository: str
    backup_id: str
    name: str = ""  # new VM name; empty: "<original>-restored"
    cluster: str = ""  # empty: the original cluster
    storage_domain: str = ""  # empty: each disk's original domain
    disks: tuple[str, ...] = field(default_factory=tuple)  # empty: all
    mode: str = "image_transfer"  # which mode's disk sink writes the disks

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["disks"] = list(self.disks)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RestoreRequest:
        return cls(**{**data, "disks": tuple(data.get("disks") or ())})
