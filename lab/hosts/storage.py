"""Storage domains and volumes: create, write, merge, copy, inspect, dirty bitmaps.

All domains are shared by every host: the bytes live once under `storage/<sd>/` and
each host's mount root links to them (see `layout`). Internally volumes are always
addressed through their shared path (for block domains, the hidden LV bytes), so the
data plane never depends on an LV being active on some host.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from lab.dataplane import DomainKind, DomainSpec, VolumeFormat, VolumeRef

from . import meta, qemu
from .layout import NULL_UUID, Layout
from .meta import INTERNAL, LEAF, VolumeMeta

_FILL_CHUNK = 64 * 1024 * 1024


class Storage:
    def __init__(self, layout: Layout, hosts: list[str]) -> None:
        self.layout = layout
        self.hosts = list(hosts)
        self._domains: dict[str, DomainSpec] = {}
        self._lock = threading.Lock()
        self._disk_locks: defaultdict[str, threading.RLock] = defaultdict(threading.RLock)

    # domains

    def add_domain(self, domain: DomainSpec) -> None:
        with self._lock:
            self._domains[domain.id] = domain
        self.layout.images_dir(domain).mkdir(parents=True, exist_ok=True)
        (self.layout.storage_dir(domain.id) / "dom_md").mkdir(exist_ok=True)
        if domain.kind is DomainKind.BLOCK:
            self.layout.block_meta_dir(domain.id).mkdir(exist_ok=True)
        for host in self.hosts:
            self._mount_on_host(host, domain)

    def _mount_on_host(self, host: str, domain: DomainSpec) -> None:
        host_dir = self.layout.host_domain_dir(host, domain)
        host_dir.parent.mkdir(parents=True, exist_ok=True)
        if domain.kind is DomainKind.BLOCK:
            (host_dir / "images").mkdir(parents=True, exist_ok=True)
        elif not host_dir.is_symlink():
            host_dir.symlink_to(self.layout.storage_dir(domain.id))

    def domain(self, sd_id: str) -> DomainSpec:
        with self._lock:
            try:
                return self._domains[sd_id]
            except KeyError:
                raise KeyError(f"unknown storage domain {sd_id}") from None

    @contextlib.contextmanager
    def disk_lock(self, disk_id: str) -> Iterator[None]:
        with self._lock:
            lock = self._disk_locks[disk_id]
        with lock:
            yield

    # paths and metadata

    def path(self, ref: VolumeRef) -> Path:
        return self.layout.volume_path(self.domain(ref.sd_id), ref)

    def host_path(self, host: str, ref: VolumeRef) -> Path:
        return self.layout.host_volume_path(host, self.domain(ref.sd_id), ref)

    def meta(self, ref: VolumeRef) -> VolumeMeta:
        path = self.layout.meta_path(self.domain(ref.sd_id), ref)
        try:
            return meta.read(path)
        except FileNotFoundError:
            raise KeyError(f"no such volume {ref}") from None

    def _write_meta(self, ref: VolumeRef, value: VolumeMeta) -> None:
        meta.write(self.layout.meta_path(self.domain(ref.sd_id), ref), value)

    def fmt(self, ref: VolumeRef) -> VolumeFormat:
        return self.meta(ref).fmt

    def qemu_fmt(self, ref: VolumeRef) -> str:
        return qemu.qemu_fmt(self.fmt(ref))

    def parent(self, ref: VolumeRef) -> VolumeRef | None:
        """The parent volume; like vdsm we assume it lives in the same domain."""
        value = self.meta(ref)
        if not value.has_parent:
            return None
        return self._find_volume(ref.sd_id, value.parent)

    def chain(self, top: VolumeRef) -> list[VolumeRef]:
        """`top` and its ancestors, top first."""
        result = [top]
        while (parent := self.parent(result[-1])) is not None:
            result.append(parent)
        return result

    def children(self, ref: VolumeRef) -> list[VolumeRef]:
        return [v for v in self._volumes(ref.sd_id) if self.meta(v).parent == ref.volume_id]

    def active_volume(self, ref: VolumeRef) -> VolumeRef:
        """The leaf of `ref`'s disk now (a snapshot or merge may have replaced `ref`)."""
        with contextlib.suppress(KeyError):
            if self.meta(ref).voltype == LEAF:
                return ref
        disk_dir = self.layout.images_dir(self.domain(ref.sd_id)) / ref.disk_id
        leaves = []
        for path in disk_dir.glob("*"):
            if path.name.endswith((".meta", ".tmp", ".lease")):
                continue
            candidate = VolumeRef(ref.sd_id, ref.disk_id, path.name)
            with contextlib.suppress(KeyError):
                if self.meta(candidate).voltype == LEAF:
                    leaves.append(candidate)
        if len(leaves) != 1:
            raise KeyError(f"cannot find the active volume of disk {ref.disk_id}")
        return leaves[0]

    def _volumes(self, sd_id: str) -> list[VolumeRef]:
        images = self.layout.images_dir(self.domain(sd_id))
        return [
            VolumeRef(sd_id, p.parent.name, p.name)
            for p in images.glob("*/*")
            if not p.name.endswith((".meta", ".tmp", ".lease"))
        ]

    def _find_volume(self, sd_id: str, volume_id: str) -> VolumeRef:
        images = self.layout.images_dir(self.domain(sd_id))
        for path in images.glob(f"*/{volume_id}"):
            return VolumeRef(sd_id, path.parent.name, volume_id)
        raise KeyError(f"volume {volume_id} not found in domain {sd_id}")

    def _backing_name(self, child: VolumeRef, parent: VolumeRef) -> str:
        """The backing file reference vdsm writes into a qcow2 overlay."""
        kind = self.domain(child.sd_id).kind
        if child.disk_id == parent.disk_id and kind is not DomainKind.BLOCK:
            return parent.volume_id
        return f"../{parent.disk_id}/{parent.volume_id}"

    # volumes

    def create_volume(self, ref: VolumeRef, fmt: VolumeFormat, size: int,
                      parent: VolumeRef | None = None) -> None:
        if parent is not None:
            self._check_parent(ref, fmt, parent)
        with self.disk_lock(ref.disk_id):
            path = self.path(ref)
            if path.exists():
                raise FileExistsError(f"volume {ref} already exists")
            path.parent.mkdir(parents=True, exist_ok=True)
            self._create_bytes(ref, path, fmt, size, parent)
            value = VolumeMeta(ref.sd_id, ref.disk_id, fmt, size,
                               parent.volume_id if parent else NULL_UUID)
            self._write_meta(ref, value)
            if parent is not None:
                self._write_meta(parent, self.meta(parent).with_voltype(INTERNAL))
            self._link_on_hosts(ref)

    def _check_parent(self, ref: VolumeRef, fmt: VolumeFormat, parent: VolumeRef) -> None:
        if fmt is not VolumeFormat.COW:
            raise ValueError("only cow (qcow2) volumes can have a parent")
        if parent.sd_id != ref.sd_id:
            raise ValueError("a volume and its parent must be on the same storage domain")
        self.meta(parent)  # raises KeyError if missing

    def _create_bytes(self, ref: VolumeRef, path: Path, fmt: VolumeFormat, size: int,
                      parent: VolumeRef | None) -> None:
        if fmt is VolumeFormat.RAW:
            with open(path, "wb") as f:
                f.truncate(size)
            return
        if parent is None:
            qemu.create(path, fmt, size)
            return
        qemu.create(path, fmt, size, self._backing_name(ref, parent), self.qemu_fmt(parent))
        self._inherit_bitmaps(path, parent)

    def _inherit_bitmaps(self, path: Path, parent: VolumeRef) -> None:
        """New top of a snapshot tracks the parent's checkpoints from now on."""
        if self.fmt(parent) is not VolumeFormat.COW:
            return
        for name in qemu.bitmaps(self.path(parent)):
            qemu.bitmap_add(path, name)

    def _link_on_hosts(self, ref: VolumeRef) -> None:
        domain = self.domain(ref.sd_id)
        if domain.kind is not DomainKind.BLOCK:
            return
        for host in self.hosts:
            link = self.layout.host_volume_path(host, domain, ref)
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to(self.layout.lv_device(host, ref.sd_id, ref.volume_id))

    def _unlink_on_hosts(self, ref: VolumeRef) -> None:
        domain = self.domain(ref.sd_id)
        if domain.kind is not DomainKind.BLOCK:
            return
        for host in self.hosts:
            for path in (self.layout.host_volume_path(host, domain, ref),
                         self.layout.lv_device(host, ref.sd_id, ref.volume_id)):
                path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.layout.host_volume_path(host, domain, ref).parent.rmdir()

    def remove_volume(self, ref: VolumeRef) -> None:
        with self.disk_lock(ref.disk_id):
            value = self.meta(ref)
            parent = None
            with contextlib.suppress(KeyError):  # the parent may be gone already
                parent = self.parent(ref)
            self._delete(ref)
            if parent is not None and value.voltype == LEAF and not self.children(parent):
                self._write_meta(parent, self.meta(parent).with_voltype(LEAF))

    def _delete(self, ref: VolumeRef) -> None:
        self._unlink_on_hosts(ref)
        path = self.path(ref)
        path.unlink(missing_ok=True)
        self.layout.meta_path(self.domain(ref.sd_id), ref).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # only succeeds once the disk has no volumes left

    # guest data

    def write(self, ref: VolumeRef, offset: int, data: bytes) -> None:
        """Write guest data at `offset` (qcow2 through qemu-io, raw with pwrite)."""
        value = self.meta(ref)
        if offset < 0 or offset + len(data) > value.capacity:
            raise ValueError(f"write {offset}+{len(data)} beyond volume size {value.capacity}")
        with self.disk_lock(ref.disk_id):
            if value.fmt is VolumeFormat.COW:
                qemu.write(self.path(ref), "qcow2", offset, data)
            else:
                qemu.pwrite(self.path(ref), offset, data)

    def fill(self, ref: VolumeRef, offset: int, length: int, seed: int) -> None:
        rng = random.Random(seed)
        for start in range(0, length, _FILL_CHUNK):
            size = min(_FILL_CHUNK, length - start)
            self.write(ref, offset + start, rng.randbytes(size))

    # chain operations

    def merge_into_parent(self, child: VolumeRef, parent: VolumeRef) -> None:
        """Live merge: commit `child` into `parent`, keep `parent`'s id, delete `child`."""
        with self.disk_lock(child.disk_id):
            if self.parent(child) != parent:
                raise ValueError(f"{parent.volume_id} is not the parent of {child.volume_id}")
            child_meta = self.meta(child)
            qemu.commit(self.path(child))
            self._merge_bitmaps(child, parent)
            for grandchild in self.children(child):
                self._rebase(grandchild, parent)
            self._delete(child)
            if child_meta.voltype == LEAF:
                self._write_meta(parent, self.meta(parent).with_voltype(LEAF))

    def _merge_bitmaps(self, child: VolumeRef, parent: VolumeRef) -> None:
        if self.fmt(parent) is not VolumeFormat.COW:
            return
        parent_path, child_path = self.path(parent), self.path(child)
        existing = set(qemu.bitmaps(parent_path))
        for name in qemu.bitmaps(child_path):
            if name not in existing:
                qemu.bitmap_add(parent_path, name)
            qemu.bitmap_merge(parent_path, name, child_path, name)

    def _rebase(self, volume: VolumeRef, new_parent: VolumeRef) -> None:
        qemu.rebase_unsafe(self.path(volume), self._backing_name(volume, new_parent),
                           self.qemu_fmt(new_parent))
        self._write_meta(volume, self.meta(volume).with_parent(new_parent.volume_id))

    def copy_disk(self, chain_top: VolumeRef, dst: VolumeRef, fmt: VolumeFormat) -> None:
        """Collapse the chain ending at `chain_top` into the new single volume `dst`."""
        src_path = self.path(chain_top)
        capacity = self.meta(chain_top).capacity
        with self.disk_lock(dst.disk_id):
            dst_path = self.path(dst)
            if dst_path.exists():
                raise FileExistsError(f"volume {dst} already exists")
            dst_path.parent.mkdir(parents=True, exist_ok=True)
            qemu.convert(src_path, self.qemu_fmt(chain_top), dst_path, fmt)
            self._write_meta(dst, VolumeMeta(dst.sd_id, dst.disk_id, fmt, capacity))
            self._link_on_hosts(dst)

    def info(self, ref: VolumeRef) -> dict[str, object]:
        self.meta(ref)
        return qemu.info(self.path(ref))

    # dirty bitmaps

    def bitmaps(self, ref: VolumeRef) -> list[str]:
        if self.fmt(ref) is not VolumeFormat.COW:
            return []
        return qemu.bitmaps(self.path(ref))

    def add_bitmap(self, top: VolumeRef, name: str) -> None:
        if self.fmt(top) is not VolumeFormat.COW:
            raise ValueError(f"cannot add bitmap {name!r} to raw volume {top.volume_id}")
        with self.disk_lock(top.disk_id):
            if name not in self.bitmaps(top):
                qemu.bitmap_add(self.path(top), name)

    def remove_bitmap(self, chain: list[VolumeRef], name: str) -> None:
        for ref in chain:
            with self.disk_lock(ref.disk_id):
                if name in self.bitmaps(ref):
                    qemu.bitmap_remove(self.path(ref), name)

    def has_bitmap(self, chain: list[VolumeRef], name: str) -> bool:
        return name in self.bitmaps(self.top_of(chain))

    def top_of(self, chain: list[VolumeRef]) -> VolumeRef:
        """The volume of `chain` that is no other member's parent (order agnostic)."""
        if not chain:
            raise ValueError("empty chain")
        parents = {self.meta(ref).parent for ref in chain}
        tops = [ref for ref in chain if ref.volume_id not in parents]
        return tops[0] if len(tops) == 1 else chain[-1]
