"""Snapshot-chain copies (`shared.backup.layers`) on real qcow2 chains made with qemu-img:
every layer's own clusters laid over the layers below, bottom up, give the merged image; an
incremental over a parent's chunks gives the new image; a pass resumed after a failure does
not read again what it stored. Redis is real (chunk progress), the volumes are local files."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from shared.backup.context import DiskRef
from shared.backup.journal import JobJournal
from shared.backup.layers import ChainBroken, ChainCopy, Layer, copy_chain, read_chain
from shared.backup.plan import Span
from shared.repository.memory import MemoryBackend
from shared.repository.repository import Repository
from shared.state import JobState, StateStore, new_job_id

MiB = 1 << 20
SIZE = 24 * MiB
CHUNK = 1 * MiB

pytestmark = pytest.mark.integration


class LocalVolume:
    """A volume file on this machine, as `LayerFile`; counts the bytes it serves."""

    def __init__(self, path: Path, served: list[int]) -> None:
        self.name = str(path)
        self._path = path
        self._served = served

    @property
    def connections(self) -> int:
        return 2

    def read_at(self, offset: int, length: int) -> bytes:
        with open(self._path, "rb") as f:
            f.seek(offset)
            return f.read(length)

    def read_ranges(self, ranges: Sequence[Span], buffer: memoryview) -> None:
        cursor = 0
        with open(self._path, "rb") as f:
            for span in ranges:
                n = os.preadv(f.fileno(), [buffer[cursor : cursor + span.length]], span.start)
                assert n == span.length
                cursor += n
                self._served.append(n)

    def data_extents(self, size: int) -> list[Span]:
        return [Span(0, min(size, self._path.stat().st_size))]


class Chain:
    """qcow2 volumes in one directory, named by volume id, backing files by name as vdsm."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.served: list[int] = []

    def create(self, volume: str, backing: str | None = None, fmt: str = "qcow2") -> None:
        argv = ["qemu-img", "create", "-q", "-f", fmt]
        if fmt == "qcow2":
            argv += ["-o", "compat=1.1"]
        if backing:
            argv += ["-b", backing, "-F", self.format(backing)]
        subprocess.run([*argv, str(self.root / volume), str(SIZE)], check=True)

    def format(self, volume: str) -> str:
        return "qcow2" if (self.root / volume).read_bytes()[:4] == b"QFI\xfb" else "raw"

    def io(self, volume: str, *commands: str) -> None:
        argv = ["qemu-io", "-f", self.format(volume)]
        for command in commands:
            argv += ["-c", command]
        subprocess.run([*argv, str(self.root / volume)], check=True, capture_output=True)

    def image(self, top: str) -> bytes:
        raw = self.root / f"{top}.merged.raw"
        subprocess.run(
            ["qemu-img", "convert", "-f", self.format(top), "-O", "raw", self.root / top, raw],
            check=True,
        )
        return raw.read_bytes()

    @contextmanager
    def open_layer(self, volume: str, above: Layer | None = None) -> Iterator[LocalVolume]:
        yield LocalVolume(self.root / volume, self.served)


@pytest.fixture
def store(redis_url: str) -> StateStore:
    return StateStore.from_url(redis_url)


def journal_for(store: StateStore) -> JobJournal:
    job_id = new_job_id()
    store.create_job(JobState(id=job_id, vm_id="vm"))
    return JobJournal(store, job_id, "vm", 0)


def merged(repo: Repository, chunks: dict[int, str]) -> bytes:
    out = bytearray(SIZE)
    for index, digest in chunks.items():
        if digest:
            out[index * CHUNK : (index + 1) * CHUNK] = repo.get_chunk(digest)
    return bytes(out)


DISK = DiskRef("d1", "disk", SIZE, "cow")


def copy(
    chain: Chain,
    repo: Repository,
    store: StateStore,
    top: str,
    stop: str | None = None,
    parent: dict[int, str] | None = None,
) -> tuple[dict[int, str], list[Layer]]:
    journal = journal_for(store)
    layers = read_chain(chain.open_layer, top, SIZE, stop_at=stop)
    copy_chain(ChainCopy(DISK, layers, chain.open_layer, parent or {}), repo, journal)
    return store.stored_chunks(journal.job_id, DISK.id), layers


