"""Turn an export request (volume, chain or not, dirty bitmap, format) into qemu-nbd."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable

from lab.dataplane import VolumeFormat, VolumeRef

from . import qemu
from .nbd import ExportSpec, NbdExport, NbdServer
from .storage import Storage


def image_spec(storage: Storage, top: VolumeRef, *, backing_chain: bool, writable: bool,
               fmt: VolumeFormat) -> ExportSpec:
    """How qemu-nbd must open `top` for this export.

    - fmt=COW: the raw bytes of the top qcow2 file itself (a "cow" image transfer).
    - backing_chain=True: guest data of the whole chain.
    - backing_chain=False on a qcow2 volume: guest data of that layer only.
    """
    path = storage.path(top)
    volume_fmt = storage.qemu_fmt(top)
    if fmt is VolumeFormat.COW:
        return ExportSpec(str(path), "raw", writable)
    if backing_chain or volume_fmt == "raw":
        return ExportSpec(str(path), volume_fmt, writable)
    options = {"driver": "qcow2", "file": {"driver": "file", "filename": str(path)},
               "backing": None}
    return ExportSpec("json:" + json.dumps(options), None, writable)


def merge_dirty_bitmap(storage: Storage, top: VolumeRef, name: str,
                       backing_chain: bool) -> str:
    """Create a temporary bitmap in `top`: the union of `name` over the exported layers."""
    if storage.fmt(top) is not VolumeFormat.COW:
        raise ValueError(f"volume {top.volume_id} is raw: it has no dirty bitmaps")
    layers = storage.chain(top) if backing_chain else [top]
    sources = [ref for ref in layers if name in storage.bitmaps(ref)]
    if not sources:
        raise ValueError(f"bitmap {name!r} not found in the chain of {top.volume_id}")
    tmp = f"lab-export-{uuid.uuid4().hex[:12]}"
    top_path = storage.path(top)
    qemu.bitmap_add(top_path, tmp, enable=False)
    try:
        for ref in sources:
            qemu.bitmap_merge(top_path, tmp, storage.path(ref), name)
    except Exception:
        qemu.bitmap_remove(top_path, tmp)
        raise
    return tmp


class Exporter:
    def __init__(self, storage: Storage, server: NbdServer) -> None:
        self._storage = storage
        self._server = server

    def export(self, top: VolumeRef, *, backing_chain: bool, writable: bool,
               dirty_bitmap: str | None, fmt: VolumeFormat,
               on_close: Callable[[], None] | None = None) -> NbdExport:
        if dirty_bitmap is not None and (writable or fmt is VolumeFormat.COW):
            raise ValueError("dirty bitmaps are only exported read-only in raw format")
        spec = image_spec(self._storage, top, backing_chain=backing_chain,
                          writable=writable, fmt=fmt)
        with self._storage.disk_lock(top.disk_id):
            if dirty_bitmap is None:
                return self._server.start(spec, on_close)
            tmp = merge_dirty_bitmap(self._storage, top, dirty_bitmap, backing_chain)
            spec = ExportSpec(spec.image, spec.fmt, spec.writable, tmp)
            cleanup = self._cleanup_bitmap(top, tmp, on_close)
            try:
                return self._server.start(spec, cleanup)
            except Exception:
                cleanup()
                raise

    def _cleanup_bitmap(self, top: VolumeRef, tmp: str,
                        on_close: Callable[[], None] | None) -> Callable[[], None]:
        def cleanup() -> None:
            try:
                with self._storage.disk_lock(top.disk_id), contextlib.suppress(KeyError):
                    self._storage.remove_bitmap([top], tmp)
            finally:
                if on_close is not None:
                    on_close()

        return cleanup
