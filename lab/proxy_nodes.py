"""What a proxy VM's guest sees of itself, for `drover worker --proxy` run "inside" it.

Each proxy VM gets a root directory (`proxies/<vm>/`) holding the files a guest reads:
`sys/class/dmi/id/product_uuid` (the SMBIOS product UUID, which oVirt sets to the VM's id)
and `etc/lvm/lvm.conf` with the filter a Drover node needs (accept its own disk, reject every
other device, so LVs on attached guest disks are never activated). Its attached disks appear
under `dev/disk/by-id` (lab.hosts.proxy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lab.engine.inventory import Inventory

PRODUCT_UUID = Path("sys/class/dmi/id/product_uuid")
LVM_CONF = Path("etc/lvm/lvm.conf")
NODE_LVM_CONF = """devices {
    # a Drover node: only its own disk; never the guest disks attached to it for a backup
    filter = [ "a|^/dev/disk/by-id/virtio-drover-node-os$|", "r|.*|" ]
}
"""


def provision(proxies_root: Path, inventory: Inventory) -> list[dict[str, Any]]:
    """Write every proxy VM's node files; the lab.json entries describing them."""
    entries = []
    for vm in sorted(inventory.vms.values(), key=lambda v: v.name):
        if not vm.is_proxy:
            continue
        root = proxies_root / vm.name
        _write(root / PRODUCT_UUID, vm.id.upper() + "\n")  # as the kernel shows it
        _write(root / LVM_CONF, NODE_LVM_CONF)
        entries.append(
            {
                "vm": vm.name,
                "vm_id": vm.id,
                "cluster": inventory.clusters[vm.cluster_id].name,
                "root": str(root),
                "virtio_scsi": vm.virtio_scsi,
            }
        )
    return entries


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
