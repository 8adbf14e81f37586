"""The manifest a finished job commits: every disk's full chunk map, resolved."""

from __future__ import annotations

from typing import Any

from shared.backup.context import DiskRef, JobContext
from shared.repository.manifest import DiskManifest, Manifest, utc_now
from shared.state import StateStore


def build_manifest(
    context: JobContext,
    results: list[dict[str, Any]],
    store: StateStore,
    repo: Any,
    warnings: list[str],
) -> Manifest:
    job_id = context.request.job_id
    parent = repo.manifest(context.parent_id) if context.parent_id else None
    disks = [
        _disk_manifest(
            context.disk(r["disk_id"]),
            store.stored_chunks(job_id, r["disk_id"]),
            parent.disk(r["disk_id"]).chunks if r["incremental"] and parent else {},
            repo.chunk_size,
        )
        for r in results
    ]
    return Manifest(
        backup_id=job_id,
        vm_id=context.request.vm_id,
        vm_name=context.vm_name,
        kind="incremental" if context.kind == "incremental" else "full",
        parent_id=context.parent_id if context.kind == "incremental" else None,
        mode=context.request.mode,
        created_at=utc_now(),
        ovf=context.ovf,
        checkpoint_id=context.to_checkpoint,
        disks=disks,
        warnings=list(warnings),
        stats=_stats(store, context),
    )


def _disk_manifest(
    disk: DiskRef, stored: dict[int, str], parent_chunks: dict[int, str], chunk_size: int
) -> DiskManifest:
    chunks = dict(parent_chunks)
    for index, digest in stored.items():
        if digest:
            chunks[index] = digest
        else:
            chunks.pop(index, None)
    fmt = "cow" if disk.format == "cow" else "raw"
    return DiskManifest(disk.id, disk.name, disk.size, fmt, chunk_size, chunks)


def _stats(store: StateStore, context: JobContext) -> dict[str, Any]:
    job = store.job(context.request.job_id)
    stats: dict[str, Any] = {"placement": _placement(context)}
    if job is not None:
        stats["bytes_read"] = sum(d.bytes_read for d in job.disks)
        last = max((d.updated_at for d in job.disks), default=job.started_at)
        stats["seconds"] = round(last - job.started_at, 3)
    return stats


def _placement(context: JobContext) -> dict[str, Any]:
    """Where the VM and its disks lived: the default target of a restore."""
    return {
        "cluster": context.cluster,
        "disks": {
            d.id: {
                "storage_domain_id": d.storage_domain_id,
                "interface": d.interface,
                "bootable": d.bootable,
            }
            for d in context.disks
        },
    }
