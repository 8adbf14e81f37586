"""The API root and the estate's static collections: data centers, clusters, hosts,
storage domains, tags, templates.

The product version and the compatibility level of data centers and clusters are those of
the version the engine presents (`Engine.version`, see lab.engine.version).
"""

from __future__ import annotations

import time

from ovirtsdk4 import types

from lab.dataplane import DomainKind
from lab.engine.common import (
    cluster_ref,
    dc_ref,
    filter_by_name,
    listing,
    ok,
)
from lab.engine.faults import not_found
from lab.engine.inventory import (
    BLANK_TEMPLATE_ID,
    Cluster,
    DataCenter,
    Host,
    Inventory,
    StorageDomain,
    Tag,
    stable_id,
)
from lab.engine.router import Request, Response, Router
from lab.engine.version import DEFAULT_VERSION, EngineVersion
from lab.engine.xml import API, href, make, timestamp

_STORAGE_TYPES = {
    DomainKind.FILE: types.StorageType.NFS,
    DomainKind.GLUSTER: types.StorageType.GLUSTERFS,
    DomainKind.BLOCK: types.StorageType.ISCSI,
}


def register(router: Router) -> None:
    router.add("GET", "", get_api)
    router.add("GET", "datacenters", list_dcs)
    router.add("GET", "datacenters/{dc}", get_dc)
    router.add("GET", "datacenters/{dc}/clusters", list_dc_clusters)
    router.add("GET", "datacenters/{dc}/storagedomains", list_dc_domains)
    router.add("GET", "datacenters/{dc}/storagedomains/{sd}", get_dc_domain)
    router.add("GET", "clusters", list_clusters)
    router.add("GET", "clusters/{cluster}", get_cluster)
    router.add("GET", "hosts", list_hosts)
    router.add("GET", "hosts/{host}", get_host)
    router.add("GET", "networks", list_networks)
    router.add("GET", "networks/{network}", get_network)
    router.add("GET", "storagedomains", list_domains)
    router.add("GET", "storagedomains/{sd}", get_domain)
    router.add("GET", "tags", list_tags)
    router.add("GET", "tags/{tag}", get_tag)
    router.add("GET", "templates", list_templates)
    router.add("GET", "templates/{template}", get_template)


# API root
def get_api(req: Request) -> Response:
    inv = req.engine.inventory
    with inv.lock:
        vms = list(inv.vms.values())
        api = make(
            types.Api,
            API,
            product_info=types.ProductInfo(
                name="oVirt Engine",
                vendor="ovirt.org",
                version=req.engine.version.product_version(),
            ),
            summary=types.ApiSummary(
                hosts=_summary(len(inv.hosts), len(inv.hosts)),
                storage_domains=_summary(len(inv.domains), len(inv.domains)),
                users=_summary(1, 1),
                vms=_summary(len(vms), sum(1 for vm in vms if vm.status.value == "up")),
            ),
            time=timestamp(time.time()),
            special_objects=types.SpecialObjects(
                blank_template=make(
                    types.Template,
                    href("templates", BLANK_TEMPLATE_ID),
                    id=BLANK_TEMPLATE_ID,
                ),
            ),
        )
    return ok(api)


def _summary(total: int, active: int) -> types.ApiSummaryItem:
    return types.ApiSummaryItem(total=total, active=active)


# data centers
def dc_type(dc: DataCenter, version: EngineVersion = DEFAULT_VERSION) -> types.DataCenter:
    return make(
        types.DataCenter,
        href("datacenters", dc.id),
        id=dc.id,
        name=dc.name,
        description="",
        local=False,
        status=types.DataCenterStatus.UP,
        storage_format=types.StorageFormat.V5,
        version=version.compatibility_version(),
        supported_versions=[version.compatibility_version()],
    )


def list_dcs(req: Request) -> Response:
    with req.engine.inventory.lock:
        dcs = filter_by_name(req, req.engine.inventory.data_centers.values(), lambda d: d.name)
        return listing([dc_type(d, req.engine.version) for d in dcs], "data_centers")


def _dc(inv: Inventory, dc_id: str) -> DataCenter:
    dc = inv.data_centers.get(dc_id)
    if dc is None:
        raise not_found(dc_id)
    return dc


