"""The default estate: one data center, N clusters with a host each, three data domains
(NFS, GlusterFS, iSCSI), VMs with real data on their disks, and two proxy VMs per cluster:
`drover-proxy-<cluster>` (VirtIO-SCSI on in cluster1, cluster3, ..., off, which makes it
unfit to serve, in cluster2, cluster4, ...) and `drover-proxy-<cluster>-b` (VirtIO-SCSI on).
So cluster1 has two fit proxies (failover) and cluster2 one fit and one unfit.

`host_specs(config)` gives the hosts the data plane must be built with;
`build_estate(config, dataplane)` creates domains and volumes and returns the inventory.
Ids are deterministic (uuid5 of kind/name).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from lab.dataplane import DataPlane, DomainKind, DomainSpec, HostSpec, VolumeFormat
from lab.engine.inventory import (
    Attachment,
    Cluster,
    DataCenter,
    Disk,
    Host,
    Inventory,
    StorageDomain,
    Tag,
    Vm,
    VmState,
    stable_id,
)

MIB = 1 << 20
PROXY_TAG = "drover-proxy"
PROXY_PREFIX = "drover-proxy-"
SECOND_PROXY_SUFFIX = "-b"  # drover-proxy-<cluster>-b: each cluster's second proxy VM


@dataclass(frozen=True)
class DiskPlan:
    domain: str  # "nfs" | "gluster" | "block"
    fmt: VolumeFormat
    incremental: bool = False
    bootable: bool = False


@dataclass(frozen=True)
class VmPlan:
    role: str
    disks: tuple[DiskPlan, ...]
    guest_agent: bool
    tags: tuple[str, ...] = ()


RAW, COW = VolumeFormat.RAW, VolumeFormat.COW

# The VMs cycle through these roles: a mix of formats, domains, agents and tags.
ROLES: tuple[VmPlan, ...] = (
    VmPlan("web", (DiskPlan("nfs", RAW, bootable=True),), True, ("prod",)),
    VmPlan(
        "db",
        (DiskPlan("gluster", COW, True, bootable=True), DiskPlan("block", COW, True)),
        True,
        ("prod", "db"),
    ),
    VmPlan(
        "app",
        (DiskPlan("block", RAW, bootable=True), DiskPlan("nfs", COW, True)),
        False,
        ("dev",),
    ),
    VmPlan("file", (DiskPlan("gluster", COW, bootable=True),), False, ()),
)


@dataclass
class EstateConfig:
    clusters: int = 2
    vms: int = 4
    disk_size: int = 256 * MIB
    proxy_disk_size: int = 64 * MIB
    data_center: str = "Default"
    engine_version: str = "4.5.5"  # what the engine presents, see lab.engine.version
    tags: tuple[str, ...] = ("prod", "db", "dev", PROXY_TAG)
    fill_chunks: tuple[tuple[float, int], ...] = field(
        default=((0.0, 2 * MIB), (0.25, 1 * MIB), (0.5, 3 * MIB), (0.9, 1 * MIB))
    )  # (fraction of the disk, length) written at build time; the rest stays a hole


def cluster_name(index: int) -> str:
    return f"cluster{index + 1}"


def host_specs(config: EstateConfig) -> list[HostSpec]:
    return [
        HostSpec(name=f"host{i + 1}", id=stable_id("host", f"host{i + 1}"), cluster=cluster_name(i))
        for i in range(config.clusters)
    ]


def domain_specs() -> dict[str, DomainSpec]:
    """The three data domains, by the short names used in `ROLES`."""
    return {
        "nfs": DomainSpec(
            stable_id("sd", "nfs-data"),
            "nfs-data",
            DomainKind.FILE,
            "nfs.lab.local",
            "/exports/data",
        ),
        "gluster": DomainSpec(
            stable_id("sd", "gluster-data"),
            "gluster-data",
            DomainKind.GLUSTER,
            "gluster.lab.local",
            "data",
        ),
        "block": DomainSpec(stable_id("sd", "iscsi-data"), "iscsi-data", DomainKind.BLOCK, "", ""),
    }


def build_estate(config: EstateConfig, dataplane: DataPlane) -> Inventory:
    inv = Inventory()
    dc = DataCenter(stable_id("dc", config.data_center), config.data_center)
    inv.data_centers[dc.id] = dc
    for spec in host_specs(config):
        cluster = Cluster(stable_id("cluster", spec.cluster), spec.cluster, dc.id)
        inv.clusters[cluster.id] = cluster
        inv.hosts[spec.id] = Host(spec.id, spec.name, cluster.id)
    domains = domain_specs()
    for short, domain in domains.items():
        dataplane.add_domain(domain)
        inv.domains[domain.id] = StorageDomain(
            domain.id,
            domain.name,
            domain.kind,
            dc.id,
            domain.server,
            domain.path,
            master=short == "nfs",
        )
    for name in config.tags:
        inv.tags[stable_id("tag", name)] = Tag(stable_id("tag", name), name)
    clusters = list(inv.clusters.values())
    for index in range(config.vms):
        plan = ROLES[index % len(ROLES)]
        name = f"{plan.role}{index // len(ROLES) + 1:02d}"
        _add_vm(inv, dataplane, config, name, plan, clusters[index % len(clusters)], domains)
    for index, cluster in enumerate(clusters):
        name = f"{PROXY_PREFIX}{cluster.name}"
        _add_proxy(inv, dataplane, config, cluster, name, index % 2 == 0, domains)
        _add_proxy(inv, dataplane, config, cluster, f"{name}{SECOND_PROXY_SUFFIX}", True, domains)
    return inv


def _add_vm(
    inv: Inventory,
    dataplane: DataPlane,
    config: EstateConfig,
    name: str,
    plan: VmPlan,
    cluster: Cluster,
    domains: dict[str, DomainSpec],
) -> Vm:
    vm = Vm(
        id=stable_id("vm", name),
        name=name,
        cluster_id=cluster.id,
        status=VmState.UP,
        description=f"{plan.role} server",
        memory=2 << 30,
        cpus=2,
        guest_agent=plan.guest_agent,
        tag_ids=[stable_id("tag", t) for t in plan.tags],
        active_snapshot_id=stable_id("snapshot", f"{name}/active"),
    )
    for number, disk_plan in enumerate(plan.disks):
        disk = _make_disk(
            dataplane,
            f"{name}_disk{number + 1}",
            domains[disk_plan.domain].id,
            config.disk_size,
            disk_plan,
        )
        _fill(dataplane, disk, config)
        inv.disks[disk.id] = disk
        vm.attachments.append(Attachment(disk.id, bootable=disk_plan.bootable))
    inv.vms[vm.id] = vm
    return vm


def _add_proxy(
    inv: Inventory,
    dataplane: DataPlane,
    config: EstateConfig,
    cluster: Cluster,
    name: str,
    virtio_scsi: bool,
    domains: dict[str, DomainSpec],
) -> Vm:
    vm = Vm(
        id=stable_id("vm", name),
        name=name,
        cluster_id=cluster.id,
        status=VmState.UP,
        description="drover backup proxy",
        comment=PROXY_TAG,
        guest_agent=True,
        virtio_scsi=virtio_scsi,
        is_proxy=True,
        tag_ids=[stable_id("tag", PROXY_TAG)],
        active_snapshot_id=stable_id("snapshot", f"{name}/active"),
    )
    plan = DiskPlan("nfs", RAW, bootable=True)
    disk = _make_disk(dataplane, f"{name}_os", domains["nfs"].id, config.proxy_disk_size, plan)
    inv.disks[disk.id] = disk
    interface = "virtio_scsi" if virtio_scsi else "virtio"
    vm.attachments.append(Attachment(disk.id, interface=interface, bootable=True))
    inv.vms[vm.id] = vm
    return vm


def _make_disk(dataplane: DataPlane, name: str, sd_id: str, size: int, plan: DiskPlan) -> Disk:
    disk = Disk(
        id=stable_id("disk", name),
        name=name,
        sd_id=sd_id,
        size=size,
        base_format=plan.fmt,
        sparse=not (plan.fmt == RAW and plan.domain == "block"),
        incremental=plan.incremental,
        chain=[stable_id("volume", f"{name}/base")],
    )
    dataplane.create_volume(disk.ref(), disk.base_format, disk.size)
    return disk


def _fill(dataplane: DataPlane, disk: Disk, config: EstateConfig) -> None:
    seed = int.from_bytes(hashlib.sha256(disk.id.encode()).digest()[:4], "big")
    for number, (fraction, length) in enumerate(config.fill_chunks):
        offset = int(disk.size * fraction) // MIB * MIB
        length = min(length, disk.size - offset)
        if length > 0:
            dataplane.fill_volume(disk.ref(), offset, length, seed + number)
