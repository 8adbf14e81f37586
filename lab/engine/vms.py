"""VMs: list (search), get (OVF with all_content), add (Blank or OVF), remove, power
actions, guest filesystem freeze/thaw, the VM's tags and NICs."""

from __future__ import annotations

import hashlib
import time
import uuid

from ovirtsdk4 import types

from lab.engine import search
from lab.engine.attachments import attachment_type
from lab.engine.common import (
    cluster_ref,
    created,
    done,
    host_ref,
    listing,
    ok,
    removed,
    searched,
    vm_ref,
)
from lab.engine.context import Engine
from lab.engine.disks import disk_type, forget_disk
from lab.engine.faults import ApiError, conflict, incomplete, not_found
from lab.engine.inventory import (
    BLANK_TEMPLATE_ID,
    DiskState,
    Inventory,
    Vm,
    VmState,
    new_id,
)
from lab.engine.ovf import build_ovf, parse_ovf
from lab.engine.router import Request, Response, Router
from lab.engine.system import tag_type
from lab.engine.xml import href, make, parse, parse_action, timestamp

GUEST_AGENT_DOWN = "Guest agent is not responding: QEMU guest agent is not connected"


def register(router: Router) -> None:
    router.add("GET", "vms", list_vms)
    router.add("POST", "vms", add_vm)
    router.add("GET", "vms/{vm}", get_vm)
    router.add("DELETE", "vms/{vm}", remove_vm)
    router.add("POST", "vms/{vm}/start", start_vm)
    router.add("POST", "vms/{vm}/stop", stop_vm)
    router.add("POST", "vms/{vm}/shutdown", shutdown_vm)
    router.add("POST", "vms/{vm}/freezefilesystems", freeze_vm)
    router.add("POST", "vms/{vm}/thawfilesystems", thaw_vm)
    router.add("GET", "vms/{vm}/tags", list_vm_tags)
    router.add("POST", "vms/{vm}/tags", add_vm_tag)
    router.add("GET", "vms/{vm}/tags/{tag}", get_vm_tag)
    router.add("DELETE", "vms/{vm}/tags/{tag}", remove_vm_tag)
    router.add("GET", "vms/{vm}/nics", list_vm_nics)
    router.add("GET", "vms/{vm}/reporteddevices", list_reported_devices)


# the API view
def running(vm: Vm) -> bool:
    return vm.running


def vm_type(inv: Inventory, vm: Vm, all_content: bool = False) -> types.Vm:
    obj = make(
        types.Vm,
        href("vms", vm.id),
        id=vm.id,
        name=vm.name,
        description=vm.description,
        comment=vm.comment,
        status=types.VmStatus(vm.status.value),
        cluster=cluster_ref(vm.cluster_id),
        memory=vm.memory,
        memory_policy=types.MemoryPolicy(guaranteed=vm.memory, max=vm.memory * 4),
        cpu=types.Cpu(
            architecture=types.Architecture.X86_64,
            topology=types.CpuTopology(sockets=vm.cpus, cores=1, threads=1),
        ),
        os=types.OperatingSystem(type=vm.os_type),
        type=types.VmType.SERVER,
        creation_time=timestamp(vm.creation_time),
        stateless=False,
        delete_protected=False,
        has_illegal_images=False,
        next_run_configuration_exists=False,
        origin="ovirt",
        template=make(
            types.Template,
            href("templates", vm.template_id),
            id=vm.template_id,
        ),
        original_template=make(
            types.Template,
            href("templates", vm.template_id),
            id=vm.template_id,
        ),
        virtio_scsi=types.VirtioScsi(enabled=vm.virtio_scsi),
        high_availability=types.HighAvailability(enabled=False, priority=0),
        bios=types.Bios(type=types.BiosType.Q35_SEA_BIOS),
    )
    if running(vm):
        hosts = inv.hosts_in_cluster(vm.cluster_id)
        if hosts:
            obj.host = host_ref(hosts[0].id)
        if vm.start_time is not None:
            obj.start_time = timestamp(vm.start_time)
        if vm.guest_agent and vm.status == VmState.UP:
            obj.fqdn = f"{vm.name}.lab.local"
            obj.guest_operating_system = types.GuestOperatingSystem(
                architecture="x86_64",
                codename="",
                distribution="Oracle Linux Server",
                family="Linux",
                kernel=types.Kernel(version=types.Version(full_version="5.15.0-200.el8uek")),
                version=types.Version(full_version="8.9", major=8, minor=9),
            )
            obj.guest_time_zone = types.TimeZone(name="Etc/GMT", utc_offset="+00:00")
    if all_content:
        obj.initialization = types.Initialization(
            configuration=types.Configuration(
                type=types.ConfigurationType.OVF, data=vm_ovf(inv, vm)
            )
        )
    return obj


