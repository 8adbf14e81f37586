"""The contract between the lab's engine (control plane) and its hosts (data plane).

The engine (`lab.engine`) keeps the inventory and the API; everything that touches
bytes on a storage domain, a qemu-nbd export, an imageio ticket, an sshd or a proxy
VM's devices goes through a `DataPlane` (`lab.hosts.dataplane.LabDataPlane`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class VolumeFormat(StrEnum):
    RAW = "raw"
    COW = "cow"  # qcow2


class DomainKind(StrEnum):
    FILE = "file"  # NFS-like, mounted under <mount_root>/<server>:_<path>/
    GLUSTER = "gluster"  # mounted under <mount_root>/glusterSD/<server>:_<volume>/
    BLOCK = "block"  # logical volumes in a VG named after the domain id


@dataclass(frozen=True)
class DomainSpec:
    id: str
    name: str
    kind: DomainKind
    server: str = "nfs.lab.local"  # file/gluster only
    path: str = "/exports/data"  # export path (file) or volume name (gluster)


@dataclass(frozen=True)
class HostSpec:
    name: str
    id: str
    cluster: str


@dataclass(frozen=True)
class VolumeRef:
    """One volume of a disk's chain: <sd>/images/<disk>/<volume>."""

    sd_id: str
    disk_id: str
    volume_id: str


@dataclass(frozen=True)
class HostEndpoints:
    """What lab.json publishes about one host (its `hosts` entries). Paths are absolute."""

    name: str
    address: str
    ssh_port: int
    ssh_user: str
    ssh_key: str  # the lab's private key, accepted by every host's sshd
    ssh_host_key: str  # the host's public key, "ssh-ed25519 AAAA...", for pinning
    imageio_port: int
    # the host's /rhev/data-center/mnt: <mount_root>/<server>:_<path>/<sd>/images/<disk>/<vol>
    # (file), <mount_root>/glusterSD/<server>:_<volume>/<sd>/... (gluster) and
    # <mount_root>/blockSD/<sd>/images/<disk>/<vol> (block: a link to the LV's device)
    mount_root: str
    # the host's /dev: an active block-domain LV is <dev_root>/<vg = sd id>/<lv = volume id>
    # (after `lvchange -ay <vg>/<lv>` on the host; `lvs` there reports it)
    dev_root: str


class Export(Protocol):
    """A running qemu-nbd export; `nbd_url` is what an imageio ticket points at."""

    nbd_url: str

    def close(self) -> None: ...


class DataPlane(Protocol):
    """Operations the engine needs from the hosts. All are blocking and thread safe."""

    # life cycle and endpoints
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def host_endpoints(self) -> list[HostEndpoints]: ...
    def proxy_imageio_url(self) -> str: ...  # https://127.0.0.1:PORT of the engine-side daemon

    # storage domains and volumes
    def add_domain(self, domain: DomainSpec) -> None: ...
    def create_volume(
        self, ref: VolumeRef, fmt: VolumeFormat, size: int, parent: VolumeRef | None = None
    ) -> None: ...
    def fill_volume(self, ref: VolumeRef, offset: int, length: int, seed: int) -> None: ...
    def remove_volume(self, ref: VolumeRef) -> None: ...
    def merge_into_parent(self, child: VolumeRef, parent: VolumeRef) -> None: ...
    def volume_info(self, ref: VolumeRef) -> dict[str, object]: ...  # qemu-img info
    def copy_disk(self, chain_top: VolumeRef, dst: VolumeRef, fmt: VolumeFormat) -> None: ...

    # exports and imageio tickets
    def export(
        self,
        top: VolumeRef,
        *,
        backing_chain: bool,
        writable: bool,
        dirty_bitmap: str | None = None,
        fmt: VolumeFormat = VolumeFormat.RAW,
    ) -> Export: ...
    def add_ticket(
        self,
        host: str,
        ticket_id: str,
        url: str,
        size: int,
        ops: list[str],
        timeout_s: int,
        dirty: bool = False,
    ) -> str: ...  # returns transfer_url
    def add_proxy_ticket(
        self, ticket_id: str, transfer_url: str, size: int, ops: list[str], timeout_s: int
    ) -> str: ...  # returns proxy_url
    def ticket_status(self, host: str, ticket_id: str) -> dict[str, object]: ...
    def remove_ticket(self, host: str, ticket_id: str) -> None: ...
    def remove_proxy_ticket(self, ticket_id: str) -> None: ...

    # checkpoints (persistent dirty bitmaps over a disk's chain)
    def add_bitmap(self, top: VolumeRef, name: str) -> None: ...
    def remove_bitmap(self, chain: list[VolumeRef], name: str) -> None: ...
    def has_bitmap(self, chain: list[VolumeRef], name: str) -> bool: ...

    # guest I/O: writes are deferred while a disk is held (backup, snapshot, transfer)
    def hold(self, disk_id: str) -> None: ...
    def release(self, disk_id: str) -> None: ...
    def guest_write(self, top: VolumeRef, offset: int, length: int) -> None: ...

    # proxy VMs: a hot-plugged disk is a device under the proxy's /dev/disk/by-id. A
    # `writable` one (a disk, not a disk snapshot, attached read-write) keeps what the proxy
    # writes: it is in the disk once the device is detached.
    def attach_device(
        self, proxy_vm: str, top: VolumeRef, device_name: str, writable: bool = False
    ) -> str: ...
    def detach_device(self, proxy_vm: str, device_name: str) -> None: ...
