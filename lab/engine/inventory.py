"""The engine's model: what the real engine keeps in its database.

Plain dataclasses guarded by one re-entrant lock (`Inventory.lock`). Handlers take the
lock to read or change state; data-plane calls (slow) are made outside it by jobs.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, TypeVar

from lab.dataplane import DomainKind, VolumeFormat, VolumeRef
from lab.engine.faults import not_found

if TYPE_CHECKING:
    from lab.dataplane import Export


class _Named(Protocol):
    name: str


T = TypeVar("T")
N = TypeVar("N", bound=_Named)

BLANK_TEMPLATE_ID = "00000000-0000-0000-0000-000000000000"
LAB_NAMESPACE = uuid.UUID("6a3c1f0e-8a53-4c36-9d64-5b0d1f6c2e11")


def stable_id(kind: str, name: str) -> str:
    """Deterministic ids for the estate: uuid5 of `kind/name`."""
    return str(uuid.uuid5(LAB_NAMESPACE, f"{kind}/{name}"))


def new_id() -> str:
    return str(uuid.uuid4())


class DiskState(StrEnum):
    OK = "ok"
    LOCKED = "locked"
    ILLEGAL = "illegal"


class VmState(StrEnum):
    UP = "up"
    DOWN = "down"
    POWERING_UP = "powering_up"
    POWERING_DOWN = "powering_down"
    IMAGE_LOCKED = "image_locked"


@dataclass
class DataCenter:
    id: str
    name: str


@dataclass
class Cluster:
    id: str
    name: str
    dc_id: str


@dataclass
class Host:
    id: str
    name: str
    cluster_id: str
    address: str = "127.0.0.1"


@dataclass
class StorageDomain:
    id: str
    name: str
    kind: DomainKind
    dc_id: str
    server: str = ""
    path: str = ""
    capacity: int = 1 << 40
    master: bool = False


@dataclass
class Tag:
    id: str
    name: str
    description: str = ""


@dataclass
class Disk:
    id: str
    name: str
    sd_id: str
    size: int  # provisioned (virtual) size
    base_format: VolumeFormat
    sparse: bool = True
    incremental: bool = False  # backup=incremental
    chain: list[str] = field(default_factory=list)  # volume ids, base first
    status: DiskState = DiskState.OK
    description: str = ""
    content_type: str = "data"
    creation_time: float = field(default_factory=time.time)
    lock_reason: str = ""
    transfer_id: str | None = None

    @property
    def top(self) -> str:
        return self.chain[-1]

    @property
    def format(self) -> VolumeFormat:
        """The engine reports the active volume's format."""
        return self.base_format if len(self.chain) == 1 else VolumeFormat.COW

    def volume_format(self, volume_id: str) -> VolumeFormat:
        return self.base_format if self.chain.index(volume_id) == 0 else VolumeFormat.COW

    def ref(self, volume_id: str | None = None) -> VolumeRef:
        return VolumeRef(self.sd_id, self.id, volume_id or self.top)

    def refs(self, upto: str | None = None) -> list[VolumeRef]:
        """The chain (base first) up to and including `upto` (default: the top)."""
        end = self.chain.index(upto) + 1 if upto else len(self.chain)
        return [self.ref(v) for v in self.chain[:end]]


@dataclass
class Attachment:
    disk_id: str
    interface: str = "virtio_scsi"
    bootable: bool = False
    active: bool = True
    snapshot_id: str | None = None  # set when a disk snapshot is attached (proxy VMs)
    volume_id: str | None = None  # the snapshot's volume for snapshot attachments
    logical_name: str | None = None
    device: str | None = None  # the data plane's device name on a proxy VM
    read_only: bool = False
    reported_at: float | None = None  # when the guest agent reports `logical_name`


@dataclass
class Snapshot:
    id: str
    description: str
    volumes: dict[str, str] = field(default_factory=dict)  # disk id -> volume id
    status: str = "ok"  # ok | locked
    date: float = field(default_factory=time.time)
    persist_memorystate: bool = False


@dataclass
class Checkpoint:
    id: str
    parent_id: str | None
    disk_ids: list[str]
    creation_date: float = field(default_factory=time.time)
    state: str = "created"
    description: str | None = None  # the backup's


@dataclass
class Vm:
    id: str
    name: str
    cluster_id: str
    status: VmState = VmState.UP
    description: str = ""
    comment: str = ""
    memory: int = 1 << 30
    cpus: int = 1
    os_type: str = "rhel_8x64"
    guest_agent: bool = False
    virtio_scsi: bool = True
    is_proxy: bool = False
    tag_ids: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)  # regular ones, oldest first
    active_snapshot_id: str = field(default_factory=new_id)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    creation_time: float = field(default_factory=time.time)
    start_time: float | None = field(default_factory=time.time)
    template_id: str = BLANK_TEMPLATE_ID

    @property
    def running(self) -> bool:
        return self.status not in (VmState.DOWN, VmState.IMAGE_LOCKED)

    def attachment(self, disk_id: str) -> Attachment | None:
        return next((a for a in self.attachments if a.disk_id == disk_id), None)

    def own_disk_ids(self) -> list[str]:
        """Disks of this VM (not disk snapshots of other VMs attached to it)."""
        return [a.disk_id for a in self.attachments if a.snapshot_id is None]

    def snapshot(self, snapshot_id: str) -> Snapshot:
        for snap in self.snapshots:
            if snap.id == snapshot_id:
                return snap
        raise not_found(snapshot_id)