def vm_ovf(inv: Inventory, vm: Vm) -> str:
    cluster = inv.cluster(vm.cluster_id)
    disks = [(a, inv.disk(a.disk_id)) for a in vm.attachments if a.snapshot_id is None]
    return build_ovf(vm, cluster.name, cluster.dc_id, disks)


def _search_fields(inv: Inventory) -> dict[str, search.Field]:
    def cluster(vm: Vm, value: str) -> bool:
        return search.match(inv.clusters[vm.cluster_id].name, value)

    def tag(vm: Vm, value: str) -> bool:
        return any(search.match(inv.tags[t].name, value) for t in vm.tag_ids if t in inv.tags)

    def host(vm: Vm, value: str) -> bool:
        return running(vm) and any(
            search.match(h.name, value) for h in inv.hosts_in_cluster(vm.cluster_id)
        )

    def datacenter(vm: Vm, value: str) -> bool:
        dc = inv.data_centers[inv.clusters[vm.cluster_id].dc_id]
        return search.match(dc.name, value)

    def storage(vm: Vm, value: str) -> bool:
        sds = {inv.disks[d].sd_id for d in vm.own_disk_ids() if d in inv.disks}
        return any(search.match(inv.domains[sd].name, value) for sd in sds)

    return {
        "name": lambda vm, v: search.match(vm.name, v),
        "id": lambda vm, v: search.match(vm.id, v),
        "description": lambda vm, v: search.match(vm.description, v),
        "comment": lambda vm, v: search.match(vm.comment, v),
        "status": lambda vm, v: search.match(vm.status.value.replace("_", ""), v.replace("_", "")),
        "cluster": cluster,
        "tag": tag,
        "host": host,
        "datacenter": datacenter,
        "storage": storage,
    }


def list_vms(req: Request) -> Response:
    inv = req.engine.inventory
    all_content = req.flag("all_content")
    with inv.lock:
        vms = searched(req, inv.vms.values(), _search_fields(inv), lambda vm: vm.name)
        views = [_followed(inv, vm, vm_type(inv, vm, all_content), req) for vm in vms]
        return listing(views, "vms")


def get_vm(req: Request) -> Response:
    inv = req.engine.inventory
    with inv.lock:
        vm = inv.vm(req.params["vm"])
        return ok(_followed(inv, vm, vm_type(inv, vm, req.flag("all_content")), req))


def _followed(inv: Inventory, vm: Vm, obj: types.Vm, req: Request) -> types.Vm:
    """`follow=disk_attachments.disk,tags`: inline the linked collections."""
    follow = {f.strip() for f in req.query.get("follow", "").split(",") if f.strip()}
    if not follow:
        return obj
    if follow & {"disk_attachments", "disk_attachments.disk"}:
        views = [attachment_type(vm, a) for a in vm.attachments]
        if "disk_attachments.disk" in follow:
            for view, attachment in zip(views, vm.attachments, strict=True):
                if attachment.disk_id in inv.disks:
                    view.disk = disk_type(inv.disks[attachment.disk_id])
        obj.disk_attachments = views
    if "tags" in follow:
        obj.tags = [_vm_tag_type(vm, tag_type(inv.tags[t])) for t in vm.tag_ids if t in inv.tags]
    return obj


# add
def add_vm(req: Request) -> Response:
    spec = parse(req.body, types.Vm)
    inv = req.engine.inventory
    with inv.lock:
        vm = _new_vm(inv, spec)
        inv.vms[vm.id] = vm
        return created(vm_type(inv, vm))


