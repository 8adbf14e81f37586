"""Reading the estate: VMs (by search), their disks and OVF, clusters, storage domains."""

from __future__ import annotations

from typing import Any

from shared.engine import convert, search
from shared.engine.models import (
    ClusterInfo,
    DiskInfo,
    EngineVersion,
    HostInfo,
    StorageDomainInfo,
    VmInfo,
)

VM_FOLLOW = "disk_attachments.disk,tags"


def engine_version(system: Any) -> EngineVersion:
    info = system.get().product_info
    version = info.version if info else None
    if version is None:
        return EngineVersion(0, 0)
    return EngineVersion(int(version.major or 0), int(version.minor or 0))


def clusters(system: Any) -> list[ClusterInfo]:
    return [ClusterInfo(c.id, c.name) for c in system.clusters_service().list()]


def storage_domains(system: Any) -> list[StorageDomainInfo]:
    return [_storage_domain(sd) for sd in system.storage_domains_service().list()]


def _storage_domain(sd: Any) -> StorageDomainInfo:
    storage = sd.storage
    if storage is None:
        return StorageDomainInfo(sd.id, sd.name, "")
    return StorageDomainInfo(
        sd.id,
        sd.name,
        convert.enum_value(storage.type),
        address=storage.address or "",
        path=storage.path or "",
    )


def hosts(system: Any) -> list[HostInfo]:
    return [
        HostInfo(
            h.id,
            h.name,
            h.address or "",
            convert.ref_id(h.cluster) or "",
            convert.enum_value(h.status),
        )
        for h in system.hosts_service().list()
    ]


def find_vms(
    system: Any, names: list[str], patterns: list[str], tags: list[str], clusters_: list[str]
) -> list[VmInfo]:
    """(names or patterns) and (any of tags) and (any of clusters); empty lists do not filter."""
    selected: dict[str, Any] | None = None
    for field, values in (("name", [*names, *patterns]), ("tag", tags), ("cluster", clusters_)):
        if values:
            found = _search(system, field, values)
            selected = (
                found if selected is None else {k: v for k, v in found.items() if k in selected}
            )
    if selected is None:
        selected = {vm.id: vm for vm in system.vms_service().list(follow=VM_FOLLOW)}
    names_by_id = dict(clusters(system))
    vms = sorted(selected.values(), key=lambda vm: vm.name)
    return [convert.vm_info(vm, names_by_id, attached_disks(system, vm)) for vm in vms]


def _search(system: Any, field: str, values: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for query in search.any_of(field, values):
        for vm in system.vms_service().list(search=query, follow=VM_FOLLOW):
            found[vm.id] = vm
    return found


def vm(system: Any, vm_id: str) -> VmInfo:
    obj = system.vms_service().vm_service(vm_id).get(follow=VM_FOLLOW)
    return convert.vm_info(obj, dict(clusters(system)), attached_disks(system, obj))


def attached_disks(system: Any, vm: Any) -> list[DiskInfo]:
    """The VM's own disks (not disk snapshots attached to it), with their attachment details.

    Uses the inlined `follow=` content when the engine sent it, else asks for it.
    """
    attachments = vm.disk_attachments
    if not attachments:
        attachments = system.vms_service().vm_service(vm.id).disk_attachments_service().list()
    result = []
    for attachment in attachments:
        obj = attachment.disk
        if obj is None or obj.snapshot is not None:
            continue
        if obj.name is None:  # a link only
            obj = system.disks_service().disk_service(obj.id).get()
        result.append(convert.disk_info(obj, attachment))
    return result


def disk(system: Any, disk_id: str) -> DiskInfo:
    return convert.disk_info(system.disks_service().disk_service(disk_id).get())


def vm_ovf(system: Any, vm_id: str) -> str:
    obj = system.vms_service().vm_service(vm_id).get(all_content=True)
    configuration = obj.initialization.configuration if obj.initialization else None
    data = configuration.data if configuration is not None else None
    return str(data or "")