def get_dc(req: Request) -> Response:
    with req.engine.inventory.lock:
        return ok(dc_type(_dc(req.engine.inventory, req.params["dc"]), req.engine.version))


def list_dc_clusters(req: Request) -> Response:
    inv = req.engine.inventory
    with inv.lock:
        dc = _dc(inv, req.params["dc"])
        clusters = [
            cluster_type(c, req.engine.version) for c in inv.clusters.values() if c.dc_id == dc.id
        ]
        return listing(clusters, "clusters")


def list_dc_domains(req: Request) -> Response:
    inv = req.engine.inventory
    with inv.lock:
        dc = _dc(inv, req.params["dc"])
        domains = [domain_type(inv, sd, dc) for sd in inv.domains.values() if sd.dc_id == dc.id]
        return listing(domains, "storage_domains")


def get_dc_domain(req: Request) -> Response:
    inv = req.engine.inventory
    with inv.lock:
        dc = _dc(inv, req.params["dc"])
        sd = inv.domain(req.params["sd"])
        if sd.dc_id != dc.id:
            raise not_found(sd.id)
        return ok(domain_type(inv, sd, dc))


# networks: the management network of each data center
MANAGEMENT_NETWORK = "ovirtmgmt"


def network_id(dc: DataCenter) -> str:
    return stable_id("network", f"{dc.name}/{MANAGEMENT_NETWORK}")


def network_type(dc: DataCenter) -> types.Network:
    network_id_ = network_id(dc)
    return make(
        types.Network,
        href("networks", network_id_),
        id=network_id_,
        name=MANAGEMENT_NETWORK,
        description="Management Network",
        data_center=dc_ref(dc.id),
        mtu=0,
        stp=False,
        port_isolation=False,
        usages=[types.NetworkUsage.VM],
        vdsm_name=MANAGEMENT_NETWORK,
    )


def list_networks(req: Request) -> Response:
    with req.engine.inventory.lock:
        dcs = list(req.engine.inventory.data_centers.values())
        items = filter_by_name(req, dcs, lambda dc: MANAGEMENT_NETWORK)
        return listing([network_type(dc) for dc in items], "networks")


def get_network(req: Request) -> Response:
    with req.engine.inventory.lock:
        for dc in req.engine.inventory.data_centers.values():
            if network_id(dc) == req.params["network"]:
                return ok(network_type(dc))
    raise not_found(req.params["network"])


# clusters and hosts
def cluster_type(cluster: Cluster, version: EngineVersion = DEFAULT_VERSION) -> types.Cluster:
    return make(
        types.Cluster,
        href("clusters", cluster.id),
        id=cluster.id,
        name=cluster.name,
        description="",
        data_center=dc_ref(cluster.dc_id),
        version=version.compatibility_version(),
        cpu=types.Cpu(architecture=types.Architecture.X86_64, type="Secure Intel Cascadelake"),
        gluster_service=True,
        virt_service=True,
    )


def list_clusters(req: Request) -> Response:
    with req.engine.inventory.lock:
        items = filter_by_name(req, req.engine.inventory.clusters.values(), lambda c: c.name)
        return listing([cluster_type(c, req.engine.version) for c in items], "clusters")


def get_cluster(req: Request) -> Response:
    with req.engine.inventory.lock:
        cluster = req.engine.inventory.cluster(req.params["cluster"])
        return ok(cluster_type(cluster, req.engine.version))


def host_type(host: Host) -> types.Host:
    return make(
        types.Host,
        href("hosts", host.id),
        id=host.id,
        name=host.name,
        address=host.address,
        status=types.HostStatus.UP,
        cluster=cluster_ref(host.cluster_id),
        type=types.HostType.RHEL,
        port=54321,
        protocol=types.HostProtocol.STOMP,
        spm=types.Spm(status=types.SpmStatus.NONE, priority=5),
        os=types.OperatingSystem(
            type="RHEL", version=types.Version(full_version="8.8", major=8, minor=8)
        ),
        version=types.Version(full_version="vdsm-4.50.5.1-1.el8", major=4, minor=50),
    )


def list_hosts(req: Request) -> Response:
    with req.engine.inventory.lock:
        items = filter_by_name(req, req.engine.inventory.hosts.values(), lambda h: h.name)
        return listing([host_type(h) for h in items], "hosts")


