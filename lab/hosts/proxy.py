"""Disks hot-plugged into proxy VMs, visible as raw block devices under /dev/disk/by-id.

A single raw volume is linked directly (writes by the proxy go to the disk, like a
real hot-plug). A qcow2 chain is materialized as a sparse raw image of the guest data
up to the chosen volume: for a read-only attachment (a disk snapshot, what a backup reads)
that is a point-in-time view; for a writable one (a restore writing into an empty disk) the
view is written back into the volume when it is unplugged, so what the proxy wrote lands
in the disk as it would through a real hot-plug.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from lab.dataplane import VolumeFormat, VolumeRef

from . import qemu
from .layout import Layout
from .storage import Storage

log = logging.getLogger(__name__)


class ProxyDevices:
    def __init__(self, layout: Layout, storage: Storage) -> None:
        self._layout = layout
        self._storage = storage
        self._lock = threading.Lock()
        # (proxy VM, device) -> the volume its raw view is written back into on detach
        self._write_back: dict[tuple[str, str], VolumeRef] = {}

    def proxy_root(self, proxy_vm: str) -> Path:
        return self._layout.proxy_root(proxy_vm)

    def _images_dir(self, proxy_vm: str) -> Path:
        return self.proxy_root(proxy_vm) / "images"

    def _view(self, proxy_vm: str, device_name: str) -> Path:
        return self._images_dir(proxy_vm) / f"{device_name}.raw"

    def attach(
        self, proxy_vm: str, top: VolumeRef, device_name: str, writable: bool = False
    ) -> str:
        """`writable`: the proxy's writes must reach `top` (not a disk snapshot, not
        read-only)."""
        by_id = self._layout.by_id_dir(proxy_vm)
        device = by_id / device_name
        with self._lock:
            if device.is_symlink() or device.exists():
                raise FileExistsError(f"{device_name} is already attached to {proxy_vm}")
            by_id.mkdir(parents=True, exist_ok=True)
            target = self._backing_file(proxy_vm, top, device_name)
            device.symlink_to(target)
            if writable and target == self._view(proxy_vm, device_name):
                self._write_back[(proxy_vm, device_name)] = top
        return str(device)

    def _backing_file(self, proxy_vm: str, top: VolumeRef, device_name: str) -> Path:
        if self._storage.fmt(top) is VolumeFormat.RAW:
            return self._storage.path(top)
        view = self._view(proxy_vm, device_name)
        view.parent.mkdir(parents=True, exist_ok=True)
        with self._storage.disk_lock(top.disk_id):
            qemu.convert(self._storage.path(top), "qcow2", view, VolumeFormat.RAW)
        return view

    def detach(self, proxy_vm: str, device_name: str) -> None:
        """Unplug; a writable view is written back first (if that fails, the device stays
        attached and the error is raised)."""
        device = self._layout.by_id_dir(proxy_vm) / device_name
        view = self._view(proxy_vm, device_name)
        with self._lock:
            volume = self._write_back.get((proxy_vm, device_name))
        if volume is not None and view.exists():
            self._write_into(view, volume)
        with self._lock:
            self._write_back.pop((proxy_vm, device_name), None)
            device.unlink(missing_ok=True)
            view.unlink(missing_ok=True)

    def _write_into(self, view: Path, volume: VolumeRef) -> None:
        """Copy the raw view over the qcow2 volume (-n: into the existing image, zeros
        included, so what the proxy cleared reads as zeros through the volume's chain)."""
        with self._storage.disk_lock(volume.disk_id):
            path = self._storage.path(volume)
            if not path.exists():  # the disk was removed meanwhile: nothing to keep
                log.info("not writing %s back: volume %s is gone", view.name, volume)
                return
            argv = ["qemu-img", "convert", "-q", "-n", "-f", "raw", "-O", "qcow2"]
            qemu.run([*argv, str(view), str(path)])

    def devices(self, proxy_vm: str) -> list[str]:
        by_id = self._layout.by_id_dir(proxy_vm)
        if not by_id.is_dir():
            return []
        return sorted(p.name for p in by_id.iterdir())