@dataclass
class Transfer:
    id: str
    disk_id: str
    direction: str  # download | upload
    format: VolumeFormat
    volume_id: str  # the volume exported (top of what is transferred)
    backing_chain: bool
    inactivity_timeout: int
    host_id: str
    timeout_policy: str = "legacy"  # legacy | pause | cancel
    snapshot_volume: str | None = None  # set for disk snapshot transfers
    backup_id: str | None = None
    dirty_bitmap: str | None = None
    phase: str = "initializing"
    transfer_url: str | None = None
    proxy_url: str | None = None
    transferred: int = 0
    size: int = 0
    finished_at: float | None = None
    created_at: float = field(default_factory=time.time)
    # data-plane resources to clean up
    export: Export | None = None
    host_ticket: bool = False
    proxy_ticket: bool = False
    held: bool = False

    @property
    def final(self) -> bool:
        return self.phase.startswith("finished")


@dataclass
class Event:
    """An audit log entry; external ones are added with `POST events`."""

    id: int
    description: str
    severity: str  # normal | warning | error | alert
    code: int
    origin: str = "oVirt"
    custom_id: int = -1
    time: float = field(default_factory=time.time)
    flood_rate: int = 30
    vm_id: str | None = None
    host_id: str | None = None


@dataclass
class Backup:
    id: str
    vm_id: str
    disk_ids: list[str]
    from_checkpoint_id: str | None
    to_checkpoint_id: str | None
    host_id: str
    incremental_disks: set[str] = field(default_factory=set)  # disks backed up from a bitmap
    description: str | None = None
    phase: str = "initializing"
    creation_date: float = field(default_factory=time.time)
    modification_date: float = field(default_factory=time.time)
    finished_at: float | None = None
    held: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.phase not in ("succeeded", "failed")


class Inventory:
    """Everything the engine knows. Mutate only while holding `lock`."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.data_centers: dict[str, DataCenter] = {}
        self.clusters: dict[str, Cluster] = {}
        self.hosts: dict[str, Host] = {}
        self.domains: dict[str, StorageDomain] = {}
        self.tags: dict[str, Tag] = {}
        self.vms: dict[str, Vm] = {}
        self.disks: dict[str, Disk] = {}
        self.transfers: dict[str, Transfer] = {}
        self.backups: dict[str, Backup] = {}
        self.events: list[Event] = []

    # lookups that answer 404 the way the engine does
    def vm(self, vm_id: str) -> Vm:
        return _get(self.vms, vm_id)

    def disk(self, disk_id: str) -> Disk:
        return _get(self.disks, disk_id)

    def domain(self, sd_id: str) -> StorageDomain:
        return _get(self.domains, sd_id)

    def cluster(self, cluster_id: str) -> Cluster:
        return _get(self.clusters, cluster_id)

    def host(self, host_id: str) -> Host:
        return _get(self.hosts, host_id)

    def tag(self, tag_id: str) -> Tag:
        return _get(self.tags, tag_id)

    def transfer(self, transfer_id: str) -> Transfer:
        return _get(self.transfers, transfer_id)

    def backup(self, vm_id: str, backup_id: str) -> Backup:
        backup = _get(self.backups, backup_id)
        if backup.vm_id != vm_id:
            raise not_found(backup_id)
        return backup

    # by name
    def vm_by_name(self, name: str) -> Vm:
        return _by_name(self.vms.values(), name)

    def cluster_by_name(self, name: str) -> Cluster:
        return _by_name(self.clusters.values(), name)

    def domain_by_name(self, name: str) -> StorageDomain:
        return _by_name(self.domains.values(), name)

    def tag_by_name(self, name: str) -> Tag:
        return _by_name(self.tags.values(), name)

    # relations
    def vms_of_disk(self, disk_id: str) -> list[Vm]:
        return [vm for vm in self.vms.values() if disk_id in vm.own_disk_ids()]

    def owner_of_volume(self, volume_id: str) -> tuple[Disk, Vm | None, Snapshot | None]:
        """The disk holding `volume_id`, its VM and the snapshot it belongs to (None: active)."""
        for disk in self.disks.values():
            if volume_id in disk.chain:
                vms = self.vms_of_disk(disk.id)
                vm = vms[0] if vms else None
                snap = None
                if vm is not None:
                    snap = next(
                        (s for s in vm.snapshots if s.volumes.get(disk.id) == volume_id), None
                    )
                return disk, vm, snap
        raise not_found(volume_id)

    def hosts_in_cluster(self, cluster_id: str) -> list[Host]:
        return [h for h in self.hosts.values() if h.cluster_id == cluster_id]

    def host_for_disk(self, disk_id: str) -> Host:
        """The host running the disk's VM, else any host of the data center."""
        for vm in self.vms_of_disk(disk_id):
            hosts = self.hosts_in_cluster(vm.cluster_id)
            if hosts:
                return hosts[0]
        return next(iter(self.hosts.values()))

    def active_backup(self, vm_id: str) -> Backup | None:
        return next((b for b in self.backups.values() if b.vm_id == vm_id and b.active), None)


def _get(table: dict[str, T], key: str) -> T:
    try:
        return table[key]
    except KeyError:
        raise not_found(key) from None


def _by_name(items: Iterable[N], name: str) -> N:
    for item in items:
        if item.name == name:
            return item
    raise not_found(name)
