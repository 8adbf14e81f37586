"""Full or incremental: the rhythm of the policy and the health of the checkpoint chain."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.jobs import BackupRequest


@dataclass(frozen=True)
class KindChoice:
    kind: str
    parent_id: str | None = None
    from_checkpoint: str | None = None
    warnings: list[str] = field(default_factory=list)


FULL = KindChoice("full")


def choose_kind(request: BackupRequest, repo: Any, engine: Any) -> KindChoice:
    """Incremental from the VM's last backup when the policy wants it and the chain holds."""
    if not request.incremental:
        return FULL
    last = _last_backup(repo, request)
    if last is None or not last.checkpoint_id:
        return FULL
    if _chain_length(repo, last) + 1 >= max(request.full_every, 1):
        return FULL
    if last.checkpoint_id not in engine.checkpoints(request.vm_id):
        warning = (
            f"checkpoint chain broken: the engine no longer has checkpoint {last.checkpoint_id} "
            f"of backup {last.backup_id}; taking a full backup"
        )
        return KindChoice("full", warnings=[warning])
    return KindChoice("incremental", last.backup_id, last.checkpoint_id)


def _last_backup(repo: Any, request: BackupRequest) -> Any:
    mine = [b for b in repo.list_backups() if b.vm_id == request.vm_id and b.mode == request.mode]
    return max(mine, key=lambda b: b.created_at) if mine else None


def _chain_length(repo: Any, backup: Any) -> int:
    """Incrementals since the last full, counting `backup` itself."""
    length = 0
    while backup is not None and backup.kind == "incremental":
        length += 1
        backup = repo.manifest(backup.parent_id) if backup.parent_id else None
    return length
