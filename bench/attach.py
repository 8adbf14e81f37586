"""`drover bench attach`: reading a disk attached to a proxy VM, ours against `dd`.

Both read the same device in the same run: the bench disk as of a disk-only snapshot, attached
to a fit proxy VM (VirtIO-SCSI on) of the bench VM's cluster through the engine's API
(`EngineClient.plug_disk`) and found by its serial under that proxy's `/dev/disk/by-id`
(`wait_device`), as the proxy worker finds it. Ours is mode disk_attachment's read path on that
device: `DeviceSource`'s chunk plans read by `DiskChunkReader` (zero detection included) with
`copy_chunks` on the source's reader threads, in the repository's chunk size, into a writer
that discards the chunks. The reference is `dd if=DEVICE of=/dev/null bs=4M`, timed from its
start to its exit. Before every measure the device's pages are flushed (`os.sync`) and dropped
from the page cache (`POSIX_FADV_DONTNEED` on the file behind the device), so neither side
reads from memory. Rounds alternate ours and the reference; the best of each is kept. The
requirement: ours at least 0.9x the reference (`required_ratio`).

For information, a full backup job in mode disk_attachment of the same disk, by a proxy worker
of that cluster (snapshot, attach, read, hash, compress and store in a new repository, detach):
its seconds and MiB/s. The bench's own attachment is detached and its snapshot removed at the
end, whatever happens.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.fleet import Fleet
from bench.transfer import Measure
from shared.backup.copy import copy_chunks
from shared.backup.disk_chunks import DiskChunkReader
from shared.backup.plan import ChunkPlan, plan_data_chunks
from shared.engine.client import EngineClient
from shared.proxy.devices import wait_device, wait_gone
from shared.repository.repository import Repository
from shared.sources.device import DeviceSource
from shared.state import JobState, JobStatus

MODE = "disk_attachment"
OURS = "copy_chunks(DeviceSource, DiskChunkReader) -> discard"
REFERENCE = "dd if=DEVICE of=/dev/null bs=4M"
REQUIRED_RATIO = 0.9  # ours must read the device at least this fraction as fast as dd
DD_TIMEOUT_S = 1800.0
SNAPSHOT_DESCRIPTION = "bench: the proxy VM reads this snapshot's disk"
_DD_BYTES = re.compile(r"^(\d+) bytes", re.MULTILINE)


@dataclass(frozen=True)
class Device:
    """The bench disk as of the snapshot, attached to a proxy VM: where both sides read."""

    proxy: dict[str, Any]  # lab.json's entry of the proxy VM
    path: Path  # under the proxy's dev/disk/by-id
    resolved: Path  # what the link names, while attached (whose page cache is dropped)
    size: int

    def describe(self) -> dict[str, Any]:
        return {
            "proxy_vm": self.proxy["vm"],
            "cluster": self.proxy["cluster"],
            "path": str(self.path),
            "resolved": str(self.resolved),
            "size": self.size,
        }


@contextmanager
def attached(fleet: Fleet, vm: Any, disk_id: str, proxy: dict[str, Any]) -> Iterator[Device]:
    """A disk-only snapshot of the disk, the disk as of it attached to the proxy VM; detached
    and the snapshot removed when the block ends, whatever happens."""
    engine = fleet.engine()
    snapshot_id = engine.create_snapshot(vm.id, [disk_id], SNAPSHOT_DESCRIPTION)
    try:
        with _plugged(engine, proxy, disk_id, snapshot_id) as path:
            yield Device(proxy, path, path.resolve(), _size(path))
    finally:
        engine.remove_snapshot(vm.id, snapshot_id)


@contextmanager
def _plugged(
    engine: EngineClient, proxy: dict[str, Any], disk_id: str, snapshot_id: str
) -> Iterator[Path]:
    root = Path(proxy["root"])
    try:
        engine.plug_disk(proxy["vm_id"], disk_id, snapshot_id)
        yield wait_device(root, disk_id)
    finally:  # also when the attach failed half-way: detaching a detached disk is a no-op
        engine.unplug_disk(proxy["vm_id"], disk_id)
        wait_gone(root, disk_id)


def _size(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def drop_cache(path: Path) -> None:
    """Write back what is dirty, then drop the pages of `path` (the file behind the device's
    link) from the page cache."""
    os.sync()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


class Discard:
    """A chunk writer that keeps nothing, counting the data and zero chunks it is given."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.data_chunks = 0
        self.zero_chunks = 0

    def write_chunk(self, plan: ChunkPlan, data: memoryview | None) -> None:
        with self._lock:
            if data is None:
                self.zero_chunks += 1
            else:
                self.data_chunks += 1


