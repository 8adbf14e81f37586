"""Transfer modes: one module per mode, chosen from one table (ovirt-imageio's backends shape).

`MODES` holds the modes this version of Drover can carry out; `PLANNED_MODES` the ones the
product documents but that do not exist yet, which are refused with a clear message. Adding a
mode: one module implementing `shared.modes.base.TransferMode`, one disk source, one entry
here.
"""

from __future__ import annotations

from shared.errors import ConfigError
from shared.jobs import BackupRequest
from shared.modes.base import DiskPlace, JobRun, Leftovers, OpenDisk, Started, TransferMode
from shared.modes.disk_attachment import DiskAttachmentMode
from shared.modes.image_transfer import ImageTransferMode
from shared.modes.image_transfer_chain import SnapshotChainImageTransfer
from shared.modes.ssh import SshMode

MODES: dict[str, TransferMode] = {
    "image_transfer": ImageTransferMode(),
    "ssh": SshMode(),
    "disk_attachment": DiskAttachmentMode(),
}
AVAILABLE_MODES: tuple[str, ...] = tuple(MODES)
PLANNED_MODES: tuple[str, ...] = ()
SNAPSHOT_CHAIN_IMAGE_TRANSFER: TransferMode = SnapshotChainImageTransfer()


def mode_for(name: str) -> TransferMode:
    mode = MODES.get(name)
    if mode is not None:
        return mode
    if name in PLANNED_MODES:
        raise ConfigError(
            f"mode {name} is not available in this version of Drover",
            hint=f"use one of: {', '.join(AVAILABLE_MODES)}",
        )
    raise ConfigError(f"unknown mode {name!r}", hint=f"use one of: {', '.join(AVAILABLE_MODES)}")


def mode_of(request: BackupRequest) -> TransferMode:
    """The mode a backup runs in: image transfer has a snapshot-chain flavour (engines
    without the backup API, or by policy)."""
    if request.mode == "image_transfer" and request.snapshot_chain:
        return SNAPSHOT_CHAIN_IMAGE_TRANSFER
    return mode_for(request.mode)


__all__ = [
    "AVAILABLE_MODES",
    "MODES",
    "PLANNED_MODES",
    "DiskPlace",
    "JobRun",
    "Leftovers",
    "OpenDisk",
    "Started",
    "TransferMode",
    "mode_for",
    "mode_of",
]
