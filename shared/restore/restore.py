"""Restore a backup as a new VM, mode-neutral: recreate the VM from its OVF, then per disk
create it, write the backup's full image through the mode's disk sink, read it back through
the mode and compare checksums, and attach it.

Anything created for a restore that fails is removed again; the first error is the one
reported.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from shared.backup.copy import copy_chunks
from shared.backup.disk_chunks import DiskChunkWriter
from shared.backup.plan import ChunkPlan, chunk_span
from shared.backup.repo_chunks import RepositoryChunkReader
from shared.engine.client import EngineClient
from shared.errors import DroverError
from shared.jobs import RestoreRequest
from shared.logging import get_logger
from shared.modes import TransferMode, mode_for
from shared.repository.manifest import DiskManifest, Manifest
from shared.repository.repository import Repository
from shared.restore.verify import image_sha256

BLOCK_STORAGE = {"iscsi", "fcp"}
log = get_logger(__name__)


class RestoreVerificationFailed(DroverError):
    pass


@dataclass
class RestoredDisk:
    disk_id: str  # in the backup
    new_disk_id: str
    name: str
    sha256: str
    verified: bool


@dataclass
class RestoreResult:
    backup_id: str
    vm_id: str
    vm_name: str
    disks: list[RestoredDisk]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Target:
    engine: EngineClient
    repo: Repository
    mode: TransferMode
    manifest: Manifest
    request: RestoreRequest


def restore_vm(engine: EngineClient, repo: Repository, request: RestoreRequest) -> RestoreResult:
    manifest = repo.manifest(request.backup_id)
    target = _Target(engine, repo, mode_for(request.mode), manifest, request)
    name = request.name or f"{manifest.vm_name}-restored"
    cluster = request.cluster or manifest.stats.get("placement", {}).get("cluster", "")
    with _undo_on_failure(engine) as created:
        vm_id = engine.add_vm_from_ovf(manifest.ovf, name, cluster)
        created.append(("vm", vm_id))
        disks = [
            _restore_disk(target, disk, vm_id, created)
            for disk in manifest.disks
            if not request.disks or disk.disk_id in request.disks
        ]
    return RestoreResult(manifest.backup_id, vm_id, name, disks)


def _restore_disk(
    target: _Target, disk: DiskManifest, vm_id: str, created: list[tuple[str, str]]
) -> RestoredDisk:
    engine, where = target.engine, _placement(target.manifest, disk.disk_id)
    domain = target.request.storage_domain or where.get("storage_domain_id", "")
    sparse = disk.format == "cow" or not _is_block(engine, domain)
    new = engine.add_disk(disk.name or disk.disk_id, disk.size, disk.format, domain, sparse)
    created.append(("disk", new.id))
    _write(target, disk, new.id, zero_fill=not sparse)
    expected = target.repo.image_sha256(target.manifest.backup_id, disk.disk_id)
    with target.mode.open_readback(engine, new.id) as source:
        actual = image_sha256(source)
    if actual != expected:
        raise RestoreVerificationFailed(
            f"disk {disk.name or disk.disk_id} restored with checksum {actual}, "
            f"the backup's is {expected}",
            hint="the restored VM was removed; run `drover repo check --read-data`",
        )
    engine.attach_disk(
        vm_id, new.id, bool(where.get("bootable")), where.get("interface") or "virtio_scsi"
    )
    return RestoredDisk(disk.disk_id, new.id, disk.name, actual, True)


def _write(target: _Target, disk: DiskManifest, new_disk_id: str, zero_fill: bool) -> None:
    """A preallocated disk may hold stale bytes, so its zero chunks are written too."""
    with target.mode.open_sink(target.engine, new_disk_id) as sink:
        copy_chunks(
            _plans(disk, zero_fill),
            RepositoryChunkReader(target.repo, disk),
            DiskChunkWriter(sink, zero_fill=zero_fill),
            workers=sink.connections,
            buffer_size=disk.chunk_size,
        )


def _plans(disk: DiskManifest, every_chunk: bool) -> Iterator[ChunkPlan]:
    for index in range(disk.chunk_count):
        if every_chunk or index in disk.chunks:
            span = chunk_span(index, disk.chunk_size, disk.size)
            yield ChunkPlan(index, span.start, span.length, (span,))


def _placement(manifest: Manifest, disk_id: str) -> dict[str, Any]:
    disks: dict[str, dict[str, Any]] = manifest.stats.get("placement", {}).get("disks", {})
    return disks.get(disk_id, {})


def _is_block(engine: EngineClient, domain: str) -> bool:
    """Block domains (iSCSI, FC) take raw disks only preallocated, as the engine insists."""
    for sd in engine.storage_domains():
        if domain in (sd.id, sd.name):
            return str(sd.type) in BLOCK_STORAGE
    return False


@contextmanager
def _undo_on_failure(engine: EngineClient) -> Iterator[list[tuple[str, str]]]:
    created: list[tuple[str, str]] = []
    try:
        yield created
    except BaseException:
        for kind, object_id in reversed(created):
            _remove_quietly(engine, kind, object_id)
        raise


def _remove_quietly(engine: EngineClient, kind: str, object_id: str) -> None:
    try:
        if kind == "vm":
            engine.remove_vm(object_id)
        else:
            engine.remove_disk(object_id)
    except Exception as error:
        log.warning(
            "could not remove what a failed restore created",
            kind=kind,
            id=object_id,
            error=str(error),
        )
