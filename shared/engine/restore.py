"""Creating what a restore needs: a VM from its OVF, disks, attachments; and removing them."""

from __future__ import annotations

import contextlib
import re
from typing import Any

import ovirtsdk4 as sdk
import ovirtsdk4.types as types

from shared.engine import convert
from shared.engine.errors import EngineOperationFailed
from shared.engine.models import DiskInfo
from shared.engine.polling import wait_for

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


def add_vm_from_ovf(system: Any, ovf: str, name: str, cluster_name: str) -> str:
    """Import the OVF as a new VM (`clone=True`: new ids); its id."""
    spec = types.Vm(
        name=name,
        cluster=types.Cluster(name=cluster_name),
        initialization=types.Initialization(
            configuration=types.Configuration(type=types.ConfigurationType.OVF, data=ovf)
        ),
    )
    return str(system.vms_service().add(spec, clone=True).id)


def wait_vm_unlocked(system: Any, vm_id: str, name: str, timeout_s: float) -> None:
    service = system.vms_service().vm_service(vm_id)
    wait_for(
        lambda: convert.enum_value(service.get().status) not in ("image_locked", ""),
        timeout_s=timeout_s,
        what=f"new VM {name} to be unlocked",
    )


def storage_domain_ref(storage_domain: str) -> Any:
    """A storage domain given by id (a UUID) or by name."""
    if _UUID.match(storage_domain):
        return types.StorageDomain(id=storage_domain)
    return types.StorageDomain(name=storage_domain)


def add_disk(
    system: Any,
    *,
    name: str,
    size: int,
    fmt: str,
    storage_domain: str,
    sparse: bool,
    incremental: bool,
    initial_size: int | None,
) -> str:
    """The new disk's id (it is LOCKED until the engine has created it: see wait_disk_ok)."""
    spec = types.Disk(
        name=name,
        format=types.DiskFormat(fmt),
        provisioned_size=size,
        sparse=sparse,
        storage_domains=[storage_domain_ref(storage_domain)],
        backup=types.DiskBackup.INCREMENTAL if incremental else types.DiskBackup.NONE,
    )
    if initial_size is not None:
        spec.initial_size = initial_size
    return str(system.disks_service().add(spec).id)


def wait_disk_ok(system: Any, disk_id: str, timeout_s: float) -> DiskInfo:
    service = system.disks_service().disk_service(disk_id)

    def ready() -> DiskInfo | None:
        info = convert.disk_info(service.get())
        if info.status == "illegal":
            raise EngineOperationFailed(f"disk {disk_id} became ILLEGAL", hint="remove it, retry")
        return info if info.status == "ok" else None

    return wait_for(ready, timeout_s=timeout_s, what=f"disk {disk_id} to be OK")


def attach_disk(
    system: Any, vm_id: str, disk_id: str, *, bootable: bool, interface: str, active: bool
) -> None:
    system.vms_service().vm_service(vm_id).disk_attachments_service().add(
        types.DiskAttachment(
            disk=types.Disk(id=disk_id),
            interface=types.DiskInterface(interface),
            bootable=bootable,
            active=active,
        )
    )


def remove_vm(system: Any, vm_id: str, timeout_s: float) -> None:
    service = system.vms_service().vm_service(vm_id)
    with contextlib.suppress(sdk.NotFoundError):
        service.remove()
    wait_for(lambda: _gone(service), timeout_s=timeout_s, what=f"VM {vm_id} to be removed")


def remove_disk(system: Any, disk_id: str, timeout_s: float) -> None:
    service = system.disks_service().disk_service(disk_id)
    with contextlib.suppress(sdk.NotFoundError):
        service.remove()
    wait_for(lambda: _gone(service), timeout_s=timeout_s, what=f"disk {disk_id} to be removed")


def _gone(service: Any) -> bool:
    try:
        service.get()
    except sdk.NotFoundError:
        return True
    return False
