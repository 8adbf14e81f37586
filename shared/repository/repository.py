"""The backup repository: content-addressed chunks plus one manifest per backup.

Layout in the backend: `config`, `chunks/ab/<digest>`, `index/<backup_id>` (a small summary for
listing) and `manifests/<backup_id>` (written last: a backup exists whole or not at all).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from shared.errors import ConfigError, DroverError
from shared.repository.backend import Backend
from shared.repository.chunks import ChunkStore, is_zero
from shared.repository.codec import decode, encode
from shared.repository.config import RepositoryConfig, load_or_create
from shared.repository.errors import BackupNotFound, CorruptionError, ObjectNotFound
from shared.repository.image import export_image, image_sha256, read_image
from shared.repository.local import LocalBackend
from shared.repository.location import backend_for
from shared.repository.maintenance import CheckReport, PruneReport, check, prune
from shared.repository.manifest import BackupSummary, Manifest, check_id

MANIFESTS = "manifests/"
INDEX = "index/"


class Repository:
    """Thread safe; many processes may write chunks and manifests to one repository at once."""

    def __init__(self, backend: Backend, config: RepositoryConfig) -> None:
        self.backend = backend
        self.config = config
        self.chunks = ChunkStore(backend)

    @classmethod
    def open(
        cls, location: str, create: bool = True, *, chunk_size: int | None = None
    ) -> Repository:
        """Open the repository at a path or `file://` URL, creating it if asked to."""
        return cls.from_backend(backend_for(location), create, chunk_size=chunk_size)

    @classmethod
    def from_backend(
        cls, backend: Backend, create: bool = True, *, chunk_size: int | None = None
    ) -> Repository:
        return cls(backend, load_or_create(backend, create, chunk_size))

    @property
    def location(self) -> str:
        return self.backend.location

    @property
    def chunk_size(self) -> int:
        return self.config.chunk_size

    # Chunks

    def put_chunk(self, data: bytes | memoryview) -> str:
        """Store a non-zero chunk (idempotent) and return its digest; ValueError for zeros."""
        return self.chunks.put(data)

    def sync(self) -> None:
        """Make the chunks stored so far durable; call before reporting them stored."""
        self.backend.sync()

    def has_chunk(self, digest: str) -> bool:
        return self.chunks.has(digest)

    def get_chunk(self, digest: str) -> bytes:
        """A chunk's data, verified against its digest (`CorruptionError` otherwise)."""
        return self.chunks.get(digest)

    is_zero = staticmethod(is_zero)

    # Manifests

    def commit_manifest(self, manifest: Manifest, *, verify_chunks: bool = True) -> None:
        """Make a backup visible: its summary, then its manifest, each written atomically."""
        if verify_chunks:
            self._verify_chunks(manifest)
        summary = json.dumps(manifest.summary().to_dict()).encode()
        self.backend.save(f"{INDEX}{manifest.backup_id}", encode(summary))
        document = json.dumps(manifest.to_dict(), separators=(",", ":")).encode()
        self.backend.save(f"{MANIFESTS}{manifest.backup_id}", encode(document))

    def manifest(self, backup_id: str) -> Manifest:
        check_id(backup_id, "backup id")
        try:
            blob = self.backend.load(f"{MANIFESTS}{backup_id}")
        except ObjectNotFound:
            raise BackupNotFound(backup_id, self.location) from None
        what = f"manifest of backup {backup_id} in repository {self.location}"
        document = _parse(decode(blob, what), what)
        try:
            return Manifest.from_dict(document)
        except (TypeError, KeyError, ValueError, AttributeError, ConfigError) as exc:
            raise CorruptionError(
                f"{what} is invalid ({exc})",
                hint="take a new full backup of the VM; this one cannot be restored",
            ) from exc

    def backup_ids(self) -> list[str]:
        return sorted(name[len(MANIFESTS) :] for name in self.backend.list(MANIFESTS))

    def list_backups(self, vm_id: str | None = None) -> list[BackupSummary]:
        """Summaries of all (or one VM's) backups, oldest first, without loading chunk maps."""
        summaries = [self._summary(backup_id) for backup_id in self.backup_ids()]
        found = [s for s in summaries if s is not None and vm_id in (None, s.vm_id)]
        return sorted(found, key=lambda s: (s.created_at, s.backup_id))

    def remove_backup(self, backup_id: str) -> None:
        """Forget a backup; its chunks stay until `prune`."""
        check_id(backup_id, "backup id")
        try:
            self.backend.remove(f"{MANIFESTS}{backup_id}")
        except ObjectNotFound:
            raise BackupNotFound(backup_id, self.location) from None
        with contextlib.suppress(ObjectNotFound):
            self.backend.remove(f"{INDEX}{backup_id}")

    # Images

    def read_image(
        self, backup_id: str, disk_id: str, *, workers: int = 4
    ) -> Iterator[tuple[int, bytes | None]]:
        """(offset, data or None for a zero chunk) for each chunk of a disk, in order."""
        disk = self.manifest(backup_id).disk(disk_id)
        return read_image(disk, self.get_chunk, workers)

    def export_disk(self, backup_id: str, disk_id: str, path: str | Path, fmt: str = "raw") -> None:
        """Write a disk of a backup as a raw (sparse) or qcow2 image file."""
        disk = self.manifest(backup_id).disk(disk_id)
        export_image(disk, read_image(disk, self.get_chunk), Path(path), fmt)

    def image_sha256(self, backup_id: str, disk_id: str) -> str:
        """SHA-256 of the whole disk image, zeros included, to compare with a restored disk."""
        disk = self.manifest(backup_id).disk(disk_id)
        return image_sha256(disk, read_image(disk, self.get_chunk))

    # Upkeep

    def check(self, read_data: bool = False) -> CheckReport:
        index_ids = [name[len(INDEX) :] for name in self.backend.list(INDEX)]
        return check(self.chunks, self.backup_ids(), self.manifest, read_data, index_ids=index_ids)

    def prune(self) -> PruneReport:
        """Remove chunks no backup references. No backup may write meanwhile."""
        report = prune(self.chunks, (self.manifest(b) for b in self.backup_ids()))
        if isinstance(self.backend, LocalBackend):
            report.temporaries_removed = self.backend.remove_stale_temporaries()
        return report

    def _verify_chunks(self, manifest: Manifest) -> None:
        for disk in manifest.disks:
            for index, digest in disk.chunks.items():
                if not self.chunks.has(digest):
                    raise DroverError(
                        f"backup {manifest.backup_id} disk {disk.disk_id} chunk {index} "
                        f"({digest}) is not in repository {self.location}",
                        hint="the transfer did not store all chunks; run the backup again",
                    )

    def _summary(self, backup_id: str) -> BackupSummary | None:
        what = f"summary of backup {backup_id} in repository {self.location}"
        try:
            blob = self.backend.load(f"{INDEX}{backup_id}")
            return BackupSummary.from_dict(_parse(decode(blob, what), what))
        except (ObjectNotFound, CorruptionError, TypeError):
            pass  # a summary is only a shortcut: fall back to the manifest
        try:
            return self.manifest(backup_id).summary()
        except BackupNotFound:
            return None  # removed while listing


def _parse(document: bytes, what: str) -> dict[str, object]:
    try:
        data = json.loads(document)
    except ValueError as exc:
        raise CorruptionError(f"{what} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise CorruptionError(f"{what} is not a JSON object")
    return data
