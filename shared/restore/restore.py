"""Restore a backup as a new VM, mode-neutral, in the seed's order: per disk, create it
empty, write the backup's full image through the mode's disk sink, read it back through the
mode and compare checksums; then recreate the VM from its OVF and attach the disks to it.

Every engine object a restore creates is recorded in the job's journal (the VM before it is
created, each disk once the engine names it): a restore that fails, or is re-delivered after
its worker died, first removes what was recorded, so it never leaves an empty VM, a floating
disk or an open upload behind, and never trips over its own half-made VM. The first error is
the one reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, Protocol, TypeVar

from shared.backup.copy import copy_chunks
from shared.backup.disk_chunks import DiskChunkWriter
from shared.backup.plan import ChunkPlan, chunk_span
from shared.backup.repo_chunks import RepositoryChunkReader
from shared.engine.client import EngineClient
from shared.errors import DroverError
from shared.jobs import RestoreRequest
from shared.logging import get_logger
from shared.modes import DiskPlace, TransferMode, mode_for
from shared.proxy.attach import unplug_recorded
from shared.qcow2.writer import qcow2_size_bound
from shared.repository.manifest import DiskManifest, Manifest
from shared.repository.repository import Repository
from shared.restore.verify import image_sha256
from shared.state import StateStore

T = TypeVar("T")
BLOCK_STORAGE = {"iscsi", "fcp"}
log = get_logger(__name__)


VM = "vm"
CREATING = "creating:"  # the VM's journal entry before the engine has named it


class RestoreVerificationFailed(DroverError):
    pass


class NameInUse(DroverError):
    pass


class Journal(Protocol):
    store: StateStore

    def record(self, name: str, value: str) -> None: ...

    def objects(self) -> dict[str, str]: ...

    def clear(self) -> None: ...


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
    journal: Journal


def restore_vm(
    engine: EngineClient, repo: Repository, request: RestoreRequest, journal: Journal
) -> RestoreResult:
    undo_recorded(engine, journal)  # what an attempt that died left behind
    manifest = repo.manifest(request.backup_id)
    target = _Target(engine, repo, mode_for(request.mode), manifest, request, journal)
    name = request.name or f"{manifest.vm_name}-restored"
    cluster = request.cluster or manifest.stats.get("placement", {}).get("cluster", "")
    _refuse_taken_name(engine, name)
    wanted = [d for d in manifest.disks if not request.disks or d.disk_id in request.disks]
    with _undone_on_failure(engine, journal):
        disks = [_restore_disk(target, disk) for disk in wanted]
        journal.record(VM, CREATING + name)
        vm_id = engine.add_vm_from_ovf(manifest.ovf, name, cluster)
        journal.record(VM, vm_id)
        for restored in disks:
            where = _placement(manifest, restored.disk_id)
            interface = where.get("interface") or "virtio_scsi"
            engine.attach_disk(vm_id, restored.new_disk_id, bool(where.get("bootable")), interface)
    return RestoreResult(manifest.backup_id, vm_id, name, disks)


def _refuse_taken_name(engine: EngineClient, name: str) -> None:
    if engine.find_vms(names=[name]):
        raise NameInUse(
            f"a VM named {name} already exists",
            hint="choose another name with --name, or remove that VM first",
        )


def _restore_disk(target: _Target, disk: DiskManifest) -> RestoredDisk:
    engine, where = target.engine, _placement(target.manifest, disk.disk_id)
    domain = target.request.storage_domain or where.get("storage_domain_id", "")
    block = _is_block(engine, domain)
    sparse = disk.format == "cow" or not block
    new = engine.add_disk(
        disk.name or disk.disk_id,
        disk.size,
        disk.format,
        domain,
        sparse,
        initial_size=_initial_size(disk) if block and disk.format == "cow" else None,
    )
    target.journal.record(f"disk:{disk.disk_id}", new.id)
    journal = target.journal
    place = DiskPlace(
        engine, new.id, disk.size, disk.format, target.request.manager, journal.store, journal
    )
    _write(target, disk, place, zero_fill=not sparse)
    expected = target.repo.image_sha256(target.manifest.backup_id, disk.disk_id)
    with target.mode.open_readback(place) as source:
        actual = image_sha256(source)
    if actual != expected:
        raise RestoreVerificationFailed(
            f"disk {disk.name or disk.disk_id} restored with checksum {actual}, "
            f"the backup's is {expected}",
            hint="the restored VM was removed; run `drover repo check --read-data`",
        )
    return RestoredDisk(disk.disk_id, new.id, disk.name, actual, True)


def _initial_size(disk: DiskManifest) -> int:
    """A qcow2 disk on a block domain lives in a logical volume that must hold the data: as
    the SDK's upload example, size it for the image up front."""
    return qcow2_size_bound(disk.size, sum(disk.chunk_length(i) for i in disk.chunks))


def _write(target: _Target, disk: DiskManifest, place: DiskPlace, zero_fill: bool) -> None:
    """A preallocated disk may hold stale bytes, so its zero chunks are written too."""
    with target.mode.open_sink(place) as sink:
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
def _undone_on_failure(engine: EngineClient, journal: Journal) -> Iterator[None]:
    try:
        yield
    except BaseException:
        undo_recorded(engine, journal)
        raise


def undo_recorded(engine: EngineClient, journal: Journal) -> None:
    """Remove what the journal says a restore created: disks detached from a proxy VM,
    uploads cancelled, disks removed, the VM removed (found by name when the engine had not
    yet named it). Quiet: the caller's error, if any, is what matters."""
    recorded = journal.objects()
    _quietly(lambda: unplug_recorded(engine, recorded), "detaching disks from the proxy VM")
    disks = [v for k, v in recorded.items() if k.startswith("disk:") and v]
    for transfer in _quietly(lambda: engine.open_transfers(disk_ids=disks), "listing") or []:
        _quietly(partial(engine.cancel_transfer, transfer.id), f"cancelling {transfer.id}")
    for disk_id in disks:
        _quietly(partial(engine.remove_disk, disk_id), f"removing disk {disk_id}")
    vm_id = _recorded_vm(engine, recorded.get(VM, ""))
    if vm_id:
        _quietly(lambda: engine.remove_vm(vm_id), f"removing VM {vm_id}")
    journal.clear()


def _recorded_vm(engine: EngineClient, value: str) -> str:
    if not value.startswith(CREATING):
        return value
    found = _quietly(lambda: engine.find_vms(names=[value[len(CREATING) :]]), "finding the VM")
    return found[0].id if found else ""


def _quietly(call: Callable[[], T], doing: str) -> T | None:
    try:
        return call()
    except Exception as error:
        log.warning("undoing a restore: failed", doing=doing, error=str(error))
        return None
