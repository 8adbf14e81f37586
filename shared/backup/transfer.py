"""Copy one disk source into the repository, mode-neutral, with progress in Redis.

Chunks already recorded (by an attempt that died) are skipped; the rest are copied by the
one copy routine and made durable before the mode finishes the disk's transfer.
"""

from __future__ import annotations

from shared.backup.copy import copy_chunks
from shared.backup.disk_chunks import DiskChunkReader
from shared.backup.progress import ChunkProgress
from shared.backup.repo_chunks import RepositoryChunkWriter
from shared.logging import get_logger
from shared.modes.base import OpenDisk
from shared.repository.repository import Repository

log = get_logger(__name__)


def copy_disk_to_repository(disk: OpenDisk, repo: Repository, progress: ChunkProgress) -> None:
    progress.plan(len(disk.plans))
    stored = progress.stored()
    todo = [plan for plan in disk.plans if plan.index not in stored]
    log.info("copying disk", planned=len(disk.plans), already_stored=len(disk.plans) - len(todo))
    copy_chunks(
        todo,
        DiskChunkReader(disk.source),
        RepositoryChunkWriter(repo, progress),
        workers=disk.connections,
        buffer_size=repo.chunk_size,
    )
    repo.sync()
