"""EngineClient: the one object the rest of Drover uses to talk to the engine.

A thin facade over `ovirtsdk4`: each method runs one small module function through
`retry.call` (SDK errors translated, transient ones retried as its kind allows, see
`shared.engine.errors`), so callers see only typed values and `DroverError`s. A client made
for a job carries a `guard` (the job's fencing check) that runs before every attempt of a
call that changes something on the engine, so a step whose job lost its VM stops before it
touches anything.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from shared.engine import (
    attachments,
    backups,
    cleanup,
    guest,
    inventory,
    restore,
    snapshots,
    transfers,
)
from shared.engine.attachments import AttachmentInfo
from shared.engine.connection import open_connection
from shared.engine.models import (
    BackupInfo,
    CleanupReport,
    ClusterInfo,
    DiskInfo,
    EngineVersion,
    HostInfo,
    SnapshotInfo,
    SnapshotVolume,
    StorageDomainInfo,
    TransferInfo,
    VmInfo,
)
from shared.engine.retry import RETRY, CallKind, RetryPolicy, call
from shared.logging import get_logger
from shared.settings import EngineSettings

log = get_logger(__name__)
WAIT_S = 300.0
Guard = Callable[[], None]
T = TypeVar("T")
READ, IDEMPOTENT, CREATE = CallKind.READ, CallKind.IDEMPOTENT, CallKind.CREATE


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
        retry: RetryPolicy = RETRY,
    ) -> None:
        self._connection = connection
        self._system = connection.system_service()
        self.url = url
        self.username = username
        self.ca_file = ca_file  # also what imageio daemons' certificates are checked against
        self._guard = guard
        self.retry = retry

    @classmethod
    def connect(
        cls, settings: EngineSettings, guard: Guard = _unguarded, *, retry: RetryPolicy = RETRY
    ) -> EngineClient:
        """Log in (EngineAuthError, EngineUnreachable, ConfigError when that fails)."""
        connection = open_connection(settings)
        client = cls(
            connection,
            url=connection.url,
            username=settings.username,
            ca_file=settings.ca_file,
            guard=guard,
            retry=retry,
        )
        try:
            client._run(CallKind.LOGIN, "logging in", connection.authenticate)
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

    def _run(self, kind: CallKind, action: str, fn: Callable[[], T]) -> T:
        """`fn()` as one engine call of `kind`; a change runs the guard before each attempt."""
        before = _unguarded if kind in (CallKind.LOGIN, READ) else self._guard
        return call(
            fn, action=action, kind=kind, policy=self.retry, user=self.username, before=before
        )

    def _call(self, action: str, fn: Callable[[], T]) -> T:
        """A call that only reads."""
        return self._run(READ, action, fn)

    def _change(self, action: str, fn: Callable[[], T], *, kind: CallKind = IDEMPOTENT) -> T:
        """A call that changes the engine: the guard decides first, before every attempt."""
        return self._run(kind, action, fn)

    # inventory
    def test(self) -> str:
        """The engine's product name and version, e.g. "oVirt Engine 4.5.5-1.el8"."""
        info = self._call("testing the connection", lambda: self._system.get().product_info)
        version = info.version if info else None
        full = version.full_version if version else ""
        if version and not full:
            full = f"{version.major}.{version.minor}.{version.build or 0}"
        name = (info.name if info else "") or "oVirt Engine"
        return f"{name} {full}".strip()

    def version(self) -> EngineVersion:
        return self._call(
            "reading the engine version", lambda: inventory.engine_version(self._system)
        )

    def find_vms(
        self,
        names: list[str] | None = None,
        patterns: list[str] | None = None,
        tags: list[str] | None = None,
        clusters: list[str] | None = None,
    ) -> list[VmInfo]:
        return self._call(
            "searching VMs",
            lambda: inventory.find_vms(
                self._system, names or [], patterns or [], tags or [], clusters or []
            ),
        )

    def vm(self, vm_id: str) -> VmInfo:
        return self._call(f"reading VM {vm_id}", lambda: inventory.vm(self._system, vm_id))

    def vm_ovf(self, vm_id: str) -> str:
        return self._call(
            f"reading the OVF of VM {vm_id}", lambda: inventory.vm_ovf(self._system, vm_id)
        )

    def disk(self, disk_id: str) -> DiskInfo:
        return self._call(f"reading disk {disk_id}", lambda: inventory.disk(self._system, disk_id))

    def storage_domains(self) -> list[StorageDomainInfo]:
        return self._call(
            "listing storage domains", lambda: inventory.storage_domains(self._system)
        )

    def clusters(self) -> list[ClusterInfo]:
        return self._call("listing clusters", lambda: inventory.clusters(self._system))

    def hosts(self) -> list[HostInfo]:
        return self._call("listing hosts", lambda: inventory.hosts(self._system))

    # guest
    def freeze(self, vm_id: str) -> None:
        """Not repeated once it may have reached the engine: a frozen guest refuses a freeze."""
        self._change(
            f"freezing the filesystems of VM {vm_id}",
            lambda: guest.freeze(self._system, vm_id),
            kind=CREATE,
        )

    def thaw(self, vm_id: str) -> None:
        self._change(
            f"thawing the filesystems of VM {vm_id}", lambda: guest.thaw(self._system, vm_id)
        )

    # backups and checkpoints
    def checkpoints(self, vm_id: str) -> list[str]:
        return self._call(
            f"listing the checkpoints of VM {vm_id}",
            lambda: backups.checkpoints(self._system, vm_id),
        )

    def remove_checkpoint(self, vm_id: str, checkpoint_id: str) -> None:
        self._change(
            f"removing checkpoint {checkpoint_id} of VM {vm_id}",
            lambda: backups.remove_checkpoint(self._system, vm_id, checkpoint_id),
        )

    def start_backup(
        self,
        vm_id: str,
        disk_ids: list[str],
        from_checkpoint_id: str | None = None,
        timeout_s: float = WAIT_S,
        *,
        backup_id: str | None = None,
    ) -> BackupInfo:
        """With `backup_id` the start is idempotent: an attempt that finds a backup with that
        id takes it as its own. Without one it is sent again only when it never arrived."""
        action = f"starting a backup of VM {vm_id}"
        created = self._change(
            action,
            lambda: backups.add(self._system, vm_id, disk_ids, from_checkpoint_id, backup_id),
            kind=IDEMPOTENT if backup_id else CREATE,
        )
        return self._call(
            action,
            lambda: backups.wait_ready(
                self._system, vm_id, created.id, from_checkpoint_id, timeout_s
            ),
        )

    def backup(self, vm_id: str, backup_id: str) -> BackupInfo | None:
        return self._call(
            f"reading backup {backup_id}", lambda: backups.get(self._system, vm_id, backup_id)
        )

    def finalize_backup(self, vm_id: str, backup_id: str, timeout_s: float = WAIT_S) -> None:
        self._change(
            f"finalizing backup {backup_id} of VM {vm_id}",
            lambda: backups.finalize(self._system, vm_id, backup_id, timeout_s),
        )

    def open_backups(self, vm_id: str) -> list[BackupInfo]:
        return self._call(
            f"listing the backups of VM {vm_id}", lambda: backups.open_backups(self._system, vm_id)
        )

    # snapshots
    def create_snapshot(
        self, vm_id: str, disk_ids: list[str], description: str, timeout_s: float = WAIT_S
    ) -> str:
        """A disk-only snapshot, once it is OK. Not repeated once it may have reached the
        engine: the caller finds one that did by its description."""
        action = f"taking a snapshot of VM {vm_id}"
        snapshot_id = self._change(
            action,
            lambda: snapshots.add(self._system, vm_id, disk_ids, description),
            kind=CREATE,
        )
        self._call(
            action, lambda: snapshots.wait_ok(self._system, vm_id, snapshot_id, timeout_s)
        )
        return snapshot_id

    def wait_snapshot(self, vm_id: str, snapshot_id: str, timeout_s: float = WAIT_S) -> None:
        self._call(
            f"waiting for snapshot {snapshot_id} of VM {vm_id}",
            lambda: snapshots.wait_ok(self._system, vm_id, snapshot_id, timeout_s),
        )

    def snapshots(self, vm_id: str) -> list[SnapshotInfo]:
        return self._call(
            f"listing the snapshots of VM {vm_id}",
            lambda: snapshots.listing(self._system, vm_id),
        )

    def snapshot_volumes(self, vm_id: str, snapshot_id: str) -> dict[str, SnapshotVolume]:
        return self._call(
            f"reading the disks of snapshot {snapshot_id}",
            lambda: snapshots.volumes(self._system, vm_id, snapshot_id),
        )

    def remove_snapshot(self, vm_id: str, snapshot_id: str, timeout_s: float = WAIT_S) -> None:
        self._change(
            f"removing snapshot {snapshot_id} of VM {vm_id}",
            lambda: snapshots.remove(self._system, vm_id, snapshot_id, timeout_s),
        )

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
        action = f"starting an image transfer ({direction}) of disk {disk_id}"
        created = self._change(action, lambda: transfers.add(self._system, spec), kind=CREATE)
        return self._call(
            action, lambda: transfers.wait_serving(self._system, created.id, timeout_s)
        )

    def transfer(self, transfer_id: str) -> TransferInfo | None:
        return self._call(
            f"reading image transfer {transfer_id}",
            lambda: transfers.get(self._system, transfer_id),
        )

    def finalize_transfer(self, transfer_id: str, timeout_s: float = WAIT_S) -> None:
        self._change(
            f"finalizing image transfer {transfer_id}",
            lambda: transfers.finalize(self._system, transfer_id, timeout_s),
        )

    def cancel_transfer(self, transfer_id: str, wait_s: float = transfers.CANCEL_WAIT_S) -> None:
        self._change(
            f"cancelling image transfer {transfer_id}",
            lambda: transfers.cancel(self._system, transfer_id, wait_s),
        )

    def open_transfers(
        self, *, vm_id: str | None = None, disk_ids: list[str] | None = None
    ) -> list[TransferInfo]:
        """Unfinished transfers on `disk_ids`, or on the disks of `vm_id`."""

        def listing() -> list[TransferInfo]:
            wanted = list(disk_ids or [])
            if vm_id is not None:
                wanted += [d.id for d in inventory.vm(self._system, vm_id).disks]
            return transfers.open_transfers(self._system, wanted)

        return self._call("listing image transfers", listing)

    def cleanup_vm(
        self, vm_id: str, disk_ids: list[str] | None = None, timeout_s: float = WAIT_S
    ) -> CleanupReport:
        """Cancel open transfers on the disks, finalize open backups; idempotent."""
        return self._change(
            f"cleaning up VM {vm_id}",
            lambda: cleanup.cleanup_vm(self._system, vm_id, list(disk_ids or []), timeout_s),
        )

    # restore
    def add_vm_from_ovf(
        self, ovf: str, name: str, cluster_name: str, timeout_s: float = WAIT_S
    ) -> str:
        action = f"creating VM {name} from its OVF"
        vm_id = self._change(
            action,
            lambda: restore.add_vm_from_ovf(self._system, ovf, name, cluster_name),
            kind=CREATE,
        )
        self._call(action, lambda: restore.wait_vm_unlocked(self._system, vm_id, name, timeout_s))
        return vm_id

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
        action = f"adding disk {name}"
        disk_id = self._change(
            action,
            lambda: restore.add_disk(
                self._system,
                name=name,
                size=size,
                fmt=fmt,
                storage_domain=storage_domain,
                sparse=sparse,
                incremental=incremental,
                initial_size=initial_size,
            ),
            kind=CREATE,
        )
        return self._call(action, lambda: restore.wait_disk_ok(self._system, disk_id, timeout_s))

    def attach_disk(
        self,
        vm_id: str,
        disk_id: str,
        bootable: bool = False,
        interface: str = "virtio_scsi",
        active: bool = True,
    ) -> None:
        self._change(
            f"attaching disk {disk_id} to VM {vm_id}",
            lambda: restore.attach_disk(
                self._system, vm_id, disk_id, bootable=bootable, interface=interface, active=active
            ),
            kind=CREATE,
        )

    def plug_disk(
        self, vm_id: str, disk_id: str, snapshot_id: str | None, interface: str = "virtio_scsi"
    ) -> None:
        """Hot-plug a disk (as of `snapshot_id`, read-only, when given) into a running VM."""
        what = f"disk {disk_id}" + (f" as of snapshot {snapshot_id}" if snapshot_id else "")
        self._change(
            f"attaching {what} to VM {vm_id}",
            lambda: attachments.attach(
                self._system, vm_id, disk_id, snapshot_id, interface=interface
            ),
            kind=CREATE,
        )

    def unplug_disk(self, vm_id: str, disk_id: str, timeout_s: float = WAIT_S) -> None:
        """Detach a disk from a VM (the disk stays); done once the VM no longer has it."""
        self._change(
            f"detaching disk {disk_id} from VM {vm_id}",
            lambda: attachments.detach(self._system, vm_id, disk_id, timeout_s),
        )

    def disk_attachments(self, vm_id: str) -> list[AttachmentInfo]:
        return self._call(
            f"listing the disks attached to VM {vm_id}",
            lambda: attachments.listing(self._system, vm_id),
        )

    def remove_vm(self, vm_id: str, timeout_s: float = WAIT_S) -> None:
        self._change(
            f"removing VM {vm_id}", lambda: restore.remove_vm(self._system, vm_id, timeout_s)
        )

    def remove_disk(self, disk_id: str, timeout_s: float = WAIT_S) -> None:
        self._change(
            f"removing disk {disk_id}",
            lambda: restore.remove_disk(self._system, disk_id, timeout_s),
        )
