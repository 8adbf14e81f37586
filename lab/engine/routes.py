"""Every API route the engine serves, in one place."""

from __future__ import annotations

from lab.engine import (
    attachments,
    backups,
    details,
    disks,
    events,
    snapshots,
    system,
    transfers,
    vms,
)
from lab.engine.router import Router

_MODULES = (system, vms, attachments, disks, snapshots, transfers, backups, events, details)


def register(router: Router) -> None:
    for module in _MODULES:
        module.register(router)
