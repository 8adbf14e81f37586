"""SSH transfer mode: the API for metadata and snapshots only, the data straight off a
hypervisor over SSH (optionally over netcat), and back over SSH for a restore.

Backup: a disk-only snapshot (`shared.modes.snapshots`), then per disk the chain of volume
files below the snapshot read on a host that sees the storage (`shared.backup.layers`): the
whole chain for a full, the qcow2 deltas above the kept snapshot's volume for an incremental.
Block domains' LVs are activated while they are read and deactivated after when they were
inactive. Restore: empty disks made through the API, the merged image written into each new
volume where it lives, in its format, then read back over SSH and compared.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from shared.backup.context import DiskRef
from shared.backup.journal import JobJournal
from shared.backup.layers import ChainCopy, Layer, LayerFile, copy_chain, map_volume, read_chain
from shared.engine.client import EngineClient
from shared.engine.models import StorageDomainInfo, VmInfo
from shared.errors import ConfigError, DroverError
from shared.logging import get_logger
from shared.modes import snapshots
from shared.modes.base import DiskPlace, JobRun, Leftovers
from shared.repository.repository import Repository
from shared.settings import get_settings
from shared.sources.ssh_volumes import (
    LV,
    AgentPool,
    DomainDir,
    LayerDiskSource,
    Qcow2VolumeSink,
    RawVolumeSink,
    SshVolume,
    activated,
    domain_dir,
)
from shared.ssh.credentials import host_access, pick_host
from shared.ssh.netcat import NetcatOptions
from shared.ssh.session import HostSession
from shared.state import StateStore

QUEUE = "transfer.ssh"
log = get_logger(__name__)


class SshMode(snapshots.SnapshotSteps):
    name = "ssh"

    def queue(self, cluster: str) -> str:
        return QUEUE

    # backup -----------------------------------------------------------------------------
    def transfer_disk(self, run: JobRun, disk: DiskRef, repo: Repository) -> None:
        bounds = snapshots.chain_bounds(run, disk, repo)
        engine, request = run.engine, run.context.request
        vm = engine.vm(run.context.vm_id)
        netcat = _netcat_options() if request.netcat else None
        store = run.journal.store
        with _on_host(engine, store, run.journal, request.manager, vm, disk, netcat) as host:
            with snapshots.stale_anchor_dropped(run):
                layers = read_chain(host.open_layer, bounds.top, disk.size, bounds.stop)
            copy = ChainCopy(disk, layers, host.open_layer, bounds.parent_chunks)
            copy_chain(copy, repo, run.journal)

    def cleanup(self, leftovers: Leftovers) -> None:
        """Remove the job's snapshot and thaw (`snapshots.cleanup`), deactivate the LVs it
        activated (even when the rest failed)."""
        try:
            snapshots.cleanup(leftovers)
        finally:
            _deactivate_recorded(leftovers)

    # restore ----------------------------------------------------------------------------
    @contextmanager
    def open_sink(self, place: DiskPlace) -> Iterator[RawVolumeSink | Qcow2VolumeSink]:
        with _new_volume(place) as (host, path):
            sink: RawVolumeSink | Qcow2VolumeSink
            if place.format == "cow":
                sink = Qcow2VolumeSink(host.pool, path, place.size)
            else:
                sink = RawVolumeSink(host.pool, path)
            yield sink
            sink.flush()

    @contextmanager
    def open_readback(self, place: DiskPlace) -> Iterator[LayerDiskSource]:
        with _new_volume(place) as (host, path):
            volume = SshVolume(host.pool, path, f"restored disk {place.disk_id}")
            layer = map_volume(volume, place.disk_id, place.size)
            yield LayerDiskSource(volume, layer, place.size)


@dataclass
class _Host:
    """One SSH session to a host and what reads and writes a disk's volumes on it."""

    session: HostSession
    pool: AgentPool
    domain: DomainDir
    vg: str
    disk_id: str
    journal: JobJournal | None
    paths: dict[str, str]

    def path_of(self, volume_id: str, above: Layer | None) -> str:
        if volume_id not in self.paths:
            if above is None or above.backing_file is None:
                self.paths[volume_id] = self.domain.volume_path(self.disk_id, volume_id)
            else:
                child = self.paths[above.volume_id]
                self.paths[volume_id] = self.domain.backing_path(child, above.backing_file)
        return self.paths[volume_id]

    @contextmanager
    def open_layer(self, volume_id: str, above: Layer | None = None) -> Iterator[LayerFile]:
        path = self.path_of(volume_id, above)
        name = f"volume {volume_id} on host {self.session.access.name}"
        if not self.domain.block:
            yield SshVolume(self.pool, path, name)
            return
        with activated(self.session, self.pool, self.journal, self.vg, path):
            yield SshVolume(self.pool, path, name)


@contextmanager
def _on_host(
    engine: EngineClient,
    store: StateStore,
    journal: JobJournal | None,
    manager: str,
    vm: VmInfo | None,
    disk: DiskRef,
    netcat: NetcatOptions | None,
) -> Iterator[_Host]:
    access = pick_host(engine, store, manager, vm)
    domain = _domain(engine, disk.storage_domain_id)
    with ExitStack() as stack:
        session = stack.enter_context(HostSession(access))
        pool = AgentPool(session, get_settings().ssh.connections, netcat)
        stack.callback(pool.close)
        where = domain_dir(access, domain)
        yield _Host(session, pool, where, domain.id, disk.id, journal, {})


def _domain(engine: EngineClient, sd_id: str) -> StorageDomainInfo:
    for domain in engine.storage_domains():
        if domain.id == sd_id:
            return domain
    raise ConfigError(f"storage domain {sd_id} is not known to the engine")


def _netcat_options() -> NetcatOptions:
    settings = get_settings().ssh
    return NetcatOptions(ports=settings.netcat_ports, bind_address=settings.netcat_bind)


@contextmanager
def _new_volume(place: DiskPlace) -> Iterator[tuple[_Host, str]]:
    """A restored disk's only volume, on a host with credentials, its LV active meanwhile."""
    engine = place.engine
    info = engine.disk(place.disk_id)
    disk = DiskRef(info.id, info.name, info.size, info.format, info.storage_domain_id)
    with _on_host(engine, place.store, None, place.manager, None, disk, None) as host:
        path = host.path_of(info.image_id, None)
        if not host.domain.block:
            yield host, path
            return
        with activated(host.session, host.pool, None, host.vg, path):
            yield host, path


def _deactivate_recorded(leftovers: Leftovers) -> None:
    """Deactivate the LVs a job activated and did not get to deactivate."""
    for name, value in leftovers.recorded.items():
        if not (name.startswith(LV + ":") and value):
            continue
        _, host, vg_lv = name.split(":", 2)
        access = host_access(leftovers.store, leftovers.manager, host)
        if access is None:
            raise DroverError(
                f"LV {vg_lv} was left active on host {host}, which has no SSH credentials now",
                hint=f"deactivate it on the host: lvchange -an {vg_lv}",
            )
        with HostSession(access) as session:
            session.run(["lvchange", "-an", vg_lv])
        log.info("deactivated an LV left active", host=host, lv=vg_lv)
