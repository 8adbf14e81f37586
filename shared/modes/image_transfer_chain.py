"""Image transfer without the backup API: snapshot chains (engines before 4.4, or by policy).

As the SDK's `download_disk_snapshot.py`: a disk-only snapshot, then each new layer of each
disk downloaded through an image transfer of its disk snapshot, in qcow2 (the volume file as
it is). A full reads the snapshot's whole chain, an incremental the layers above the kept
snapshot's volume (`shared.backup.layers`). The engine locks a disk while one of its volumes
is transferred, so the layers are read one transfer at a time. Restore is image transfer's.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from shared.backup.context import DiskRef
from shared.backup.disk_chunks import read_exactly
from shared.backup.layers import ChainCopy, Layer, LayerFile, copy_chain, read_chain
from shared.backup.plan import Span
from shared.modes import snapshots
from shared.modes.base import JobRun
from shared.modes.image_transfer import (
    READ_CONNECTIONS,
    ImageTransferMode,
    cancel_stale_transfers,
    finalized_or_cancelled,
    start_transfer,
)
from shared.repository.repository import Repository
from shared.sources.imageio import ImageioSource


class SnapshotChainImageTransfer(snapshots.SnapshotSteps, ImageTransferMode):
    """Image transfer's queue, cleanup and restore; the snapshot steps of the chain modes."""

    def transfer_disk(self, run: JobRun, disk: DiskRef, repo: Repository) -> None:
        bounds = snapshots.chain_bounds(run, disk, repo)
        open_layer = functools.partial(_layer_transfer, run, disk)
        with snapshots.stale_anchor_dropped(run):
            layers = read_chain(open_layer, bounds.top, disk.size, bounds.stop)
        copy_chain(ChainCopy(disk, layers, open_layer, bounds.parent_chunks), repo, run.journal)


@contextmanager
def _layer_transfer(
    run: JobRun, disk: DiskRef, volume_id: str, above: Layer | None = None
) -> Iterator[LayerFile]:
    """`above` is not needed: the engine finds a disk snapshot by its volume id alone."""
    engine = run.engine
    cancel_stale_transfers(engine, disk.id)
    run.journal.record(f"transfer:{disk.id}", "starting")
    transfer = start_transfer(engine, disk.id, snapshot_id=volume_id, fmt="cow")
    run.journal.record(f"transfer:{disk.id}", transfer.id)
    with (
        finalized_or_cancelled(engine, transfer.id),
        ImageioSource(transfer, engine.ca_file, max_connections=READ_CONNECTIONS) as source,
    ):
        yield ImageioLayer(source, f"volume {volume_id} of disk {disk.id}")


class ImageioLayer:
    """A volume file served by an image transfer in qcow2 format: its bytes as they are."""

    def __init__(self, source: ImageioSource, name: str) -> None:
        self._source = source
        self.name = name

    @property
    def connections(self) -> int:
        return self._source.connections

    def read_at(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self._source.size() - offset))
        return self._source.read(offset, length) if length else b""

    def read_ranges(self, ranges: Sequence[Span], buffer: memoryview) -> None:
        cursor = 0
        for span in ranges:
            read_exactly(self._source, span.start, buffer[cursor : cursor + span.length])
            cursor += span.length

    def data_extents(self, size: int) -> list[Span]:
        return [Span(e.start, e.length) for e in self._source.extents("zero") if not e.zero]
