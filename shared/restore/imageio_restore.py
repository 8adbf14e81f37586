"""Restore through the engine: recreate the VM from its OVF, create each disk, upload the
backup's full image through an image transfer, read it back and compare checksums.

Anything created for a restore that fails is removed again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from shared.errors import DroverError
from shared.jobs import RestoreRequest
from shared.logging import get_logger
from shared.restore.verify import image_sha256
from shared.sources.imageio import ImageioSink, ImageioSource

WRITE_CONNECTIONS = 4
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


def restore_vm(engine: Any, repo: Any, request: RestoreRequest) -> RestoreResult:
    manifest = repo.manifest(request.backup_id)
    placement = manifest.stats.get("placement", {})
    name = request.name or f"{manifest.vm_name}-restored"
    cluster = request.cluster or placement.get("cluster", "")
    with _undo_on_failure(engine) as created:
        vm_id = engine.add_vm_from_ovf(manifest.ovf, name, cluster)
        created.append(("vm", vm_id))
        disks = []
        for disk in manifest.disks:
            if request.disks and disk.disk_id not in request.disks:
                continue
            where = placement.get("disks", {}).get(disk.disk_id, {})
            disks.append(
                _restore_disk(engine, repo, manifest, disk, request, where, vm_id, created)
            )
    return RestoreResult(manifest.backup_id, vm_id, name, disks)


def _restore_disk(
    engine: Any,
    repo: Any,
    manifest: Any,
    disk: Any,
    request: RestoreRequest,
    where: dict[str, Any],
    vm_id: str,
    created: list[tuple[str, str]],
) -> RestoredDisk:
    domain = request.storage_domain or where.get("storage_domain_id", "")
    sparse = disk.format == "cow" or not _is_block(engine, domain)
    new = engine.add_disk(disk.name or disk.disk_id, disk.size, disk.format, domain, sparse)
    created.append(("disk", new.id))
    _upload(engine, repo, manifest.backup_id, disk, new.id, zero_fill=not sparse)
    expected = repo.image_sha256(manifest.backup_id, disk.disk_id)
    actual = _read_back_sha256(engine, new.id)
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


def _is_block(engine: Any, domain: str) -> bool:
    """Block domains (iSCSI, FC) take raw disks only preallocated, as the engine insists."""
    for sd in engine.storage_domains():
        if domain in (sd.id, sd.name):
            return str(sd.type) in BLOCK_STORAGE
    return False


def _upload(
    engine: Any, repo: Any, backup_id: str, disk: Any, new_disk_id: str, zero_fill: bool
) -> None:
    """A preallocated disk may hold stale bytes, so its zero chunks are written too."""
    transfer = engine.start_transfer(disk_id=new_disk_id, direction="upload")
    try:
        with ImageioSink(transfer, engine.ca_file) as sink:
            chunks = repo.read_image(backup_id, disk.disk_id)
            _write_chunks(sink, chunks, disk, zero_fill)
            sink.flush()
        engine.finalize_transfer(transfer.id)
    except BaseException:
        engine.cancel_transfer(transfer.id)
        raise


def _write_chunks(
    sink: Any, chunks: Iterator[tuple[int, bytes | None]], disk: Any, zero_fill: bool
) -> None:
    """Parallel writes, at most a few chunks in memory."""
    pending: deque[Future[None]] = deque()
    with ThreadPoolExecutor(WRITE_CONNECTIONS) as pool:
        for offset, data in chunks:
            if data is not None:
                pending.append(pool.submit(sink.write, offset, data))
            elif zero_fill:
                length = min(disk.chunk_size, disk.size - offset)
                pending.append(pool.submit(sink.zero, offset, length))
            while len(pending) > 2 * WRITE_CONNECTIONS:
                pending.popleft().result()
        for write in pending:
            write.result()


def _read_back_sha256(engine: Any, disk_id: str) -> str:
    transfer = engine.start_transfer(disk_id=disk_id, direction="download")
    try:
        with ImageioSource(transfer, engine.ca_file) as source:
            digest = image_sha256(source)
        engine.finalize_transfer(transfer.id)
        return digest
    except BaseException:
        engine.cancel_transfer(transfer.id)
        raise


@contextmanager
def _undo_on_failure(engine: Any) -> Iterator[list[tuple[str, str]]]:
    created: list[tuple[str, str]] = []
    try:
        yield created
    except BaseException:
        for kind, object_id in reversed(created):
            _remove_quietly(engine, kind, object_id)
        raise


def _remove_quietly(engine: Any, kind: str, object_id: str) -> None:
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
