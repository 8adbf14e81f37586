"""The VM configuration as the engine's OVF: generated for `all_content=true`, read for
`POST /vms` with `<initialization><configuration><type>ovf</type>`."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from lab.dataplane import VolumeFormat
from lab.engine.faults import bad_request
from lab.engine.inventory import BLANK_TEMPLATE_ID, Attachment, Disk, Vm

OVF = "http://schemas.dmtf.org/ovf/envelope/1/"
RASD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
VSSD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
for _prefix, _uri in (("ovf", OVF), ("rasd", RASD), ("vssd", VSSD), ("xsi", XSI)):
    ET.register_namespace(_prefix, _uri)

GIB = 1 << 30
_INTERFACES = {"virtio_scsi": "VirtIO_SCSI", "virtio": "VirtIO", "sata": "SATA", "ide": "IDE"}


@dataclass
class OvfVm:
    """What the lab takes from an OVF when a VM is added from one."""

    name: str | None
    description: str = ""
    memory: int | None = None
    cpus: int | None = None
    os_type: str | None = None
    disk_ids: list[str] = field(default_factory=list)


def _o(name: str) -> str:
    return f"{{{OVF}}}{name}"


def _r(name: str) -> str:
    return f"{{{RASD}}}{name}"


def _date(seconds: float) -> str:
    return time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime(seconds))


def _text(parent: ET.Element, tag: str, value: object) -> ET.Element:
    child = ET.SubElement(parent, tag)
    child.text = str(value)
    return child


def build_ovf(vm: Vm, cluster_name: str, dc_id: str, disks: list[tuple[Attachment, Disk]]) -> str:
    root = ET.Element(_o("Envelope"), {_o("version"): "4.4.0.0"})
    references = ET.SubElement(root, "References")
    for _, disk in disks:
        ET.SubElement(
            references,
            "File",
            {
                _o("href"): f"{disk.id}/{disk.top}",
                _o("id"): disk.top,
                _o("size"): str(disk.size),
                _o("description"): disk.description,
                _o("disk_storage_type"): "IMAGE",
                _o("cinder_volume_type"): "",
            },
        )
    network = ET.SubElement(root, "NetworkSection")
    _text(network, "Info", "List of networks")
    ET.SubElement(network, "Network", {_o("name"): "ovirtmgmt"})
    _disk_section(root, vm, disks)
    _content(root, vm, cluster_name, dc_id, disks)
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>' + body


def _disk_section(root: ET.Element, vm: Vm, disks: list[tuple[Attachment, Disk]]) -> None:
    section = ET.SubElement(root, "Section", {f"{{{XSI}}}type": "ovf:DiskSection_Type"})
    _text(section, "Info", "List of Virtual Disks")
    for attachment, disk in disks:
        cow = disk.format == VolumeFormat.COW
        ET.SubElement(
            section,
            "Disk",
            {
                _o("diskId"): disk.top,
                _o("size"): str(max(1, disk.size // GIB)),
                _o("actual_size"): str(max(1, disk.size // GIB)),
                _o("vm_snapshot_id"): vm.active_snapshot_id,
                _o("parentRef"): "",
                _o("fileRef"): f"{disk.id}/{disk.top}",
                _o("format"): "http://www.vmware.com/specifications/vmdk.html#sparse",
                _o("volume-format"): "COW" if cow else "RAW",
                _o("volume-type"): "Sparse" if disk.sparse else "Preallocated",
                _o("disk-interface"): _INTERFACES.get(attachment.interface, "VirtIO_SCSI"),
                _o("read-only"): "false",
                _o("shareable"): "false",
                _o("boot"): str(attachment.bootable).lower(),
                _o("pass-discard"): "false",
                _o("incremental-backup"): str(disk.incremental).lower(),
                _o("disk-alias"): disk.name,
                _o("disk-description"): disk.description,
                _o("wipe-after-delete"): "false",
            },
        )


def _content(
    root: ET.Element,
    vm: Vm,
    cluster_name: str,
    dc_id: str,
    disks: list[tuple[Attachment, Disk]],
) -> None:
    content = ET.SubElement(
        root, "Content", {_o("id"): "out", f"{{{XSI}}}type": "ovf:VirtualSystem_Type"}
    )
    for tag, value in (
        ("Name", vm.name),
        ("Description", vm.description),
        ("Comment", vm.comment),
        ("CreationDate", _date(vm.creation_time)),
        ("ExportDate", _date(time.time())),
        ("IsAutoSuspend", "false"),
        ("TimeZone", "Etc/GMT"),
        ("VmType", "1"),
        ("ClusterName", cluster_name),
        ("TemplateId", vm.template_id),
        ("TemplateName", "Blank"),
        ("IsStateless", "false"),
        ("Origin", "0"),
        ("DefaultDisplayType", "2"),
        ("MinAllocatedMem", str(vm.memory // (1 << 20))),
        ("BiosType", "2"),
    ):
        _text(content, tag, value)
    os_section = ET.SubElement(
        content,
        "Section",
        {
            _o("id"): vm.id,
            _o("required"): "false",
            f"{{{XSI}}}type": "ovf:OperatingSystemSection_Type",
        },
    )
    _text(os_section, "Info", "Guest Operating System")
    _text(os_section, "Description", vm.os_type)
    _hardware(content, vm, dc_id, disks)


def _hardware(
    content: ET.Element, vm: Vm, dc_id: str, disks: list[tuple[Attachment, Disk]]
) -> None:
    memory_mb = vm.memory // (1 << 20)
    section = ET.SubElement(
        content, "Section", {f"{{{XSI}}}type": "ovf:VirtualHardwareSection_Type"}
    )
    _text(section, "Info", f"{vm.cpus} CPU, {memory_mb} Memory")
    system = ET.SubElement(section, "System")
    _text(system, f"{{{VSSD}}}VirtualSystemType", "ENGINE 4.4.0.0")
    cpu = ET.SubElement(section, "Item")
    for tag, value in (
        ("Caption", f"{vm.cpus} virtual cpu"),
        ("Description", "Number of virtual CPU"),
        ("InstanceId", "1"),
        ("ResourceType", "3"),
        ("num_of_sockets", str(vm.cpus)),
        ("cpu_per_socket", "1"),
        ("threads_per_cpu", "1"),
    ):
        _text(cpu, _r(tag), value)
    memory = ET.SubElement(section, "Item")
    for tag, value in (
        ("Caption", f"{memory_mb} MB of memory"),
        ("Description", "Memory Size"),
        ("InstanceId", "2"),
        ("ResourceType", "4"),
        ("AllocationUnits", "MegaBytes"),
        ("VirtualQuantity", str(memory_mb)),
    ):
        _text(memory, _r(tag), value)
    for order, (attachment, disk) in enumerate(disks, start=1):
        item = ET.SubElement(section, "Item")
        for tag, value in (
            ("Caption", disk.name),
            ("InstanceId", disk.top),
            ("ResourceType", "17"),
            ("HostResource", f"{disk.id}/{disk.top}"),
            ("Parent", BLANK_TEMPLATE_ID),
            ("Template", BLANK_TEMPLATE_ID),
            ("StorageId", disk.sd_id),
            ("StoragePoolId", dc_id),
            ("CreationDate", _date(disk.creation_time)),
            ("LastModified", _date(time.time())),
        ):
            _text(item, _r(tag), value)
        _text(item, "Type", "disk")
        _text(item, "Device", "disk")
        _text(item, "BootOrder", str(order if attachment.bootable else 0))
        _text(item, "IsPlugged", str(attachment.active).lower())
        _text(item, "IsReadOnly", "false")
        _text(item, "Id", disk.id)


def parse_ovf(data: str) -> OvfVm:
    try:
        root = ET.fromstring(data.encode("utf-8") if isinstance(data, str) else data)
    except ET.ParseError as exc:
        raise bad_request(f"Failed to parse the OVF configuration: {exc}") from None
    content = root.find("Content")
    if content is None:
        raise bad_request("Failed to parse the OVF configuration: no Content section")
    result = OvfVm(name=content.findtext("Name"), description=content.findtext("Description") or "")
    for section in content.findall("Section"):
        kind = section.get(f"{{{XSI}}}type", "")
        if kind.endswith("OperatingSystemSection_Type"):
            result.os_type = section.findtext("Description")
        elif kind.endswith("VirtualHardwareSection_Type"):
            _read_hardware(section, result)
    for disk in root.iter("Disk"):
        file_ref = disk.get(_o("fileRef"), "")
        if "/" in file_ref:
            result.disk_ids.append(file_ref.split("/", 1)[0])
    return result


def _read_hardware(section: ET.Element, result: OvfVm) -> None:
    for item in section.findall("Item"):
        kind = item.findtext(_r("ResourceType"))
        if kind == "3":
            result.cpus = _int(item.findtext(_r("num_of_sockets")))
        elif kind == "4":
            megabytes = _int(item.findtext(_r("VirtualQuantity")))
            result.memory = megabytes * (1 << 20) if megabytes else None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None
