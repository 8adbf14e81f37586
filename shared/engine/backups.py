"""VM backups (incremental backup API) and checkpoints."""

from __future__ import annotations

import contextlib
import re
from typing import Any

import ovirtsdk4 as sdk
import ovirtsdk4.types as types

from shared.engine import convert
from shared.engine.errors import (
    CheckpointInvalid,
    EngineOperationFailed,
    EngineTimeout,
    fault_text,
)
from shared.engine.models import BackupInfo
from shared.engine.polling import wait_for
from shared.errors import DroverError

OPEN_PHASES_DONE = ("succeeded", "failed")
_CHECKPOINT = re.compile(r"checkpoint", re.IGNORECASE)
CLEANUP_TIMEOUT_S = 60.0


def _service(system: Any, vm_id: str) -> Any:
    return system.vms_service().vm_service(vm_id).backups_service()


def checkpoints(system: Any, vm_id: str) -> list[str]:
    """Checkpoint ids, oldest first (following the parent chain)."""
    items = system.vms_service().vm_service(vm_id).checkpoints_service().list()
    items = sorted(items, key=lambda c: c.creation_date.timestamp() if c.creation_date else 0.0)
    children = {c.parent_id: c for c in items if c.parent_id}
    ids = {c.id for c in items}
    roots = [c for c in items if not c.parent_id or c.parent_id not in ids]
    ordered: list[str] = []
    for root in roots:
        node: Any = root
        while node is not None and node.id not in ordered:
            ordered.append(node.id)
            node = children.get(node.id)
    ordered += [c.id for c in items if c.id not in ordered]
    return ordered


def remove_checkpoint(system: Any, vm_id: str, checkpoint_id: str) -> None:
    checkpoints_ = system.vms_service().vm_service(vm_id).checkpoints_service()
    with contextlib.suppress(sdk.NotFoundError):
        checkpoints_.checkpoint_service(checkpoint_id).remove()


def get(system: Any, vm_id: str, backup_id: str) -> BackupInfo | None:
    """The backup, or None once the engine has forgotten it."""
    try:
        return convert.backup_info(_service(system, vm_id).backup_service(backup_id).get())
    except sdk.NotFoundError:
        return None


def open_backups(system: Any, vm_id: str) -> list[BackupInfo]:
    infos = [convert.backup_info(b) for b in _service(system, vm_id).list()]
    return [b for b in infos if b.phase not in OPEN_PHASES_DONE]


def add(
    system: Any,
    vm_id: str,
    disk_ids: list[str],
    from_checkpoint_id: str | None,
    backup_id: str | None = None,
) -> BackupInfo:
    """Add the backup. `backup_id` chosen by the caller lets it record the backup before it
    exists, and makes this idempotent: a backup with that id already there (an earlier
    attempt that reached the engine) is returned instead of adding a second one."""
    if backup_id and (existing := get(system, vm_id, backup_id)) is not None:
        return existing
    spec = types.Backup(
        id=backup_id,
        disks=[types.Disk(id=d) for d in disk_ids],
        from_checkpoint_id=from_checkpoint_id or None,
    )
    try:
        return convert.backup_info(_service(system, vm_id).add(spec))
    except sdk.Error as e:
        if from_checkpoint_id and e.code in (400, 404, 409) and _CHECKPOINT.search(fault_text(e)):
            raise _invalid_checkpoint(vm_id, from_checkpoint_id, fault_text(e)) from e
        raise


def wait_ready(
    system: Any, vm_id: str, backup_id: str, from_checkpoint_id: str | None, timeout_s: float
) -> BackupInfo:
    """The backup once READY; after `timeout_s`, EngineTimeout (and the backup abandoned)."""
    try:
        return wait_for(
            lambda: _ready(system, vm_id, backup_id, from_checkpoint_id),
            timeout_s=timeout_s,
            what=f"backup {backup_id} of VM {vm_id} to be ready",
        )
    except EngineTimeout:
        _abandon(system, vm_id, backup_id)
        raise


def _invalid_checkpoint(vm_id: str, checkpoint_id: str, why: str) -> CheckpointInvalid:
    return CheckpointInvalid(
        f"VM {vm_id} cannot back up incrementally from checkpoint {checkpoint_id}: {why}",
        hint="take a full backup; it starts a new checkpoint chain",
    )


def _ready(
    system: Any, vm_id: str, backup_id: str, from_checkpoint_id: str | None
) -> BackupInfo | None:
    info = get(system, vm_id, backup_id)
    if info is None or info.phase == "failed":
        why = "it failed" if info else "it disappeared"
        if from_checkpoint_id:
            raise _invalid_checkpoint(vm_id, from_checkpoint_id, f"the backup {why}")
        raise EngineOperationFailed(
            f"backup {backup_id} of VM {vm_id} {why} before it was ready",
            hint="see the engine's events for the VM; retry",
        )
    return info if info.phase == "ready" else None


def _abandon(system: Any, vm_id: str, backup_id: str) -> None:
    """Best effort after a failed start: finalize once it allows it, ignore what fails."""
    with contextlib.suppress(DroverError, sdk.Error):
        wait_for(
            lambda: (
                get(system, vm_id, backup_id) is None or _try_finalize(system, vm_id, backup_id)
            ),
            timeout_s=CLEANUP_TIMEOUT_S,
            what=f"backup {backup_id} to accept finalize",
        )


def _try_finalize(system: Any, vm_id: str, backup_id: str) -> bool:
    """Finalize; True once accepted or no longer needed (finalizing, done, gone)."""
    info = get(system, vm_id, backup_id)
    if info is None or info.phase in ("finalizing", *OPEN_PHASES_DONE):
        return True
    try:
        _service(system, vm_id).backup_service(backup_id).finalize()
        return True
    except sdk.NotFoundError:
        return True
    except sdk.Error as e:
        if e.code == 409:  # not ready yet (initializing/starting)
            return False
        raise


def finalize(system: Any, vm_id: str, backup_id: str, timeout_s: float) -> None:
    """Finalize and wait until SUCCEEDED (or gone); EngineOperationFailed on FAILED."""
    wait_for(
        lambda: _try_finalize(system, vm_id, backup_id),
        timeout_s=timeout_s,
        what=f"backup {backup_id} of VM {vm_id} to accept finalize",
    )
    wait_for(
        lambda: _finished(system, vm_id, backup_id),
        timeout_s=timeout_s,
        what=f"backup {backup_id} of VM {vm_id} to finish",
    )


def _finished(system: Any, vm_id: str, backup_id: str) -> bool:
    info = get(system, vm_id, backup_id)
    if info is not None and info.phase == "failed":
        raise EngineOperationFailed(
            f"backup {backup_id} of VM {vm_id} failed while finalizing",
            hint="see the engine's events for the VM",
        )
    return info is None or info.phase == "succeeded"
