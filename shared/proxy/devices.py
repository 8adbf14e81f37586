"""Finding a hot-plugged disk the way a guest does: by its serial under /dev/disk/by-id.

oVirt gives a disk its id as the serial. udev names a VirtIO-SCSI disk
`scsi-0QEMU_QEMU_HARDDISK_<serial>`, and a VirtIO-blk disk `virtio-<serial>` cut to 20
characters. The engine's `logical_name` is not used: it comes from the guest agent, often
long after the device exists, and a real engine may never report it.
"""

from __future__ import annotations

import time
from pathlib import Path

from shared.errors import DroverError

BY_ID = Path("dev/disk/by-id")
APPEAR_S = 60.0
POLL_S = 0.1


class DeviceNotFound(DroverError):
    pass


def device_names(disk_id: str) -> tuple[str, ...]:
    return (f"scsi-0QEMU_QEMU_HARDDISK_{disk_id}", f"virtio-{disk_id[:20]}")


def find_device(root: Path, disk_id: str) -> Path | None:
    for name in device_names(disk_id):
        path = root / BY_ID / name
        if path.exists():
            return path
    return None


def wait_device(root: Path, disk_id: str, timeout_s: float = APPEAR_S) -> Path:
    """The device of a disk just plugged into this node, once udev has named it."""
    deadline = time.monotonic() + timeout_s
    while True:
        path = find_device(root, disk_id)
        if path is not None:
            return path
        if time.monotonic() > deadline:
            raise DeviceNotFound(
                f"disk {disk_id} was attached to this proxy VM but no device with its serial "
                f"appeared under {root / BY_ID} within {timeout_s:.0f}s",
                hint="check that the proxy worker runs inside the proxy VM it names, and "
                "that udev is running there",
            )
        time.sleep(POLL_S)


def wait_gone(root: Path, disk_id: str, timeout_s: float = APPEAR_S) -> None:
    """Once detached, the device goes: a later attach of the same disk must not find the
    old one."""
    deadline = time.monotonic() + timeout_s
    while find_device(root, disk_id) is not None:
        if time.monotonic() > deadline:
            raise DroverError(
                f"disk {disk_id} was detached but its device is still under {root / BY_ID}"
            )
        time.sleep(POLL_S)
