"""What the engine links from VMs and disks beyond their own sub-collections, minimal but
readable by the SDK: `permissions` (the admin's SuperUser role, inherited from the system)
and `statistics` (figures the lab does not measure: zero, but for the VM's memory and
uptime)."""

from __future__ import annotations

import time
import uuid

from ovirtsdk4 import types

from lab.engine.common import disk_ref, listing, vm_ref
from lab.engine.inventory import Disk, Vm, stable_id
from lab.engine.router import Request, Response, Router
from lab.engine.xml import href, make

SUPER_USER_ROLE = "00000000-0000-0000-0000-000000000001"
ADMIN_USER = stable_id("user", "admin@internal")

# (name, description, unit, type)
_VM_STATS = (
    ("memory.installed", "Total memory configured", "bytes", "integer"),
    ("memory.used", "Memory used (agent)", "bytes", "integer"),
    ("cpu.current.guest", "CPU used by guest", "percent", "decimal"),
    ("cpu.current.hypervisor", "CPU overhead", "percent", "decimal"),
    ("cpu.current.total", "Total CPU used", "percent", "decimal"),
    ("elapsed.time", "Time elapsed since VM start", "seconds", "integer"),
)
_DISK_STATS = (
    ("data.current.read", "Read data rate", "bytes_per_second", "decimal"),
    ("data.current.write", "Write data rate", "bytes_per_second", "decimal"),
    ("disk.read.latency", "Read latency", "seconds", "decimal"),
    ("disk.write.latency", "Write latency", "seconds", "decimal"),
    ("disk.flush.latency", "Flush latency", "seconds", "decimal"),
)


def register(router: Router) -> None:
    router.add("GET", "vms/{vm}/permissions", list_vm_permissions)
    router.add("GET", "vms/{vm}/statistics", list_vm_statistics)
    router.add("GET", "disks/{disk}/permissions", list_disk_permissions)
    router.add("GET", "disks/{disk}/statistics", list_disk_statistics)


def _permission(parent: str, target: types.Vm | types.Disk) -> types.Permission:
    permission_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{parent}/admin"))
    obj = make(
        types.Permission,
        f"{parent}/permissions/{permission_id}",
        id=permission_id,
        role=make(types.Role, href("roles", SUPER_USER_ROLE), id=SUPER_USER_ROLE),
        user=make(types.User, href("users", ADMIN_USER), id=ADMIN_USER),
    )
    if isinstance(target, types.Vm):
        obj.vm = target
    else:
        obj.disk = target
    return obj


def _statistic(
    parent: str, spec: tuple[str, str, str, str], value: float, owner: types.Vm | types.Disk
) -> types.Statistic:
    name, description, unit, kind = spec
    stat_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{parent}/{name}"))
    obj = make(
        types.Statistic,
        f"{parent}/statistics/{stat_id}",
        id=stat_id,
        name=name,
        description=description,
        kind=types.StatisticKind.GAUGE,
        type=types.ValueType(kind),
        unit=types.StatisticUnit(unit),
        values=[types.Value(datum=float(value))],
    )
    if isinstance(owner, types.Vm):
        obj.vm = owner
    else:
        obj.disk = owner
    return obj


def _vm_values(vm: Vm) -> dict[str, float]:
    up = vm.running and vm.start_time is not None
    return {
        "memory.installed": vm.memory,
        "memory.used": vm.memory // 4 if up else 0,
        "elapsed.time": int(time.time() - vm.start_time) if up and vm.start_time else 0,
    }


def _vm(req: Request) -> Vm:
    return req.engine.inventory.vm(req.params["vm"])


def _disk(req: Request) -> Disk:
    return req.engine.inventory.disk(req.params["disk"])


def list_vm_permissions(req: Request) -> Response:
    with req.engine.inventory.lock:
        vm = _vm(req)
        return listing([_permission(href("vms", vm.id), vm_ref(vm.id))], "permissions")


def list_disk_permissions(req: Request) -> Response:
    with req.engine.inventory.lock:
        disk = _disk(req)
        return listing([_permission(href("disks", disk.id), disk_ref(disk.id))], "permissions")


def list_vm_statistics(req: Request) -> Response:
    with req.engine.inventory.lock:
        vm = _vm(req)
        values = _vm_values(vm)
        parent = href("vms", vm.id)
        stats = [_statistic(parent, s, values.get(s[0], 0), vm_ref(vm.id)) for s in _VM_STATS]
        return listing(stats, "statistics")


def list_disk_statistics(req: Request) -> Response:
    with req.engine.inventory.lock:
        disk = _disk(req)
        parent = href("disks", disk.id)
        stats = [_statistic(parent, s, 0, disk_ref(disk.id)) for s in _DISK_STATS]
        return listing(stats, "statistics")
