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


def check(
    store: ChunkStore, backup_ids: Iterable[str], load: Loader, read_data: bool, workers: int = 4
) -> CheckReport:
    """Every manifest loads and its chunks exist; with `read_data` every chunk also verifies."""
    report = CheckReport()
    stored = set(store.digests())
    report.chunks_stored = len(stored)
    lengths: dict[str, int] = {}
    for backup_id in backup_ids:
        report.backups += 1
        try:
            manifest = load(backup_id)
        except DroverError as exc:
            report.problems.append(f"backup {backup_id}: {exc}")
            continue
        _check_manifest(manifest, stored, lengths, report)
    report.chunks_referenced = len(lengths)
    if read_data:
        _read_chunks(store, {d: n for d, n in lengths.items() if d in stored}, report, workers)
    return report


def _check_manifest(
    manifest: Manifest, stored: set[str], lengths: dict[str, int], report: CheckReport
) -> None:
    for disk in manifest.disks:
        missing = []
        for index, digest in sorted(disk.chunks.items()):
            lengths[digest] = disk.chunk_length(index)
            if digest not in stored:
                missing.append((index, digest))
        if missing:
            index, digest = missing[0]
            report.problems.append(
                f"backup {manifest.backup_id} disk {disk.disk_id}: {len(missing)} chunk(s) "
                f"missing (first: chunk {index}, {digest})"
            )


def _read_chunks(
    store: ChunkStore, lengths: dict[str, int], report: CheckReport, workers: int
) -> None:
    def verify(digest: str) -> str | None:
        try:
            data = store.get(digest)
        except DroverError as exc:
            return str(exc)
        if len(data) != lengths[digest]:
            return f"chunk {digest} holds {len(data)} bytes, expected {lengths[digest]}"
        return None

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="drover-check") as pool:
        for problem in pool.map(verify, sorted(lengths)):
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
