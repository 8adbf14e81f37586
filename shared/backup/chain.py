"""Full or incremental: the rhythm of the policy and the health of the chain.

Decided once, in `prepare`, from the repository's summaries (no manifest is read) and the
mode's chain anchor (the engine's checkpoint, or a kept snapshot). Every reason an incremental
becomes a full is returned as a warning for the job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from shared.engine.client import EngineClient
from shared.jobs import BackupRequest
from shared.modes.base import TransferMode
from shared.repository.manifest import BackupSummary


@dataclass(frozen=True)
class KindChoice:
    kind: str
    parent: BackupSummary | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def from_anchor(self) -> str | None:
        return self.parent.checkpoint_id if self.parent else None


FULL = KindChoice("full")


def choose_kind(
    request: BackupRequest,
    backups: Sequence[BackupSummary],
    mode: TransferMode,
    engine: EngineClient,
) -> KindChoice:
    """Incremental from the VM's last backup when the policy wants it and the chain holds."""
    if not request.incremental:
        return FULL
    if not mode.incremental:
        return KindChoice("full", warnings=[f"mode {mode.name} makes full backups only"])
    mine = [b for b in backups if b.vm_id == request.vm_id and b.mode == request.mode]
    if not mine:
        return FULL
    last = max(mine, key=lambda b: b.created_at)
    if _chain_length(mine, last) + 1 >= max(request.full_every, 1):
        return FULL
    return _from_last(last, mode, engine, request.vm_id)


def _from_last(
    last: BackupSummary, mode: TransferMode, engine: EngineClient, vm_id: str
) -> KindChoice:
    if not last.checkpoint_id:
        why = f"backup {last.backup_id} left no chain anchor (no disk tracks changed blocks)"
        return KindChoice("full", warnings=[f"{why}; taking a full backup"])
    if not mode.anchor_exists(engine, vm_id, last.checkpoint_id):
        warning = (
            f"{mode.anchor_name} chain broken: the engine no longer has {mode.anchor_name} "
            f"{last.checkpoint_id} of backup {last.backup_id}; taking a full backup"
        )
        return KindChoice("full", warnings=[warning])
    return KindChoice("incremental", last)


def _chain_length(backups: Sequence[BackupSummary], backup: BackupSummary | None) -> int:
    """Incrementals since the last full, counting `backup` itself."""
    by_id = {b.backup_id: b for b in backups}
    length = 0
    while backup is not None and backup.kind == "incremental":
        length += 1
        backup = by_id.get(backup.parent_id or "")
    return length