def _new_vm(inv: Inventory, spec: types.Vm) -> Vm:
    cluster_id = _resolve_cluster(inv, spec.cluster)
    config = spec.initialization.configuration if spec.initialization else None
    if config is not None and config.data:
        from_ovf = parse_ovf(config.data)
    else:
        _check_template(spec.template)
        from_ovf = None
    name = spec.name or (from_ovf.name if from_ovf else None)
    if not name:
        raise incomplete("Vm", "name")
    if any(vm.name == name for vm in inv.vms.values()):
        raise conflict("Cannot add VM. The given name is already in use.")
    vm = Vm(
        id=spec.id or new_id(),
        name=name,
        cluster_id=cluster_id,
        status=VmState.DOWN,
        start_time=None,
        description=spec.description or (from_ovf.description if from_ovf else ""),
        comment=spec.comment or "",
        virtio_scsi=spec.virtio_scsi.enabled is not False if spec.virtio_scsi else True,
    )
    vm.memory = spec.memory or (from_ovf.memory if from_ovf else None) or vm.memory
    topology = spec.cpu.topology if spec.cpu else None
    vm.cpus = (topology.sockets if topology else None) or (from_ovf.cpus if from_ovf else None) or 1
    vm.os_type = (
        (spec.os.type if spec.os else None) or (from_ovf.os_type if from_ovf else None) or "other"
    )
    return vm


def _resolve_cluster(inv: Inventory, cluster: types.Cluster | None) -> str:
    if cluster is None or not (cluster.id or cluster.name):
        raise incomplete("Vm", "cluster.id|name")
    if cluster.id:
        return inv.cluster(cluster.id).id
    return inv.cluster_by_name(cluster.name).id


def _check_template(template: types.Template | None) -> None:
    if template is None or not (template.id or template.name):
        raise incomplete("Vm", "template.id|name")
    if template.id and template.id != BLANK_TEMPLATE_ID:
        raise not_found(template.id)
    if template.name and template.name.lower() != "blank":
        raise not_found(template.name)


# remove
def vm_locked_reason(inv: Inventory, vm: Vm) -> str | None:
    if any(s.status == "locked" for s in vm.snapshots):
        return "Snapshot is currently being created or removed for the VM."
    if inv.active_backup(vm.id) is not None:
        return "The VM is during a backup operation."
    for disk_id in vm.own_disk_ids():
        disk = inv.disks.get(disk_id)
        if disk is not None and (disk.status == DiskState.LOCKED or disk.transfer_id):
            return f"Disk {disk.name} is locked."
    return None


def remove_vm(req: Request) -> Response:
    engine = req.engine
    inv = engine.inventory
    detach_only = req.flag("detach_only")
    with inv.lock:
        vm = inv.vm(req.params["vm"])
        reason = vm_locked_reason(inv, vm)
        if reason:
            raise conflict(f"Cannot remove VM. {reason}")
        if running(vm) and not req.flag("force"):
            raise conflict("Cannot remove VM. VM is running.")
        _detach_proxy_devices(engine, vm)
        del inv.vms[vm.id]
        if not detach_only:
            for disk_id in vm.own_disk_ids():
                if disk_id in inv.disks and not inv.vms_of_disk(disk_id):
                    forget_disk(engine, inv.disks[disk_id])
    return removed()


def _detach_proxy_devices(engine: Engine, vm: Vm) -> None:
    devices = [a.device for a in vm.attachments if a.device]
    name = vm.name

    def job() -> None:
        for device in devices:
            engine.dataplane.detach_device(name, device)

    if devices:
        engine.tasks.later(0, job)


# power
def start_vm(req: Request) -> Response:
    engine = req.engine
    with engine.inventory.lock:
        vm = engine.inventory.vm(req.params["vm"])
        if vm.status != VmState.DOWN:
            raise conflict("Cannot run VM. VM is running.")
        vm.status = VmState.POWERING_UP
        vm.start_time = time.time()
    engine.tasks.later(engine.timings.vm_power, lambda: _settle(engine, vm, VmState.UP))
    return done()


def stop_vm(req: Request) -> Response:
    with req.engine.inventory.lock:
        vm = req.engine.inventory.vm(req.params["vm"])
        if vm.status == VmState.DOWN:
            raise conflict("Cannot stop VM. VM is not running.")
        vm.status = VmState.DOWN
        vm.start_time = None
    return done()


def shutdown_vm(req: Request) -> Response:
    engine = req.engine
    with engine.inventory.lock:
        vm = engine.inventory.vm(req.params["vm"])
        if vm.status == VmState.DOWN:
            raise conflict("Cannot shutdown VM. VM is not running.")
        vm.status = VmState.POWERING_DOWN
    engine.tasks.later(engine.timings.vm_power, lambda: _settle(engine, vm, VmState.DOWN))
    return done()


