"""Chunks of the repository, read or written by `copy_chunks`."""

from __future__ import annotations

from shared.backup.plan import ChunkPlan
from shared.backup.progress import ChunkProgress
from shared.repository.errors import CorruptionError
from shared.repository.manifest import DiskManifest
from shared.repository.repository import Repository


class RepositoryChunkWriter:
    """Stores each non-zero chunk and records it done; a zero chunk is recorded, not stored."""

    def __init__(self, repo: Repository, progress: ChunkProgress) -> None:
        self._repo = repo
        self._progress = progress

    def write_chunk(self, plan: ChunkPlan, data: memoryview | None) -> None:
        self._progress.read(plan)
        digest = None if data is None else self._repo.put_chunk(data)
        self._progress.done(plan, digest)


class RepositoryChunkReader:
    """A disk of a backup, chunk by chunk (verified against its digest)."""

    def __init__(self, repo: Repository, disk: DiskManifest) -> None:
        self._repo = repo
        self._disk = disk

    def read_chunk(self, plan: ChunkPlan, buffer: memoryview) -> memoryview | None:
        digest = self._disk.chunks.get(plan.index)
        if digest is None:
            return None
        data = self._repo.get_chunk(digest)
        if len(data) != plan.length:
            raise CorruptionError(
                f"disk {self._disk.disk_id} chunk {plan.index} holds {len(data)} bytes, "
                f"expected {plan.length}",
                hint="the manifest does not match its chunks; take a new full backup",
            )
        return memoryview(data)
