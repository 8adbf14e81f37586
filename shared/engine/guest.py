"""Guest filesystem freeze/thaw through the guest agent (for application-consistent snapshots)."""

from __future__ import annotations

from typing import Any

import ovirtsdk4 as sdk

from shared.engine.errors import NoGuestAgent, fault_text, mentions_guest_agent


def freeze(system: Any, vm_id: str) -> None:
    _act(system, vm_id, "freeze")


def thaw(system: Any, vm_id: str) -> None:
    _act(system, vm_id, "thaw")


def _act(system: Any, vm_id: str, verb: str) -> None:
    service = system.vms_service().vm_service(vm_id)
    try:
        if verb == "freeze":
            service.freeze_filesystems()
        else:
            service.thaw_filesystems()
    except sdk.Error as e:
        if mentions_guest_agent(e):
            raise NoGuestAgent(
                f"cannot {verb} the filesystems of VM {vm_id}: {fault_text(e)}",
                hint="install and start qemu-guest-agent in the VM, or snapshot without quiescing",
                code=e.code,
            ) from e
        raise
