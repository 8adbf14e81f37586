"""Volumes on a hypervisor, over SSH: where a volume's file is, block LVs activated for the
time they are read or written (and left as they were found), and the volume as a layer
file to read, a disk to write (raw, or a new qcow2 image), or a disk to read back.

Paths as vdsm lays them out: file domains under the mount root
(`<mount_root>/<server>:_<export>/<sd>/images/<disk>/<volume>`), GlusterFS under
`<mount_root>/glusterSD/<server>:_<volume>/...`, block domains as LVM devices
`<dev_root>/<sd = VG>/<volume = LV>`.
"""

from __future__ import annotations

import bisect
import posixpath
import queue
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from shared.backup.journal import JobJournal
from shared.backup.layers import Layer
from shared.backup.plan import Span
from shared.engine.models import StorageDomainInfo
from shared.errors import ConfigError
from shared.qcow2.layer_map import Kind
from shared.qcow2.writer import Qcow2StreamWriter
from shared.sources.extent import Extent
from shared.ssh.access import HostAccess
from shared.ssh.agent import RemoteAgent, Segment
from shared.ssh.netcat import NetcatOptions
from shared.ssh.session import HostSession

FILE_TYPES = {"nfs", "posixfs", "localfs"}
BLOCK_TYPES = {"iscsi", "fcp"}
LV = "lv"  # journal entries "lv:<host>:<vg>/<lv>" = "activated" while Drover holds one active


@dataclass(frozen=True)
class DomainDir:
    block: bool
    root: str  # file: the domain's directory; block: the VG's device directory

    def volume_path(self, disk_id: str, volume_id: str) -> str:
        if self.block:
            return posixpath.join(self.root, volume_id)
        return posixpath.join(self.root, "images", disk_id, volume_id)

    def backing_path(self, child_path: str, backing_file: str) -> str:
        """Where the backing file a qcow2 header names is: relative to the child's
        directory on file domains; the LV of the same name on block domains."""
        if self.block:
            return posixpath.join(self.root, posixpath.basename(backing_file))
        return posixpath.normpath(posixpath.join(posixpath.dirname(child_path), backing_file))


def domain_dir(access: HostAccess, domain: StorageDomainInfo) -> DomainDir:
    kind = domain.type
    if kind in BLOCK_TYPES:
        return DomainDir(True, posixpath.join(access.dev_root, domain.id))
    if kind == "glusterfs":
        volume = "/" + domain.path.strip("/")
        mount = posixpath.join("glusterSD", _mount_name(domain.address, volume))
    elif kind == "localfs":
        mount = domain.path.replace("/", "_")
    elif kind in FILE_TYPES:
        mount = _mount_name(domain.address, domain.path)
    else:
        raise ConfigError(
            f"storage domain {domain.name} is of type {kind or 'unknown'}, which the ssh mode "
            "cannot read",
            hint="use mode image_transfer for this VM",
        )
    return DomainDir(False, posixpath.join(access.mount_root, mount, domain.id))


def _mount_name(server: str, path: str) -> str:
    """vdsm's mount directory name: "server:/exports/data" -> "server:_exports_data"."""
    return f"{server}:{path.replace('/', '_')}"


class AgentPool:
    """A few agents on one host session, lent to one reader at a time."""

    def __init__(self, session: HostSession, size: int, netcat: NetcatOptions | None) -> None:
        self._session = session
        self._netcat = netcat
        self._idle: queue.LifoQueue[RemoteAgent] = queue.LifoQueue()
        self._all: list[RemoteAgent] = []
        self.size = max(1, size)

    @contextmanager
    def agent(self) -> Iterator[RemoteAgent]:
        try:
            agent = self._idle.get_nowait()
        except queue.Empty:
            agent = self._session.agent(self._netcat)
            self._all.append(agent)
        try:
            yield agent
        except BaseException:
            agent.close()  # it may be in the middle of an answer: never lend it again
            raise
        self._idle.put(agent)

    def release(self, path: str) -> None:
        """Every agent lets go of `path` (the readers of it are done)."""
        for agent in self._all:
            if not agent.closed:
                agent.release(path)

    def close(self) -> None:
        for agent in self._all:
            agent.close()


