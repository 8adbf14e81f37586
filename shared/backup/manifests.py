"""The manifest a finished job commits: every disk's full chunk map, resolved.

The parent's manifest is read here, once per job: an incremental disk's map is the parent's
overlaid with the chunks this job re-read.
"""

from __future__ import annotations

from typing import Any

from shared.backup.context import DiskRef, JobContext
from shared.repository.manifest import DiskManifest, Manifest, resolve_chunks, utc_now
from shared.repository.repository import Repository
from shared.state import StateStore


def build_manifest(
    context: JobContext, store: StateStore, repo: Repository, ovf: str, warnings: list[str]
) -> Manifest:
    parent = repo.manifest(context.parent_id) if context.parent_id else None
    disks = []
    for disk in context.disks:
        base = parent.disk(disk.id).chunks if parent and disk.incremental else {}
        stored = store.stored_chunks(context.job_id, disk.id)
        chain = store.disk_chain(context.job_id, disk.id)
        disks.append(_disk_manifest(disk, stored, base, repo, chain))
    incremental = context.kind == "incremental"
    return Manifest(
        backup_id=context.job_id,
        vm_id=context.vm_id,
        vm_name=context.vm_name,
        kind="incremental" if incremental else "full",
        parent_id=context.parent_id if incremental else None,
        mode=context.request.mode,
        created_at=utc_now(),
        ovf=ovf,
        checkpoint_id=context.anchor,
        disks=disks,
        warnings=list(warnings),
        stats=_stats(store, context),
    )


def _disk_manifest(
    disk: DiskRef,
    stored: dict[int, str],
    parent_chunks: dict[int, str],
    repo: Repository,
    chain: list[dict[str, Any]],
) -> DiskManifest:
    changed = {index: digest or None for index, digest in stored.items()}
    chunks = resolve_chunks(parent_chunks, changed, disk.size, repo.chunk_size)
    fmt = "cow" if disk.format == "cow" else "raw"
    return DiskManifest(disk.id, disk.name, disk.size, fmt, repo.chunk_size, chunks, chain=chain)


def _stats(store: StateStore, context: JobContext) -> dict[str, Any]:
    job = store.job(context.job_id)
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
