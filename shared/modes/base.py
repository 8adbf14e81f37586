"""What a transfer mode is: the one small interface every mode module implements.

A mode moves a VM's disks between the estate and the repository (ovirt-imageio's backends
are the model: one module each, chosen from a table, one shape):

    begin(run)                  engine backup with checkpoints, or a disk-only snapshot;
                                quiescing first
    transfer_disk(run, disk, repo)
                                copy one disk into the repository (through the one copy
                                routine: a disk source and the chunks this backup reads, or
                                a snapshot chain's layers)
    finish(run)                 finalize the engine backup, or keep / remove the snapshot
    after_commit(run)           drop what the committed backup made obsolete
    cleanup(leftovers)          leave nothing behind, from the objects a job recorded
    anchor_exists(engine, ...)  is the last backup's chain anchor (checkpoint or kept
                                snapshot) still there for an incremental?
    open_sink(place)            restore: write a new disk
    open_readback(place)        restore: read a restored disk back to verify it

Everything else (choosing full or incremental, the copy routine, progress, manifests, the
VM lock, failures) is the pipeline's and the same for every mode.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from shared.backup.context import DiskRef, JobContext
from shared.backup.journal import JobJournal, Recorder
from shared.backup.plan import ChunkPlan
from shared.engine.client import EngineClient
from shared.engine.models import DiskInfo
from shared.repository.repository import Repository
from shared.sources.base import DiskSource
from shared.state import StateStore


class Readable(Protocol):
    def readinto(self, offset: int, buf: bytearray | memoryview) -> int: ...


class DiskWriter(Protocol):
    @property
    def connections(self) -> int: ...

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None: ...

    def zero(self, offset: int, length: int) -> None: ...

    def flush(self) -> None: ...


@dataclass(frozen=True)
class JobRun:
    """One step of one backup job, as a mode sees it."""

    context: JobContext
    engine: EngineClient
    journal: JobJournal


@dataclass(frozen=True)
class Leftovers:
    """What a failed or abandoned job may have left behind, for its mode's cleanup."""

    engine: EngineClient
    vm_id: str
    disk_ids: list[str]
    recorded: Mapping[str, str]  # the job's journal of engine (and host) objects
    manager: str  # whose hosts' credentials a mode that works on hosts uses
    store: StateStore


@dataclass(frozen=True)
class DiskPlace:
    """A disk a restore writes, then reads back."""

    engine: EngineClient
    disk_id: str
    size: int
    format: str  # raw | cow: the new disk's volume format
    manager: str
    store: StateStore
    journal: Recorder  # what the sink attaches is recorded, for the restore's undo


@dataclass(frozen=True)
class Started:
    handle: str  # what the disks are read through: an engine backup or a snapshot
    anchor: str | None  # where the next incremental starts: a checkpoint or a kept snapshot
    incremental: bool  # False when the engine could give only a full backup
    why_full: str = ""  # why, when an incremental was asked for and this is full


@dataclass(frozen=True)
class OpenDisk:
    source: Readable
    plans: list[ChunkPlan]  # the chunks this backup reads, in disk order
    connections: int  # how many readers the source serves at once


class TransferMode(Protocol):
    name: str
    incremental: bool  # can it make incremental backups at all
    anchor_name: str  # what its chain anchor is: "checkpoint", "snapshot" (the kept one)
    one_disk_at_a_time: bool  # the disks' transfers run in turn, not side by side

    def queue(self, cluster: str) -> str: ...

    def incremental_capable(self, disk: DiskInfo) -> bool:
        """Can an incremental of this mode read only what changed on the disk?"""
        ...

    def begin(self, run: JobRun) -> Started: ...

    def transfer_disk(self, run: JobRun, disk: DiskRef, repo: Repository) -> None: ...

    def finish(self, run: JobRun) -> None: ...

    def after_commit(self, run: JobRun) -> None: ...

    def cleanup(self, leftovers: Leftovers) -> None: ...

    def anchor_exists(self, engine: EngineClient, vm_id: str, anchor: str) -> bool: ...

    def open_sink(self, place: DiskPlace) -> AbstractContextManager[DiskWriter]: ...

    def open_readback(self, place: DiskPlace) -> AbstractContextManager[DiskSource]: ...
