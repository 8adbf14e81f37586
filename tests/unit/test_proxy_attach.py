"""Disks plugged into this proxy node: journalled before they are asked for, detached after,
and on failure; an earlier attempt's attachment (here or on another proxy) detached first."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, cast

import pytest

from shared.backup.plan import plan_data_chunks
from shared.engine.client import EngineClient
from shared.proxy.attach import ThisNode, plugged, unplug_recorded
from shared.proxy.devices import BY_ID, DeviceNotFound, wait_device
from shared.sources.device import DeviceSink, DeviceSource

DISK = "6f1a0c4e-1b7e-4a57-9d3b-2f0d1c9e8a11"
PROXY, OTHER_PROXY = "proxy-a", "proxy-b"


class Journal:
    def __init__(self, objects: dict[str, str] | None = None) -> None:
        self._objects = dict(objects or {})
        self.history: list[tuple[str, str]] = []

    def record(self, name: str, value: str) -> None:
        self.history.append((name, value))
        self._objects[name] = value

    def objects(self) -> dict[str, str]:
        return dict(self._objects)


class Engine:
    """Plugging a disk makes its device appear under the node's by-id, as a hot-plug does."""

    def __init__(self, root: Path, device_image: Path) -> None:
        self.root, self.image = root, device_image
        self.calls: list[tuple[str, ...]] = []

    def plug_disk(self, vm_id: str, disk_id: str, snapshot_id: str | None) -> None:
        self.calls.append(("plug", vm_id, disk_id, snapshot_id or ""))
        link = self.root / BY_ID / f"scsi-0QEMU_QEMU_HARDDISK_{disk_id}"
        link.parent.mkdir(parents=True, exist_ok=True)
        threading.Timer(0.05, lambda: link.symlink_to(self.image)).start()  # udev, a bit later

    def unplug_disk(self, vm_id: str, disk_id: str) -> None:
        self.calls.append(("unplug", vm_id, disk_id))
        (self.root / BY_ID / f"scsi-0QEMU_QEMU_HARDDISK_{disk_id}").unlink(missing_ok=True)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    image = tmp_path / "disk.raw"
    image.write_bytes(b"\x00" * (4 << 20) + b"data" * 1024)
    return Engine(tmp_path / "node", image)


def node(engine: Engine) -> ThisNode:
    return ThisNode(PROXY, engine.root)


def as_engine(engine: Engine) -> EngineClient:
    return cast(EngineClient, engine)


def test_a_disk_is_recorded_before_it_is_plugged_and_cleared_once_detached(
    engine: Engine,
) -> None:
    journal = Journal()
    with plugged(as_engine(engine), journal, node(engine), DISK, "snap-1") as device:
        assert journal.objects()[f"attach:{DISK}"] == PROXY
        assert device.name == f"scsi-0QEMU_QEMU_HARDDISK_{DISK}"
        with DeviceSource(device) as source:
            assert source.read(4 << 20, 4) == b"data"
    assert engine.calls == [("plug", PROXY, DISK, "snap-1"), ("unplug", PROXY, DISK)]
    assert journal.objects()[f"attach:{DISK}"] == ""
    assert not any((engine.root / BY_ID).iterdir())


def test_a_failure_while_plugged_detaches_and_keeps_the_error(engine: Engine) -> None:
    journal = Journal()
    with (
        pytest.raises(RuntimeError, match="read failed"),
        plugged(as_engine(engine), journal, node(engine), DISK, "snap-1"),
    ):
        raise RuntimeError("read failed")
    assert engine.calls[-1] == ("unplug", PROXY, DISK)
    assert journal.objects()[f"attach:{DISK}"] == ""


def test_an_earlier_attempts_attachment_on_another_proxy_is_detached_first(
    engine: Engine,
) -> None:
    journal = Journal({f"attach:{DISK}": OTHER_PROXY})
    with plugged(as_engine(engine), journal, node(engine), DISK, "snap-1"):
        pass
    assert engine.calls[0] == ("unplug", OTHER_PROXY, DISK)
    assert engine.calls[1] == ("plug", PROXY, DISK, "snap-1")


def test_cleanup_detaches_every_recorded_attachment_and_nothing_else() -> None:
    calls: list[tuple[str, str]] = []

    class Recorder:
        def unplug_disk(self, vm_id: str, disk_id: str) -> None:
            calls.append((vm_id, disk_id))

    recorded = {"attach:d1": PROXY, "attach:d2": "", "snapshot": "s1", "disk:x": "d3"}
    unplug_recorded(cast(Any, Recorder()), recorded)
    assert calls == [(PROXY, "d1")]


def test_a_device_that_never_appears_is_named_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(DeviceNotFound, match=f"disk {DISK} was attached"):
        wait_device(tmp_path, DISK, timeout_s=0.2)


def test_a_virtio_blk_device_is_found_by_its_serial_cut_to_20_characters(tmp_path: Path) -> None:
    link = tmp_path / BY_ID / f"virtio-{DISK[:20]}"
    link.parent.mkdir(parents=True)
    link.write_bytes(b"")
    assert wait_device(tmp_path, DISK, timeout_s=0.2) == link


def test_a_device_is_read_whole_and_written_with_zeros(tmp_path: Path) -> None:
    image = tmp_path / "device"
    image.write_bytes(bytes(3 << 20))
    with DeviceSink(image) as sink:
        sink.write(1 << 20, b"x" * 10)
        sink.zero(1 << 20, 5)
        sink.flush()
    with DeviceSource(image) as source:
        assert source.size() == 3 << 20
        assert source.read((1 << 20) + 3, 4) == b"\x00\x00xx"
        plans = plan_data_chunks(source.data_spans(), 1 << 20, source.size())
    assert [p.index for p in plans] == [0, 1, 2]
