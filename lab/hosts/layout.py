"""Where everything lives under the lab's state directory.

    storage/<sd>/images/<disk>/<vol>[.meta]   file and gluster domains (shared by all hosts)
    storage/<sd>/lv/images/<disk>/<vol>       block domain LV bytes (hidden)
    storage/<sd>/meta/<vol>.meta              block domain volume metadata
    hosts/<host>/rhev/data-center/mnt/...     each host's mount root (links to storage),
                                              lab.json's `mount_root`
    hosts/<host>/dev/<sd>/<vol>               block LV device, exists only while active;
                                              hosts/<host>/dev is lab.json's `dev_root`
    hosts/<host>/bin/                         lvchange / lvs helpers (on the ssh PATH)
    proxies/<vm>/dev/disk/by-id/<device>      disks attached to proxy VMs
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lab.dataplane import DomainKind, DomainSpec, VolumeRef

NULL_UUID = "00000000-0000-0000-0000-000000000000"


def mount_dir_name(server: str, path: str) -> str:
    """vdsm's mount directory name: "server:/exports/data" -> "server:_exports_data"."""
    return f"{server}:{path.replace('/', '_')}"


@dataclass(frozen=True)
class Layout:
    state_dir: Path

    # shared storage

    def storage_dir(self, sd_id: str) -> Path:
        return self.state_dir / "storage" / sd_id

    def lv_dir(self, sd_id: str) -> Path:
        """Hidden bytes of a block domain's LVs, laid out like `images/<disk>/`."""
        return self.storage_dir(sd_id) / "lv"

    def block_meta_dir(self, sd_id: str) -> Path:
        return self.storage_dir(sd_id) / "meta"

    def images_dir(self, domain: DomainSpec) -> Path:
        if domain.kind is DomainKind.BLOCK:
            return self.lv_dir(domain.id) / "images"
        return self.storage_dir(domain.id) / "images"

    def volume_path(self, domain: DomainSpec, ref: VolumeRef) -> Path:
        return self.images_dir(domain) / ref.disk_id / ref.volume_id

    def meta_path(self, domain: DomainSpec, ref: VolumeRef) -> Path:
        if domain.kind is DomainKind.BLOCK:
            return self.block_meta_dir(domain.id) / f"{ref.volume_id}.meta"
        return self.volume_path(domain, ref).with_name(f"{ref.volume_id}.meta")

    # hosts

    def host_dir(self, host: str) -> Path:
        return self.state_dir / "hosts" / host

    def mount_root(self, host: str) -> Path:
        return self.host_dir(host) / "rhev" / "data-center" / "mnt"

    def host_bin(self, host: str) -> Path:
        return self.host_dir(host) / "bin"

    def host_dev(self, host: str) -> Path:
        return self.host_dir(host) / "dev"

    def host_domain_dir(self, host: str, domain: DomainSpec) -> Path:
        """The domain's directory as seen on `host` (what vdsm would use)."""
        root = self.mount_root(host)
        if domain.kind is DomainKind.FILE:
            return root / mount_dir_name(domain.server, domain.path) / domain.id
        if domain.kind is DomainKind.GLUSTER:
            volname = "/" + domain.path.strip("/")
            return root / "glusterSD" / mount_dir_name(domain.server, volname) / domain.id
        return root / "blockSD" / domain.id

    def host_volume_path(self, host: str, domain: DomainSpec, ref: VolumeRef) -> Path:
        return self.host_domain_dir(host, domain) / "images" / ref.disk_id / ref.volume_id

    def lv_device(self, host: str, sd_id: str, volume_id: str) -> Path:
        return self.host_dev(host) / sd_id / volume_id

    # proxies, ssh, daemons

    def proxy_root(self, proxy_vm: str) -> Path:
        return self.state_dir / "proxies" / proxy_vm

    def by_id_dir(self, proxy_vm: str) -> Path:
        return self.proxy_root(proxy_vm) / "dev" / "disk" / "by-id"

    def ssh_dir(self) -> Path:
        return self.state_dir / "ssh"

    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    def logs_dir(self) -> Path:
        return self.state_dir / "logs"