def _settle(engine: Engine, vm: Vm, state: VmState) -> None:
    with engine.inventory.lock:
        vm.status = state
        if state == VmState.DOWN:
            vm.start_time = None
        engine.inventory.changed.notify_all()


def _guest_fs_action(req: Request, verb: str) -> Response:
    parse_action(req.body)
    with req.engine.inventory.lock:
        vm = req.engine.inventory.vm(req.params["vm"])
        if vm.status != VmState.UP:
            raise conflict(f"Cannot {verb} VM filesystems. VM is not running.")
        if not vm.guest_agent:
            raise ApiError(400, f"[{GUEST_AGENT_DOWN}]")
    return done()


def freeze_vm(req: Request) -> Response:
    return _guest_fs_action(req, "freeze")


def thaw_vm(req: Request) -> Response:
    return _guest_fs_action(req, "thaw")


# tags
def _vm_tag_type(vm: Vm, tag: types.Tag) -> types.Tag:
    tag.href = href("vms", vm.id, "tags", tag.id)
    tag.vm = vm_ref(vm.id)
    return tag


def list_vm_tags(req: Request) -> Response:
    inv = req.engine.inventory
    with inv.lock:
        vm = inv.vm(req.params["vm"])
        tags = [_vm_tag_type(vm, tag_type(inv.tags[t])) for t in vm.tag_ids if t in inv.tags]
        return listing(tags, "tags")


def get_vm_tag(req: Request) -> Response:
    inv = req.engine.inventory
    with inv.lock:
        vm = inv.vm(req.params["vm"])
        if req.params["tag"] not in vm.tag_ids:
            raise not_found(req.params["tag"])
        return ok(_vm_tag_type(vm, tag_type(inv.tag(req.params["tag"]))))


def add_vm_tag(req: Request) -> Response:
    spec = parse(req.body, types.Tag)
    inv = req.engine.inventory
    with inv.lock:
        vm = inv.vm(req.params["vm"])
        if spec.id:
            tag = inv.tag(spec.id)
        elif spec.name:
            tag = inv.tag_by_name(spec.name)
        else:
            raise incomplete("Tag", "id|name")
        if tag.id not in vm.tag_ids:
            vm.tag_ids.append(tag.id)
        return created(_vm_tag_type(vm, tag_type(tag)))


def remove_vm_tag(req: Request) -> Response:
    with req.engine.inventory.lock:
        vm = req.engine.inventory.vm(req.params["vm"])
        if req.params["tag"] not in vm.tag_ids:
            raise not_found(req.params["tag"])
        vm.tag_ids.remove(req.params["tag"])
    return removed()


# NICs: one per VM, enough for products that record the configuration
def _mac(vm: Vm) -> str:
    digest = hashlib.sha1(vm.id.encode()).hexdigest()
    return "56:6f:" + ":".join(digest[i : i + 2] for i in range(0, 8, 2))


def list_vm_nics(req: Request) -> Response:
    with req.engine.inventory.lock:
        vm = req.engine.inventory.vm(req.params["vm"])
        mac = _mac(vm)
        nic_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{vm.id}/nic1"))
        nic = make(
            types.Nic,
            href("vms", vm.id, "nics", nic_id),
            id=nic_id,
            name="nic1",
            interface=types.NicInterface.VIRTIO,
            mac=types.Mac(address=mac),
            plugged=True,
            linked=True,
            vm=vm_ref(vm.id),
        )
        return listing([nic], "nics")


# what the guest agent reports: the guest's network interface, while it runs
def list_reported_devices(req: Request) -> Response:
    with req.engine.inventory.lock:
        vm = req.engine.inventory.vm(req.params["vm"])
        if not (vm.guest_agent and vm.status == VmState.UP):
            return listing([], "reported_devices")
        device_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{vm.id}/eth0"))
        device = make(
            types.ReportedDevice,
            href("vms", vm.id, "reporteddevices", device_id),
            id=device_id,
            name="eth0",
            description="guest reported data",
            type=types.ReportedDeviceType.NETWORK,
            mac=types.Mac(address=_mac(vm)),
            ips=[types.Ip(address=_guest_ip(vm), version=types.IpVersion.V4)],
            vm=vm_ref(vm.id),
        )
        return listing([device], "reported_devices")


def _guest_ip(vm: Vm) -> str:
    digest = hashlib.sha1(vm.id.encode()).digest()
    return f"10.{digest[0]}.{digest[1]}.{digest[2] % 250 + 2}"
