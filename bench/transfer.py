"""`drover bench transfer` and `drover bench incremental`: ours against ovirt-imageio's client.

Both read the same disk in the same run. Ours is the transfer phase of a backup job by the
fleet (image transfer -> chunks hashed, compressed and stored in the repository); the
reference is `ovirt_imageio.client.download` of the same disk to a local raw file, through
an image transfer of an engine backup, as the oVirt SDK examples do it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ovirtsdk4 as sdk
import ovirtsdk4.types as types
from ovirt_imageio import client as imageio

from bench.fleet import Fleet
from lab.guest_client import guest_write
from shared.state import JobState, JobStatus
from shared.units import GiB, MiB

BENCH_VM = "db01"  # two qcow2 disks with incremental backup enabled
DISK_SIZE = "4GiB"
DATA_SEGMENTS = ((0, 512 * MiB), (GiB + 64 * MiB, 512 * MiB), (3 * GiB, 768 * MiB))
CHANGED_FRACTION = 0.01
WRITE_STEP = 256 * MiB


@dataclass
class Measure:
    seconds: float
    data_bytes: int
    rounds: list[float] = field(default_factory=list)  # MiB/s of every round, best kept

    @property
    def mib_s(self) -> float:
        return self.data_bytes / MiB / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        rounds = {"rounds_mib_s": [round(r, 1) for r in self.rounds]} if self.rounds else {}
        return {
            "seconds": round(self.seconds, 3),
            "mib_s": round(self.mib_s, 1),
            "data_bytes": self.data_bytes,
            **rounds,
        }


def prepare_disk(fleet: Fleet) -> tuple[Any, str]:
    """Fill the bench disk with a few GiB of incompressible data, leaving holes."""
    vm = fleet.vm(BENCH_VM)
    for offset, length in DATA_SEGMENTS:
        for step in range(offset, offset + length, WRITE_STEP):
            guest_write(Path(fleet.lab["state_dir"]), BENCH_VM, 0, step, WRITE_STEP)
    return vm, fleet.disk_ids(vm)[0]


def ours(fleet: Fleet, vm: Any, disk_id: str, repository: str = "") -> tuple[Measure, JobState]:
    os.sync()  # earlier writes' writeback must not slow this measure down
    job = fleet.backup(vm, [disk_id], repository, quiesce=False)
    if job.status == JobStatus.FAILED:
        raise RuntimeError(f"the benchmark backup failed: {job.error}")
    disk = job.disks[0]
    return Measure(disk.updated_at - disk.started_at, disk.bytes_read), job


def reference(fleet: Fleet, vm: Any, disk_id: str, target: Path) -> Measure:
    """Full read of the disk by ovirt-imageio's client, through a backup's image transfer."""
    system = fleet.connection.system_service()
    backups = system.vms_service().vm_service(vm.id).backups_service()
    backup = backups.add(types.Backup(disks=[types.Disk(id=disk_id)]))
    service = backups.backup_service(backup.id)
    _wait(lambda: service.get().phase == types.BackupPhase.READY)
    os.sync()
    try:
        return _download(fleet, disk_id, backup.id, target)
    finally:
        service.finalize()
        _wait(lambda: service.get().phase == types.BackupPhase.SUCCEEDED)
        target.unlink(missing_ok=True)


def _download(fleet: Fleet, disk_id: str, backup_id: str, target: Path) -> Measure:
    transfers = fleet.connection.system_service().image_transfers_service()
    transfer = transfers.add(
        types.ImageTransfer(
            disk=types.Disk(id=disk_id),
            backup=types.Backup(id=backup_id),
            direction=types.ImageTransferDirection.DOWNLOAD,
            format=types.DiskFormat.RAW,
        )
    )
    service = transfers.image_transfer_service(transfer.id)
    _wait(lambda: service.get().phase == types.ImageTransferPhase.TRANSFERRING)
    url = service.get().transfer_url
    try:
        started = time.monotonic()
        imageio.download(url, str(target), fleet.lab["engine"]["ca_file"], fmt="raw")
        seconds = time.monotonic() - started
    finally:
        service.finalize()
        # the engine refuses to finalize a backup while one of its transfers is active
        _wait(lambda: _transfer_finished(service))
    return Measure(seconds, _data_bytes(target))


def _transfer_finished(service: Any) -> bool:
    try:
        phase = service.get().phase
    except sdk.NotFoundError:
        return True
    return phase in (
        types.ImageTransferPhase.FINISHED_SUCCESS,
        types.ImageTransferPhase.FINISHED_FAILURE,
    )


def _data_bytes(path: Path) -> int:
    """Bytes the reference actually moved: the allocated part of its sparse file."""
    return path.stat().st_blocks * 512


def change_one_percent(fleet: Fleet, disk_size: int) -> int:
    changed = int(disk_size * CHANGED_FRACTION) // MiB * MiB
    pieces = 16
    for i in range(pieces):
        offset = (disk_size // pieces) * i
        guest_write(Path(fleet.lab["state_dir"]), BENCH_VM, 0, offset, changed // pieces)
    return changed


def best_of_rounds(
    fleet: Fleet, vm: Any, disk_id: str, root: Path, rounds: int
) -> tuple[Measure, Measure, JobState]:
    """Alternate ours and the reference; keep each one's best (least disturbed) run.

    Every round of ours writes into a new repository, so no chunk is already stored."""
    mine: list[tuple[Measure, JobState]] = []
    refs: list[Measure] = []
    for round_ in range(rounds):
        mine.append(ours(fleet, vm, disk_id, str(root / f"repository-{round_}")))
        refs.append(reference(fleet, vm, disk_id, root / "reference.raw"))
    best, job = max(mine, key=lambda m: m[0].mib_s)
    best_ref = max(refs, key=lambda m: m.mib_s)
    best.rounds = [m.mib_s for m, _ in mine]
    best_ref.rounds = [m.mib_s for m in refs]
    return best, best_ref, job


def result(name: str, mine: Measure, ref: Measure, **extra: Any) -> dict[str, Any]:
    return {
        "benchmark": name,
        "ours": mine.to_dict(),
        "reference": {"name": "ovirt_imageio.client.download", **ref.to_dict()},
        "ratio": round(mine.mib_s / ref.mib_s, 3) if ref.mib_s else None,
        **extra,
    }


def _wait(condition: Any, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the lab did not reach the expected state")
        time.sleep(0.1)
