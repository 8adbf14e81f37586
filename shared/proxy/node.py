"""A proxy worker finds out, as a guest can, which VM it runs in and whether it may serve.

- The VM: the SMBIOS product UUID (`/sys/class/dmi/id/product_uuid`) is the oVirt VM's id.
- VirtIO-SCSI must be on for that VM: disks are attached to it as VirtIO-SCSI devices.
- LVM on the node must not activate logical volumes found on the guest disks attached to it:
  `lvm.conf` needs a `filter` (or `global_filter`) that accepts the node's own devices and
  rejects everything else (the seed's "LVM setup" step).
Its queue is then `proxy.<cluster>` of the VM's cluster.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from shared.engine.client import EngineClient
from shared.errors import ConfigError

PRODUCT_UUID = Path("sys/class/dmi/id/product_uuid")
LVM_CONF = Path("etc/lvm/lvm.conf")
_FILTER = re.compile(r"^\s*(global_filter|filter)\s*=\s*\[(?P<rules>[^\]]*)\]", re.MULTILINE)
_REJECT_ALL = re.compile(r"""["']r\|\.\*\|["']\s*$""")
LVM_HINT = (
    'set in the devices section of lvm.conf: filter = [ "a|^/dev/OWN-DISK$|", "r|.*|" ] '
    "(accept the node's own disks, reject every other device)"
)


@dataclass(frozen=True)
class ProxyNode:
    vm_id: str
    vm_name: str
    cluster: str

    @property
    def queue(self) -> str:
        return proxy_queue(self.cluster)


def proxy_queue(cluster: str) -> str:
    return f"proxy.{cluster}"


def own_vm_id(root: Path) -> str:
    path = root / PRODUCT_UUID
    try:
        text = path.read_text().strip()
    except OSError as e:
        raise ConfigError(
            f"cannot tell which VM this node runs in: {path}: {e.strerror or e}",
            hint="run `drover worker --proxy` inside the proxy VM (as root, to read SMBIOS)",
        ) from None
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise ConfigError(f"{path} holds {text[:40]!r}, not a UUID") from None


def check_lvm_filter(root: Path) -> None:
    """Refuse a node whose LVM would activate the LVs of attached guest disks."""
    path = root / LVM_CONF
    try:
        text = _uncommented(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}", hint=LVM_HINT) from None
    for match in _FILTER.finditer(text):
        if _REJECT_ALL.search(match.group("rules").strip().rstrip(",")):
            return
    raise ConfigError(
        f"{path} has no LVM filter rejecting other devices: logical volumes on guest disks "
        "attached for a backup would be activated on this node",
        hint=LVM_HINT,
    )


def _uncommented(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def identify(engine: EngineClient, root: Path) -> ProxyNode:
    """The VM this node runs in, checked fit to be a proxy."""
    check_lvm_filter(root)
    vm_id = own_vm_id(root)
    vm = engine.vm(vm_id)
    if not vm.virtio_scsi:
        raise ConfigError(
            f"VirtIO-SCSI is off on proxy VM {vm.name}: disks cannot be attached to it",
            hint="enable it: Edit VM -> Resource Allocation -> VirtIO-SCSI Enabled",
        )
    return ProxyNode(vm.id, vm.name, vm.cluster_name)
