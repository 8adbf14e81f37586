"""EngineClient: the one object the rest of Drover uses to talk to the engine.

A thin facade over `ovirtsdk4`: each method runs one small module function under
`translated()`, so callers see only typed values and `DroverError`s. A client made for a
job carries a `guard` (the job's fencing check) that runs before every call that changes
something on the engine, so a step whose job lost its VM stops before it touches anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from shared.engine import backups, cleanup, guest, inventory, restore, transfers
from shared.engine.connection import open_connection
from shared.engine.errors import translated
from shared.engine.models import (
    BackupInfo,
    CleanupReport,
    ClusterInfo,
    DiskInfo,
    EngineVersion,
    StorageDomainInfo,
    TransferInfo,
    VmInfo,
)
from shared.logging import get_logger
from shared.settings import EngineSettings

log = get_logger(__name__)
WAIT_S = 300.0
Guard = Callable[[], None]


def _unguarded() -> None:
    return None


class EngineClient:
    def __init__(
        self,
        connection: Any,
        *,
        url: str = "",
        username: str = "",
        ca_file: str = "",
        guard: Guard = _unguarded,
    ) -> None:
        self._connection = connection
        self._system = connection.system_service()
        self.url = url
        self.username = username
        self.ca_file = ca_file  # also what imageio daemons' certificates are checked against
        self._guard = guard

    @classmethod
    def connect(cls, settings: EngineSettings, guard: Guard = _unguarded) -> EngineClient:
        """Log in (EngineAuthError, EngineUnreachable, ConfigError when that fails)."""
        connection = open_connection(settings)
        client = cls(
            connection,
            url=connection.url,
            username=settings.username,
            ca_file=settings.ca_file,
            guard=guard,
        )
        try:
            with client._call("logging in"):
                connection.authenticate()
        except BaseException:
            client.close(logout=False)
            raise
        log.debug("engine connected", url=client.url, username=client.username)
        return client

    def close(self, *, logout: bool = True) -> None:
        try:
            self._connection.close(logout=logout)
        except Exception as e:  # closing never hides the real outcome
            log.debug("closing the engine connection failed", error=str(e))

    def __enter__(self) -> EngineClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _call(self, action: str) -> Iterator[None]:
        with translated(action, user=self.username):
            yield

    @contextmanager
    def _change(self, action: str) -> Iterator[None]:
        """A call that changes the engine: the guard decides first."""
        self._guard()
        with self._call(action):
            yield

    # inventory
    def test(self) -> str:
        """The engine's product name and version, e.g. "oVirt Engine 4.5.5-1.el8"."""
        with self._call("testing the connection"):
            info = self._system.get().product_info
        version = info.version if info else None
        full = version.full_version if version else ""
        if version and not full:
            full = f"{version.major}.{version.minor}.{version.build or 0}"
        name = (info.name if info else "") or "oVirt Engine"
        return f"{name} {full}".strip()

    def version(self) -> EngineVersion:
        with self._call("reading the engine version"):
            return inventory.engine_version(self._system)

    def find_vms(
        self,
        names: list[str] | None = None,
        patterns: list[str] | None = None,
        tags: list[str] | None = None,
        clusters: list[str] | None = None,
    ) -> list[VmInfo]:
        with self._call("searching VMs"):
            return inventory.find_vms(
                self._system, names or [], patterns or [], tags or [], clusters or []
            )

    def vm(self, vm_id: str) -> VmInfo:
        with self._call(f"reading VM {vm_id}"):
            return inventory.vm(self._system, vm_id)

    def vm_ovf(self, vm_id: str) -> str:
        with self._call(f"reading the OVF of VM {vm_id}"):
            return inventory.vm_ovf(self._system, vm_id)

    def disk(self, disk_id: str) -> DiskInfo:
        with self._call(f"reading disk {disk_id}"):
            return inventory.disk(self._system, disk_id)

    def storage_domains(self) -> list[StorageDomainInfo]:
        with self._call("listing storage domains"):
            return inventory.storage_domains(self._system)

    def clusters(self) -> list[ClusterInfo]:
        with self._call("listing clusters"):
            return inventory.clusters(self._system)

    # guest
    def freeze(self, vm_id: str) -> None:
        with self._change(f"freezing the filesystems of VM {vm_id}"):
            guest.freeze(self._system, vm_id)

    def thaw(self, vm_id: str) -> None:
        with self._change(f"thawing the filesystems of VM {vm_id}"):
            guest.thaw(self._system, vm_id)

    # backups and checkpoints
    def checkpoints(self, vm_id: str) -> list[str]:
        with self._call(f"listing the checkpoints of VM {vm_id}"):
            return backups.checkpoints(self._system, vm_id)

    def remove_checkpoint(self, vm_id: str, checkpoint_id: str) -> None:
        with self._change(f"removing checkpoint {checkpoint_id} of VM {vm_id}"):
            backups.remove_checkpoint(self._system, vm_id, checkpoint_id)

    def start_backup(
        self,
        vm_id: str,
        disk_ids: list[str],
        from_checkpoint_id: str | None = None,
        timeout_s: float = WAIT_S,
        *,
        backup_id: str | None = None,
    ) -> BackupInfo:
        with self._change(f"starting a backup of VM {vm_id}"):
            return backups.start(
                self._system, vm_id, disk_ids, from_checkpoint_id, timeout_s, backup_id
            )

    def backup(self, vm_id: str, backup_id: str) -> BackupInfo | None:
        with self._call(f"reading backup {backup_id}"):
            return backups.get(self._system, vm_id, backup_id)

    def finalize_backup(self, vm_id: str, backup_id: str, timeout_s: float = WAIT_S) -> None:
        with self._change(f"finalizing backup {backup_id} of VM {vm_id}"):
            backups.finalize(self._system, vm_id, backup_id, timeout_s)

    def open_backups(self, vm_id: str) -> list[BackupInfo]:
        with self._call(f"listing the backups of VM {vm_id}"):
            return backups.open_backups(self._system, vm_id)

    # image transfers
    def start_transfer(
        self,
        *,
        disk_id: str,
        backup_id: str | None = None,
        snapshot_id: str | None = None,
        direction: str = "download",
        fmt: str = "raw",
        inactivity_timeout_s: int = 300,
        host_id: str | None = None,
        timeout_s: float = WAIT_S,
    ) -> TransferInfo:
        spec = transfers.spec(
            disk_id=disk_id,
            backup_id=backup_id,
            snapshot_id=snapshot_id,
            direction=direction,
            fmt=fmt,
            inactivity_timeout_s=inactivity_timeout_s,
            host_id=host_id,
        )
        with self._change(f"starting an image transfer ({direction}) of disk {disk_id}"):
            return transfers.start(self._system, spec, timeout_s)

    def transfer(self, transfer_id: str) -> TransferInfo | None:
        with self._call(f"reading image transfer {transfer_id}"):
            return transfers.get(self._system, transfer_id)

    def finalize_transfer(self, transfer_id: str, timeout_s: float = WAIT_S) -> None:
        with self._change(f"finalizing image transfer {transfer_id}"):
            transfers.finalize(self._system, transfer_id, timeout_s)

    def cancel_transfer(self, transfer_id: str, wait_s: float = transfers.CANCEL_WAIT_S) -> None:
        with self._change(f"cancelling image transfer {transfer_id}"):
            transfers.cancel(self._system, transfer_id, wait_s)

    def open_transfers(
        self, *, vm_id: str | None = None, disk_ids: list[str] | None = None
    ) -> list[TransferInfo]:
        """Unfinished transfers on `disk_ids`, or on the disks of `vm_id`."""
        with self._call("listing image transfers"):
            wanted = list(disk_ids or [])
            if vm_id is not None:
                wanted += [d.id for d in inventory.vm(self._system, vm_id).disks]
            return transfers.open_transfers(self._system, wanted)

    def cleanup_vm(
        self, vm_id: str, disk_ids: list[str] | None = None, timeout_s: float = WAIT_S
    ) -> CleanupReport:
        """Cancel open transfers on the disks, finalize open backups; idempotent."""
        with self._change(f"cleaning up VM {vm_id}"):
            return cleanup.cleanup_vm(self._system, vm_id, list(disk_ids or []), timeout_s)

    # restore
    def add_vm_from_ovf(
        self, ovf: str, name: str, cluster_name: str, timeout_s: float = WAIT_S
    ) -> str:
        with self._change(f"creating VM {name} from its OVF"):
            return restore.add_vm_from_ovf(self._system, ovf, name, cluster_name, timeout_s)

    def add_disk(
        self,
        name: str,
        size: int,
        fmt: str,
        storage_domain: str,
        sparse: bool = True,
        *,
        incremental: bool = False,
        initial_size: int | None = None,
        timeout_s: float = WAIT_S,
    ) -> DiskInfo:
        """A new disk on `storage_domain` (id or name), once it is OK."""
        with self._change(f"adding disk {name}"):
            return restore.add_disk(
                self._system,
                name=name,
                size=size,
                fmt=fmt,
                storage_domain=storage_domain,
                sparse=sparse,
                incremental=incremental,
                initial_size=initial_size,
                timeout_s=timeout_s,
            )

    def attach_disk(
        self,
        vm_id: str,
        disk_id: str,
        bootable: bool = False,
        interface: str = "virtio_scsi",
        active: bool = True,
    ) -> None:
        with self._change(f"attaching disk {disk_id} to VM {vm_id}"):
            restore.attach_disk(
                self._system, vm_id, disk_id, bootable=bootable, interface=interface, active=active
            )

    def remove_vm(self, vm_id: str, timeout_s: float = WAIT_S) -> None:
        with self._change(f"removing VM {vm_id}"):
            restore.remove_vm(self._system, vm_id, timeout_s)

    def remove_disk(self, disk_id: str, timeout_s: float = WAIT_S) -> None:
        with self._change(f"removing disk {disk_id}"):
            restore.remove_disk(self._system, disk_id, timeout_s)