class SshVolume:
    """A volume file on the host: a layer to read (`shared.backup.layers.LayerFile`)."""

    def __init__(self, pool: AgentPool, path: str, name: str) -> None:
        self._pool = pool
        self.path = path
        self.name = name

    @property
    def connections(self) -> int:
        return self._pool.size

    def read_at(self, offset: int, length: int) -> bytes:
        with self._pool.agent() as agent:
            size = agent.size(self.path)
            length = max(0, min(length, size - offset))
            return agent.read([Segment(self.path, offset, length)]) if length else b""

    def read_ranges(self, ranges: Sequence[Span], buffer: memoryview) -> None:
        segments = [Segment(self.path, r.start, r.length) for r in ranges]
        with self._pool.agent() as agent:
            agent.read_into(segments, buffer)

    def data_extents(self, size: int) -> list[Span]:
        with self._pool.agent() as agent:
            extents = agent.data_extents(self.path)
        return [Span(s, min(s + n, size) - s) for s, n in extents if s < size]


@contextmanager
def activated(
    session: HostSession, pool: AgentPool, journal: JobJournal | None, vg: str, path: str
) -> Iterator[None]:
    """An inactive LV is activated for the block and deactivated after; one active before is
    left active, unless this job's journal says an earlier attempt activated it (that
    attempt died before deactivating it). Recorded first, so a cleanup after a crash
    deactivates it too."""
    lv = f"{vg}/{posixpath.basename(path)}"
    entry = f"{LV}:{session.access.name}:{lv}"
    ours = journal is not None and journal.recorded(entry) == "activated"
    with pool.agent() as agent:
        active = agent.exists(path)
    if active and not ours:
        yield
        return
    if journal is not None:
        journal.record(entry, "activated")
    if not active:
        session.run(["lvchange", "-ay", lv])
    try:
        yield
    finally:
        pool.release(path)
        session.run(["lvchange", "-an", lv])
        if journal is not None:
            journal.record(entry, "")


# restore: writing a new volume, and reading it back --------------------------------------


class RawVolumeSink:
    """Guest bytes straight into a raw volume."""

    def __init__(self, pool: AgentPool, path: str) -> None:
        self._pool = pool
        self._path = path

    @property
    def connections(self) -> int:
        return self._pool.size

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        with self._pool.agent() as agent:
            agent.write(self._path, offset, memoryview(data))

    def zero(self, offset: int, length: int) -> None:
        with self._pool.agent() as agent:
            agent.zero(self._path, offset, length)

    def flush(self) -> None:
        with self._pool.agent() as agent:
            agent.fsync(self._path)


class Qcow2VolumeSink:
    """Guest bytes into a new qcow2 image written over the (empty) volume's file."""

    def __init__(self, pool: AgentPool, path: str, size: int) -> None:
        self._raw = RawVolumeSink(pool, path)
        self._image = Qcow2StreamWriter(self, size)

    @property
    def connections(self) -> int:
        return self._raw.connections

    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        self._raw.write(offset, data)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self._image.write(offset, memoryview(data))

    def zero(self, offset: int, length: int) -> None:
        return None  # a new image reads zeros wherever nothing was written

    def flush(self) -> None:
        self._image.close()
        self._raw.flush()


class LayerDiskSource:
    """A volume read back as a disk: its guest bytes, from its layer map (no backing)."""

    def __init__(self, volume: SshVolume, layer: Layer, size: int) -> None:
        if any(a.kind is Kind.COMPRESSED for a in layer.allocations):
            raise ConfigError(f"{volume.name} holds compressed clusters: it was not written here")
        self._volume = volume
        self._layer = layer
        self._size = size
        self._starts = [a.start for a in layer.allocations]

    def size(self) -> int:
        return self._size

    def extents(self, context: str = "zero") -> list[Extent]:
        result, cursor = [], 0
        for a in self._layer.allocations:
            if a.start > cursor:
                result.append(Extent(cursor, a.start - cursor, True, True))
            result.append(Extent(a.start, a.length, a.kind is Kind.ZERO, True))
            cursor = a.end
        if cursor < self._size:
            result.append(Extent(cursor, self._size - cursor, True, True))
        return result

    def readinto(self, offset: int, buf: bytearray | memoryview) -> int:
        """Within one data allocation (as `extents` gives them)."""
        index = bisect.bisect_right(self._starts, offset) - 1
        allocation = self._layer.allocations[index]
        length = min(len(buf), allocation.end - offset)
        host = allocation.host_offset + (offset - allocation.start)
        self._volume.read_ranges([Span(host, length)], memoryview(buf)[:length])
        return length

    def read(self, offset: int, length: int) -> bytes:
        buf = bytearray(length)
        n = self.readinto(offset, buf)
        return bytes(buf[:n])

    def close(self) -> None:
        return None
