"""Repository upkeep: `check` (is every backup restorable?) and `prune` (free unused chunks)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from shared.errors import DroverError
from shared.repository.chunks import ChunkStore
from shared.repository.errors import ObjectNotFound
from shared.repository.manifest import Manifest


@dataclass
class CheckReport:
    backups: int = 0
    chunks_referenced: int = 0
    chunks_stored: int = 0
    chunks_read: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@dataclass
class PruneReport:
    backups: int = 0
    chunks_kept: int = 0
    chunks_removed: int = 0
    bytes_freed: int = 0
    temporaries_removed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Loader = Callable[[str], Manifest]


@dataclass
class _Chunks:
    """What the manifests say of each chunk: its length and the backups that use it."""

    lengths: dict[str, int] = field(default_factory=dict)
    users: dict[str, set[str]] = field(default_factory=dict)

    def add(self, digest: str, length: int, backup_id: str) -> None:
        self.lengths[digest] = length
        self.users.setdefault(digest, set()).add(backup_id)

    def used_by(self, digest: str) -> str:
        return ", ".join(sorted(self.users.get(digest, ())))


def check(
    store: ChunkStore,
    backup_ids: Iterable[str],
    load: Loader,
    read_data: bool,
    workers: int = 4,
    index_ids: Iterable[str] = (),
) -> CheckReport:
    """Every manifest loads and its chunks exist; with `read_data` every chunk also verifies.
    An index entry without its manifest (a finalize that stopped between the two) is named."""
    report = CheckReport()
    stored = set(store.digests())
    report.chunks_stored = len(stored)
    chunks = _Chunks()
    backups = set()
    for backup_id in backup_ids:
        report.backups += 1
        backups.add(backup_id)
        try:
            manifest = load(backup_id)
        except DroverError as exc:
            report.problems.append(f"backup {backup_id}: {exc}")
            continue
        _check_manifest(manifest, stored, chunks, report)
    report.problems += [
        f"index entry {orphan} has no manifest: the backup was never committed and is ignored"
        for orphan in sorted(set(index_ids) - backups)
    ]
    report.chunks_referenced = len(chunks.lengths)
    if read_data:
        _read_chunks(store, chunks, stored, report, workers)
    return report


def _check_manifest(
    manifest: Manifest, stored: set[str], chunks: _Chunks, report: CheckReport
) -> None:
    for disk in manifest.disks:
        missing = []
        for index, digest in sorted(disk.chunks.items()):
            chunks.add(digest, disk.chunk_length(index), manifest.backup_id)
            if digest not in stored:
                missing.append((index, digest))
        if missing:
            index, digest = missing[0]
            report.problems.append(
                f"backup {manifest.backup_id} disk {disk.disk_id}: {len(missing)} chunk(s) "
                f"missing (first: chunk {index}, {digest})"
            )


def _read_chunks(
    store: ChunkStore, chunks: _Chunks, stored: set[str], report: CheckReport, workers: int
) -> None:
    def verify(digest: str) -> str | None:
        try:
            data = store.get(digest)
        except DroverError as exc:
            return f"{exc}; used by backups {chunks.used_by(digest)}"
        if len(data) != chunks.lengths[digest]:
            return (
                f"chunk {digest} holds {len(data)} bytes, expected {chunks.lengths[digest]}; "
                f"used by backups {chunks.used_by(digest)}"
            )
        return None

    present = sorted(d for d in chunks.lengths if d in stored)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="drover-check") as pool:
        for problem in pool.map(verify, present):
            report.chunks_read += 1
            if problem:
                report.problems.append(problem)


def prune(store: ChunkStore, manifests: Iterable[Manifest]) -> PruneReport:
    """Remove chunks no manifest references. Run it while no backup writes to the repository."""
    report = PruneReport()
    referenced: set[str] = set()
    for manifest in manifests:
        report.backups += 1
        for disk in manifest.disks:
            referenced.update(disk.chunks.values())
    for digest in list(store.digests()):
        if digest in referenced:
            report.chunks_kept += 1
            continue
        size = _size_or_zero(store, digest)
        try:
            store.remove(digest)
        except ObjectNotFound:
            continue
        report.chunks_removed += 1
        report.bytes_freed += size
    return report


def _size_or_zero(store: ChunkStore, digest: str) -> int:
    try:
        return store.size(digest)
    except DroverError:
        return 0
