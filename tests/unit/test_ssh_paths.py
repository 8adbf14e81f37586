"""Where the ssh mode finds a volume on a host (vdsm's layout), and which host it uses."""

from __future__ import annotations

from typing import Any, cast

import pytest

from shared.engine.client import EngineClient
from shared.engine.models import HostInfo, StorageDomainInfo, VmInfo
from shared.errors import ConfigError
from shared.sources.ssh_volumes import domain_dir
from shared.ssh.access import HostAccess
from shared.ssh.credentials import pick_host
from shared.state import StateStore

ACCESS = HostAccess("h1", "10.0.0.1", mount_root="/rhev/data-center/mnt", dev_root="/dev")


@pytest.mark.parametrize(
    ("kind", "address", "path", "volume"),
    [
        ("nfs", "nfs1", "/exports/data", "/rhev/data-center/mnt/nfs1:_exports_data/sd/images/d/v"),
        ("glusterfs", "g1", "data", "/rhev/data-center/mnt/glusterSD/g1:_data/sd/images/d/v"),
        ("iscsi", "", "", "/dev/sd/v"),
        ("fcp", "", "", "/dev/sd/v"),
    ],
)
def test_volume_paths_follow_vdsm(kind: str, address: str, path: str, volume: str) -> None:
    where = domain_dir(ACCESS, StorageDomainInfo("sd", "data", kind, address, path))
    assert where.volume_path("d", "v") == volume


def test_backing_files_resolve_relative_on_file_domains_and_as_lvs_on_block() -> None:
    nfs = domain_dir(ACCESS, StorageDomainInfo("sd", "data", "nfs", "nfs1", "/x"))
    child = nfs.volume_path("d", "top")
    assert nfs.backing_path(child, "base") == "/rhev/data-center/mnt/nfs1:_x/sd/images/d/base"
    assert nfs.backing_path(child, "../t/base") == "/rhev/data-center/mnt/nfs1:_x/sd/images/t/base"
    block = domain_dir(ACCESS, StorageDomainInfo("sd", "data", "iscsi"))
    assert block.backing_path("/dev/sd/top", "../d/base") == "/dev/sd/base"


def test_an_unknown_storage_type_is_refused() -> None:
    with pytest.raises(ConfigError, match="type cinder, which the ssh mode cannot read"):
        domain_dir(ACCESS, StorageDomainInfo("sd", "ext", "cinder"))


class Hosts:
    def __init__(self, hosts: list[HostInfo]) -> None:
        self._hosts = hosts

    def hosts(self) -> list[HostInfo]:
        return self._hosts


class Credentials:
    def __init__(self, names: set[str]) -> None:
        self.names = names

    def document(self, kind: str, name: str) -> dict[str, Any] | None:
        host = name.split(":", 1)[1]
        return {"name": host, "address": host} if host in self.names else None


HOSTS = [
    HostInfo("1", "a", "a", "c2", "up"),
    HostInfo("2", "b", "b", "c1", "up"),
    HostInfo("3", "c", "c", "c1", "up"),
    HostInfo("4", "d", "d", "c1", "maintenance"),
]
VM = VmInfo("vm", "web", "c1", "cluster1", "up", host_id="3")


def pick(names: set[str], vm: VmInfo | None = VM) -> str:
    engine = cast(EngineClient, Hosts(HOSTS))
    return pick_host(engine, cast(StateStore, Credentials(names)), "m", vm).name


def test_the_vms_own_host_first_then_its_cluster_then_any_up_host() -> None:
    assert pick({"a", "b", "c"}) == "c"
    assert pick({"a", "b"}) == "b"
    assert pick({"a"}) == "a"
    assert pick({"a", "b"}, vm=None) == "a"


def test_no_up_host_with_credentials_is_refused_naming_the_hosts() -> None:
    with pytest.raises(ConfigError, match=r"\(hosts: a, b, c\)") as refused:
        pick({"d"})
    assert "drover host add m HOST" in refused.value.hint
