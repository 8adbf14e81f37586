"""How a proxy worker finds its VM and checks it may serve (no servers: files and a fake)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from shared.engine.client import EngineClient
from shared.engine.models import VmInfo
from shared.errors import ConfigError
from shared.proxy.node import LVM_CONF, PRODUCT_UUID, check_lvm_filter, identify, own_vm_id

VM_ID = "6f1c2a52-9a67-4a5e-8f0e-0d1c2b3a4f5e"
GOOD_FILTER = 'devices {\n  filter = [ "a|^/dev/vda$|", "r|.*|" ]\n}\n'


def node(tmp_path: Path, uuid_text: str = VM_ID.upper(), lvm: str = GOOD_FILTER) -> Path:
    for relative, text in ((PRODUCT_UUID, uuid_text + "\n"), (LVM_CONF, lvm)):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    return tmp_path


def test_the_smbios_uuid_is_the_vm_id(tmp_path: Path) -> None:
    assert own_vm_id(node(tmp_path)) == VM_ID


def test_a_node_without_smbios_says_where_to_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot tell which VM this node runs in") as e:
        own_vm_id(tmp_path)
    assert "inside the proxy VM" in e.value.hint


@pytest.mark.parametrize(
    "lvm",
    [
        "devices {\n}\n",
        'devices {\n  # filter = [ "a|.*|", "r|.*|" ]\n}\n',
        'devices {\n  filter = [ "a|.*|" ]\n}\n',
    ],
)
def test_lvm_that_would_activate_guest_lvs_is_refused(tmp_path: Path, lvm: str) -> None:
    with pytest.raises(ConfigError, match="no LVM filter rejecting other devices") as e:
        check_lvm_filter(node(tmp_path, lvm=lvm))
    assert '"r|.*|"' in e.value.hint


@pytest.mark.parametrize(
    "lvm",
    [GOOD_FILTER, 'devices {\n global_filter = ["a|^/dev/sda2$|","r|.*|"]\n}\n'],
)
def test_a_filter_rejecting_other_devices_passes(tmp_path: Path, lvm: str) -> None:
    check_lvm_filter(node(tmp_path, lvm=lvm))


class Engine:
    def __init__(self, virtio_scsi: bool) -> None:
        self.virtio_scsi = virtio_scsi

    def vm(self, vm_id: str) -> VmInfo:
        assert vm_id == VM_ID
        return VmInfo(vm_id, "proxy1", "c1", "cluster1", "up", virtio_scsi=self.virtio_scsi)


def test_the_node_serves_its_vms_cluster(tmp_path: Path) -> None:
    found = identify(cast(EngineClient, Engine(True)), node(tmp_path))
    assert (found.vm_name, found.queue) == ("proxy1", "proxy.cluster1")


def test_a_proxy_vm_with_virtio_scsi_off_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="VirtIO-SCSI is off on proxy VM proxy1") as e:
        identify(cast(EngineClient, Engine(False)), node(tmp_path))
    assert "Resource Allocation" in e.value.hint