def get_host(req: Request) -> Response:
    with req.engine.inventory.lock:
        return ok(host_type(req.engine.inventory.host(req.params["host"])))


# storage domains
def domain_usage(inv: Inventory, sd: StorageDomain) -> tuple[int, int]:
    """(used, committed) bytes: the lab counts provisioned sizes of the domain's disks."""
    committed = sum(d.size for d in inv.disks.values() if d.sd_id == sd.id)
    used = sum(d.size * len(d.chain) // 2 for d in inv.disks.values() if d.sd_id == sd.id)
    return min(used, sd.capacity), committed


def domain_type(
    inv: Inventory, sd: StorageDomain, dc: DataCenter | None = None
) -> types.StorageDomain:
    used, committed = domain_usage(inv, sd)
    obj = make(
        types.StorageDomain,
        href("storagedomains", sd.id),
        id=sd.id,
        name=sd.name,
        description="",
        type=types.StorageDomainType.DATA,
        storage=_storage(sd),
        available=sd.capacity - used,
        used=used,
        committed=committed,
        master=sd.master,
        backup=False,
        block_size=512,
        storage_format=types.StorageFormat.V5,
        external_status=types.ExternalStatus.OK,
        supports_discard=sd.kind == DomainKind.BLOCK,
        supports_discard_zeroes_data=False,
        discard_after_delete=False,
        wipe_after_delete=False,
        warning_low_space_indicator=10,
        critical_space_action_blocker=5,
        data_centers=[dc_ref(sd.dc_id)],
    )
    if dc is not None:  # status is per data center: only shown in that context
        obj.status = types.StorageDomainStatus.ACTIVE
        obj.data_center = dc_ref(dc.id)
        obj.href = href("datacenters", dc.id, "storagedomains", sd.id)
    return obj


def _storage(sd: StorageDomain) -> types.HostStorage:
    kind = _STORAGE_TYPES[sd.kind]
    if sd.kind == DomainKind.BLOCK:
        return types.HostStorage(
            type=kind,
            volume_group=types.VolumeGroup(id=sd.id, name=sd.id),
        )
    storage = types.HostStorage(type=kind, address=sd.server, path=sd.path)
    if sd.kind == DomainKind.GLUSTER:
        storage.vfs_type = "glusterfs"
    else:
        storage.nfs_version = types.NfsVersion.AUTO
    return storage


def list_domains(req: Request) -> Response:
    inv = req.engine.inventory
    with inv.lock:
        items = filter_by_name(req, inv.domains.values(), lambda sd: sd.name)
        return listing([domain_type(inv, sd) for sd in items], "storage_domains")


def get_domain(req: Request) -> Response:
    inv = req.engine.inventory
    with inv.lock:
        return ok(domain_type(inv, inv.domain(req.params["sd"])))


# tags and templates
def tag_type(tag: Tag) -> types.Tag:
    return make(
        types.Tag,
        href("tags", tag.id),
        id=tag.id,
        name=tag.name,
        description=tag.description,
        parent=make(
            types.Tag,
            href("tags", BLANK_TEMPLATE_ID),
            id=BLANK_TEMPLATE_ID,
        ),
    )


def list_tags(req: Request) -> Response:
    with req.engine.inventory.lock:
        items = filter_by_name(req, req.engine.inventory.tags.values(), lambda t: t.name)
        return listing([tag_type(t) for t in items], "tags")


def get_tag(req: Request) -> Response:
    with req.engine.inventory.lock:
        return ok(tag_type(req.engine.inventory.tag(req.params["tag"])))


def blank_template() -> types.Template:
    return make(
        types.Template,
        href("templates", BLANK_TEMPLATE_ID),
        id=BLANK_TEMPLATE_ID,
        name="Blank",
        description="Blank template",
        status=types.TemplateStatus.OK,
        memory=1 << 30,
        os=types.OperatingSystem(type="other"),
        version=types.TemplateVersion(version_number=1, version_name="base version"),
    )


def list_templates(req: Request) -> Response:
    return listing([blank_template()], "templates")


def get_template(req: Request) -> Response:
    if req.params["template"] != BLANK_TEMPLATE_ID:
        raise not_found(req.params["template"])
    return ok(blank_template())