def test_a_full_merges_every_layer_bottom_up(tmp_path: Path, store: StateStore) -> None:
    chain = Chain(tmp_path)
    repo = Repository.from_backend(MemoryBackend(), chunk_size=CHUNK)
    chain.create("base", fmt="raw")
    chain.io("base", "write -P 0x11 0 3M", "write -P 0x12 10M 1M")
    chain.create("mid", "base")
    chain.io("mid", "write -P 0x21 1M 64k", "write -z 10M 512k", "write -P 0x22 20M 2M")
    chain.create("top", "mid")
    chain.io("top", "write -P 0x31 1M 4k", "write -P 0x32 2M 1M", "write -z -u 20M 64k")

    chunks, layers = copy(chain, repo, store, "top")

    assert [layer.volume_id for layer in layers] == ["base", "mid", "top"]
    assert [layer.format for layer in layers] == ["raw", "cow", "cow"]
    assert merged(repo, chunks) == chain.image("top")


def test_an_incremental_reads_only_the_layers_above_the_kept_volume(
    tmp_path: Path, store: StateStore
) -> None:
    chain = Chain(tmp_path)
    repo = Repository.from_backend(MemoryBackend(), chunk_size=CHUNK)
    chain.create("v0")
    chain.io("v0", "write -P 0x01 0 8M")
    full, _ = copy(chain, repo, store, "v0")
    chain.create("v1", "v0")  # the snapshot kept by the full; the guest wrote into v1
    chain.io("v1", "write -P 0x02 3M 4k", "write -z 5M 64k", "write -P 0x03 23M 1M")
    chain.served.clear()

    incremental, layers = copy(chain, repo, store, "v1", stop="v0", parent=full)

    assert [layer.volume_id for layer in layers] == ["v1"]
    assert sum(chain.served) == 64 * 1024 + 1 * MiB  # the delta's data clusters, nothing else
    assert merged(repo, {**full, **incremental}) == chain.image("v1")


def test_a_chain_that_does_not_reach_the_kept_volume_is_refused(
    tmp_path: Path, store: StateStore
) -> None:
    chain = Chain(tmp_path)
    chain.create("a")
    chain.create("b", "a")
    with pytest.raises(ChainBroken, match="volume gone of the kept snapshot is not below volume b"):
        read_chain(chain.open_layer, "b", SIZE, stop_at="gone")


def test_a_resumed_pass_does_not_read_again_what_it_stored(
    tmp_path: Path, store: StateStore
) -> None:
    chain = Chain(tmp_path)
    repo = Repository.from_backend(MemoryBackend(), chunk_size=CHUNK)
    chain.create("v0")
    chain.io("v0", "write -P 0x41 0 12M")
    journal = journal_for(store)
    layers = read_chain(chain.open_layer, "v0", SIZE, None)
    failing = FailAfter(chain, reads=5)
    with pytest.raises(OSError, match="connection dropped"):
        copy_chain(ChainCopy(DISK, layers, failing.open_layer, {}), repo, journal)
    done = len(store.stored_chunks(journal.job_id, DISK.id))
    assert done >= 3
    chain.served.clear()

    copy_chain(ChainCopy(DISK, layers, chain.open_layer, {}), repo, journal)

    assert len(chain.served) <= 12 - done + 2  # the rest (and what was in flight)
    chunks = store.stored_chunks(journal.job_id, DISK.id)
    image = merged(repo, chunks)
    assert hashlib.sha256(image).digest() == hashlib.sha256(chain.image("v0")).digest()


class FailAfter:
    def __init__(self, chain: Chain, reads: int) -> None:
        self._chain = chain
        self._left = reads

    @contextmanager
    def open_layer(self, volume: str, above: Layer | None = None) -> Iterator[LocalVolume]:
        with self._chain.open_layer(volume) as file:
            original = file.read_ranges

            def read_ranges(ranges: Sequence[Span], buffer: memoryview) -> None:
                self._left -= 1
                if self._left < 0:
                    raise OSError("connection dropped")
                original(ranges, buffer)

            file.read_ranges = read_ranges  # type: ignore[method-assign]
            yield file
