"""Disks hot-plugged into proxy VMs, visible as raw block devices under /dev/disk/by-id.

A single raw volume is linked directly (writes by the proxy go to the disk, like a
real hot-plug). A qcow2 chain is materialized as a sparse raw image of the guest data
up to the chosen volume (a point-in-time view, which is what a backup reads).
"""

from __future__ import annotations

import threading
from pathlib import Path

from lab.dataplane import VolumeFormat, VolumeRef

from . import qemu
from .layout import Layout
from .storage import Storage


class ProxyDevices:
    def __init__(self, layout: Layout, storage: Storage) -> None:
        self._layout = layout
        self._storage = storage
        self._lock = threading.Lock()

    def proxy_root(self, proxy_vm: str) -> Path:
        return self._layout.proxy_root(proxy_vm)

    def _images_dir(self, proxy_vm: str) -> Path:
        return self.proxy_root(proxy_vm) / "images"

    def attach(self, proxy_vm: str, top: VolumeRef, device_name: str) -> str:
        by_id = self._layout.by_id_dir(proxy_vm)
        device = by_id / device_name
        with self._lock:
            if device.is_symlink() or device.exists():
                raise FileExistsError(f"{device_name} is already attached to {proxy_vm}")
            by_id.mkdir(parents=True, exist_ok=True)
            target = self._backing_file(proxy_vm, top, device_name)
            device.symlink_to(target)
        return str(device)

    def _backing_file(self, proxy_vm: str, top: VolumeRef, device_name: str) -> Path:
        if self._storage.fmt(top) is VolumeFormat.RAW:
            return self._storage.path(top)
        images = self._images_dir(proxy_vm)
        images.mkdir(parents=True, exist_ok=True)
        view = images / f"{device_name}.raw"
        with self._storage.disk_lock(top.disk_id):
            qemu.convert(self._storage.path(top), "qcow2", view, VolumeFormat.RAW)
        return view

    def detach(self, proxy_vm: str, device_name: str) -> None:
        device = self._layout.by_id_dir(proxy_vm) / device_name
        with self._lock:
            device.unlink(missing_ok=True)
            (self._images_dir(proxy_vm) / f"{device_name}.raw").unlink(missing_ok=True)

    def devices(self, proxy_vm: str) -> list[str]:
        by_id = self._layout.by_id_dir(proxy_vm)
        if not by_id.is_dir():
            return []
        return sorted(p.name for p in by_id.iterdir())
