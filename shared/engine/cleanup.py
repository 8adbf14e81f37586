"""Leave nothing behind on a VM: cancel its open image transfers, finalize its open backups."""

from __future__ import annotations

from typing import Any

import ovirtsdk4 as sdk

from shared.engine import backups, transfers
from shared.engine.models import CleanupReport
from shared.logging import get_logger

log = get_logger(__name__)


def cleanup_vm(system: Any, vm_id: str, disk_ids: list[str], timeout_s: float) -> CleanupReport:
    """Idempotent; objects that are already gone are not errors."""
    open_backups = _vm_backups(system, vm_id)
    backup_ids = {b.id for b in open_backups}
    wanted = set(disk_ids) | {d for b in open_backups for d in b.disk_ids}
    report = CleanupReport()
    for transfer in transfers.open_transfers(system, sorted(wanted)):
        if transfer.disk_id in disk_ids or transfer.backup_id in backup_ids:
            log.info("cancelling image transfer", transfer_id=transfer.id, vm_id=vm_id)
            transfers.cancel(system, transfer.id, wait_s=timeout_s)
            report.cancelled_transfers.append(transfer.id)
    for backup in open_backups:
        log.info("finalizing backup", backup_id=backup.id, phase=backup.phase, vm_id=vm_id)
        backups.finalize(system, vm_id, backup.id, timeout_s)
        report.finalized_backups.append(backup.id)
    return report


def _vm_backups(system: Any, vm_id: str) -> list[Any]:
    try:
        return backups.open_backups(system, vm_id)
    except sdk.NotFoundError:  # the VM is gone, and its backups with it
        return []