def ours(device: Device, chunk_size: int) -> tuple[Measure, Discard]:
    """The mode's read path over the whole device, timed from opening it to the last chunk."""
    drop_cache(device.resolved)
    writer = Discard()
    started = time.monotonic()
    with DeviceSource(device.path) as source:
        plans = plan_data_chunks(source.data_spans(), chunk_size, source.size())
        copy_chunks(
            plans,
            DiskChunkReader(source),
            writer,
            workers=source.connections,
            buffer_size=chunk_size,
        )
    seconds = time.monotonic() - started
    return Measure(seconds, sum(plan.bytes_to_read for plan in plans)), writer


def reference(device: Device) -> Measure:
    """`dd if=DEVICE of=/dev/null bs=4M`, timed from its start to its exit."""
    drop_cache(device.resolved)
    argv = ["dd", f"if={device.path}", "of=/dev/null", "bs=4M"]
    started = time.monotonic()
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=DD_TIMEOUT_S,
        env={**os.environ, "LC_ALL": "C"},  # dd's summary in English, for its byte count
    )
    seconds = time.monotonic() - started
    if done.returncode != 0:
        error = done.stderr.strip()[-500:]
        raise RuntimeError(f"the reference `{REFERENCE}` failed ({done.returncode}): {error}")
    copied = _DD_BYTES.search(done.stderr)
    return Measure(seconds, int(copied.group(1)) if copied else device.size)


@dataclass
class AttachRounds:
    """The best round of each side, on one device."""

    ours: Measure
    reference: Measure
    chunks: Discard  # what ours found in its best round
    device: Device
    chunk_size: int
    connections: int


def best_of_rounds(
    fleet: Fleet, vm: Any, disk_id: str, rounds: int, chunk_size: int
) -> AttachRounds:
    """Attach the disk (as of a snapshot) to a fit proxy VM of the VM's cluster, then
    alternate ours and the reference on that device; keep each one's best."""
    proxy = fleet.fit_proxy(fleet.cluster_of(vm))
    mine: list[tuple[Measure, Discard]] = []
    refs: list[Measure] = []
    with attached(fleet, vm, disk_id, proxy) as device:
        for _ in range(rounds):
            mine.append(ours(device, chunk_size))
            refs.append(reference(device))
    best, chunks = max(mine, key=lambda run: run[0].mib_s)
    best.rounds = [m.mib_s for m, _ in mine]
    best_ref = max(refs, key=lambda m: m.mib_s)
    best_ref.rounds = [m.mib_s for m in refs]
    return AttachRounds(best, best_ref, chunks, device, chunk_size, DeviceSource.connections)


def repository_chunk_size(repository: Path) -> int:
    """The chunk size of the repository the bench's backup job writes (created empty)."""
    return Repository.open(str(repository)).chunk_size


def backup_job(fleet: Fleet, vm: Any, disk_id: str, repository: Path) -> JobState:
    """A full backup of the disk in mode disk_attachment by a proxy worker of the VM's
    cluster, into `repository` (removed after)."""
    os.sync()  # earlier writes' writeback must not slow this job down
    try:
        with fleet.proxy_worker(fleet.cluster_of(vm)):
            job = fleet.backup(
                vm, [disk_id], str(repository), mode=MODE, incremental=False, quiesce=False
            )
    finally:
        shutil.rmtree(repository, ignore_errors=True)
    if job.status == JobStatus.FAILED:
        raise RuntimeError(f"the benchmark backup in mode {MODE} failed: {job.error}")
    return job


def job_summary(job: JobState) -> dict[str, Any]:
    """For information: the job from queued to finished (snapshot, attach, the whole device
    read, data chunks hashed, compressed and stored, detach, snapshot removed)."""
    disk = job.disks[0]
    seconds = job.finished_at - job.created_at
    return {
        "mode": MODE,
        "job_seconds": round(seconds, 3),
        "mib_s": round(Measure(seconds, disk.size).mib_s, 1),  # of the device, read whole
        "disk_size": disk.size,
        "bytes_stored": disk.bytes_read,  # the data chunks' bytes; zero chunks are not stored
        "worker": disk.worker,
    }


def report(measured: AttachRounds, job: JobState, disk_size: int, rounds: int) -> dict[str, Any]:
    ratio = (
        round(measured.ours.mib_s / measured.reference.mib_s, 3)
        if measured.reference.mib_s
        else None
    )
    return {
        "benchmark": "attach",
        "ours": {
            "name": OURS,
            **measured.ours.to_dict(),
            "data_chunks": measured.chunks.data_chunks,
            "zero_chunks": measured.chunks.zero_chunks,
        },
        "reference": {"name": REFERENCE, **measured.reference.to_dict()},
        "ratio": ratio,
        "required_ratio": REQUIRED_RATIO,
        "met": ratio is not None and ratio >= REQUIRED_RATIO,
        "device": measured.device.describe(),
        "connections": measured.connections,
        "chunk_size": measured.chunk_size,
        "backup_job": job_summary(job),
        "disk_size": disk_size,
        "rounds": rounds,
    }
