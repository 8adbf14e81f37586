"""`LabDataPlane`: the lab's implementation of `lab.dataplane.DataPlane`.

It composes the single-purpose modules of this package: `storage` (domains, volumes,
bitmaps), `exports` + `nbd` (qemu-nbd), `imageio` (host daemons and the engine-side
proxy), `sshd` (one OpenSSH server per host), `lvm` (fake lvchange), `guest` (guest
writes and holds) and `proxy` (devices of proxy VMs).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from lab import procs
from lab.dataplane import DomainSpec, HostEndpoints, HostSpec, VolumeFormat, VolumeRef
from lab.pki import CertificateAuthority

from . import imageio, lvm
from .exports import Exporter
from .guest import GuestIO
from .imageio import DaemonConfig, ImageioDaemon
from .layout import Layout
from .nbd import NbdExport, NbdServer
from .proxy import ProxyDevices
from .sshd import ClientKey, SshServer, ssh_user
from .storage import Storage

log = logging.getLogger(__name__)

PROXY_NAME = "engine-proxy"


@dataclass
class HostRuntime:
    spec: HostSpec
    imageio: ImageioDaemon
    sshd: SshServer


class LabDataPlane:
    """Real qemu-nbd, ovirt-imageio and sshd processes over a directory tree."""

    def __init__(self, state_dir: Path, hosts: list[HostSpec], ca: CertificateAuthority) -> None:
        # absolute: lab.json publishes paths under it, and the hosts' scripts embed them
        self.state_dir = Path(state_dir).absolute()
        self.layout = Layout(self.state_dir)
        self.ca = ca
        self.specs = list(hosts)
        self.registry = procs.ProcessRegistry()
        self.storage = Storage(self.layout, [h.name for h in hosts])
        self.guest = GuestIO(self.storage, self.state_dir / "spool")
        self.proxies = ProxyDevices(self.layout, self.storage)
        self._nbd = NbdServer(self.registry, self.layout.logs_dir() / "nbd")
        self._exporter = Exporter(self.storage, self._nbd)
        self._exports: set[NbdExport] = set()
        self._dirty_urls: set[str] = set()  # host transfer urls of dirty tickets
        self._lock = threading.RLock()
        self._started = False
        # UNIX socket paths are limited to 107 bytes: keep them short, under /tmp.
        self._sock_dir = Path(tempfile.mkdtemp(prefix="dl-"))
        self._client_key: ClientKey | None = None
        self._hosts = {h.name: self._host_runtime(i, h) for i, h in enumerate(hosts)}
        self._proxy = ImageioDaemon(self._daemon_config(PROXY_NAME, "proxy"), self.registry)

    # construction helpers

    def _daemon_config(self, name: str, short: str) -> DaemonConfig:
        cert_file, key_file = self.ca.issue(f"imageio-{name}", [name, "localhost"])
        return DaemonConfig(
            name=name,
            conf_dir=self.state_dir / "imageio" / name,
            cert_file=cert_file,
            key_file=key_file,
            ca_file=self.ca.ca_file,
            port=procs.free_port(),
            control_socket=self._sock_dir / f"{short}.sock",
        )

    def _host_runtime(self, index: int, spec: HostSpec) -> HostRuntime:
        daemon = ImageioDaemon(self._daemon_config(spec.name, f"h{index}"), self.registry)
        sshd = SshServer(
            spec.name,
            self.layout.host_dir(spec.name) / "sshd",
            procs.free_port(),
            self._ensure_client_key(),
            self.layout.host_bin(spec.name),
            self.registry,
        )
        return HostRuntime(spec, daemon, sshd)

    def _ensure_client_key(self) -> ClientKey:
        if self._client_key is None:
            self._client_key = ClientKey.create(self.layout.ssh_dir())
        return self._client_key

    def _host(self, host: str) -> HostRuntime:
        if host in self._hosts:
            return self._hosts[host]
        for runtime in self._hosts.values():
            if runtime.spec.id == host:
                return runtime
        raise KeyError(f"unknown host {host!r}")

    # life cycle and endpoints

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            try:
                self._start_processes()
            except BaseException:
                self.stop()
                raise

    def _start_processes(self) -> None:
        self._sock_dir.mkdir(parents=True, exist_ok=True)
        for name in self._hosts:
            self.layout.mount_root(name).mkdir(parents=True, exist_ok=True)
            lvm.install_tools(self.layout, name)
        services: list[ImageioDaemon | SshServer] = [self._proxy]
        for runtime in self._hosts.values():
            services += [runtime.imageio, runtime.sshd]
        for service in services:
            service.spawn()
        with ThreadPoolExecutor(max_workers=len(services)) as pool:
            for future in [pool.submit(s.wait_ready) for s in services]:
                future.result()

    def stop(self) -> None:
        with self._lock:
            self._close_exports()
            self.guest.discard_all()
            self.registry.stop_all()
            self._started = False
        shutil.rmtree(self._sock_dir, ignore_errors=True)

    def _close_exports(self) -> None:
        for export in list(self._exports):
            try:
                export.close()
            except Exception:
                log.exception("closing export %s failed", export.nbd_url)

    def host_endpoints(self) -> list[HostEndpoints]:
        return [self._endpoints(runtime) for runtime in self._hosts.values()]

    def _endpoints(self, runtime: HostRuntime) -> HostEndpoints:
        return HostEndpoints(
            name=runtime.spec.name,
            address="127.0.0.1",
            ssh_port=runtime.sshd.port,
            ssh_user=ssh_user(),
            ssh_key=str(self._ensure_client_key().private_key),
            ssh_host_key=runtime.sshd.host_public_key(),
            imageio_port=runtime.imageio.port,
            mount_root=str(self.layout.mount_root(runtime.spec.name)),
            dev_root=str(self.layout.host_dev(runtime.spec.name)),
        )

    def proxy_imageio_url(self) -> str:
        return self._proxy.base_url

    # storage domains and volumes

    def add_domain(self, domain: DomainSpec) -> None:
        self.storage.add_domain(domain)

    def create_volume(self, ref: VolumeRef, fmt: VolumeFormat, size: int,
                      parent: VolumeRef | None = None) -> None:
        self.storage.create_volume(ref, VolumeFormat(fmt), size, parent)

    def fill_volume(self, ref: VolumeRef, offset: int, length: int, seed: int) -> None:
        self.storage.fill(ref, offset, length, seed)

    def remove_volume(self, ref: VolumeRef) -> None:
        self.storage.remove_volume(ref)

    def merge_into_parent(self, child: VolumeRef, parent: VolumeRef) -> None:
        self.storage.merge_into_parent(child, parent)

    def volume_info(self, ref: VolumeRef) -> dict[str, object]:
        return self.storage.info(ref)

    def copy_disk(self, chain_top: VolumeRef, dst: VolumeRef, fmt: VolumeFormat) -> None:
        self.storage.copy_disk(chain_top, dst, VolumeFormat(fmt))

    # exports and imageio tickets

    def export(self, top: VolumeRef, *, backing_chain: bool, writable: bool,
               dirty_bitmap: str | None = None,
               fmt: VolumeFormat = VolumeFormat.RAW) -> NbdExport:
        """Export `top`; guest writes to the disk are deferred while it is exported."""
        self.guest.hold(top.disk_id)
        holder: list[NbdExport] = []

        def on_close() -> None:
            with self._lock:
                if holder:
                    self._exports.discard(holder[0])
            self.guest.release(top.disk_id)

        try:
            export = self._exporter.export(top, backing_chain=backing_chain, writable=writable,
                                           dirty_bitmap=dirty_bitmap, fmt=VolumeFormat(fmt),
                                           on_close=on_close)
        except BaseException:
            self.guest.release(top.disk_id)
            raise
        holder.append(export)
        with self._lock:
            self._exports.add(export)
        return export

    def add_ticket(self, host: str, ticket_id: str, url: str, size: int, ops: list[str],
                   timeout_s: int, dirty: bool = False) -> str:
        daemon = self._host(host).imageio
        daemon.control.add_ticket(imageio.make_ticket(ticket_id, url, size, ops, timeout_s, dirty))
        transfer_url = daemon.transfer_url(ticket_id)
        with self._lock:
            if dirty:
                self._dirty_urls.add(transfer_url)
            else:
                self._dirty_urls.discard(transfer_url)
        return transfer_url

    def add_proxy_ticket(self, ticket_id: str, transfer_url: str, size: int, ops: list[str],
                         timeout_s: int, dirty: bool | None = None) -> str:
        """`dirty=None`: serve dirty extents iff the host ticket behind `transfer_url` does."""
        if dirty is None:
            with self._lock:
                dirty = transfer_url in self._dirty_urls
        ticket = imageio.make_ticket(ticket_id, transfer_url, size, ops, timeout_s, dirty)
        self._proxy.control.add_ticket(ticket)
        return self._proxy.transfer_url(ticket_id)

    def ticket_status(self, host: str, ticket_id: str) -> dict[str, object]:
        return self._host(host).imageio.control.get_ticket(ticket_id)

    def proxy_ticket_status(self, ticket_id: str) -> dict[str, object]:
        return self._proxy.control.get_ticket(ticket_id)

    def remove_ticket(self, host: str, ticket_id: str) -> None:
        daemon = self._host(host).imageio
        daemon.control.remove_ticket(ticket_id)
        with self._lock:
            self._dirty_urls.discard(daemon.transfer_url(ticket_id))

    def remove_proxy_ticket(self, ticket_id: str) -> None:
        self._proxy.control.remove_ticket(ticket_id)

    # checkpoints

    def add_bitmap(self, top: VolumeRef, name: str) -> None:
        self.storage.add_bitmap(top, name)

    def remove_bitmap(self, chain: list[VolumeRef], name: str) -> None:
        self.storage.remove_bitmap(chain, name)

    def has_bitmap(self, chain: list[VolumeRef], name: str) -> bool:
        return self.storage.has_bitmap(chain, name)

    # guest I/O

    def hold(self, disk_id: str) -> None:
        self.guest.hold(disk_id)

    def release(self, disk_id: str) -> None:
        self.guest.release(disk_id)

    def guest_write(self, top: VolumeRef, offset: int, length: int) -> None:
        self.guest.write(top, offset, length)

    # proxy VMs

    def attach_device(self, proxy_vm: str, top: VolumeRef, device_name: str,
                      writable: bool = False) -> str:
        return self.proxies.attach(proxy_vm, top, device_name, writable)

    def detach_device(self, proxy_vm: str, device_name: str) -> None:
        self.proxies.detach(proxy_vm, device_name)

    # extras (not part of the DataPlane protocol)

    def proxy_root(self, proxy_vm: str) -> Path:
        return self.proxies.proxy_root(proxy_vm)

    def volume_path(self, ref: VolumeRef) -> Path:
        """Where the volume's bytes are (hidden LV bytes for block domains)."""
        return self.storage.path(ref)

    def host_volume_path(self, host: str, ref: VolumeRef) -> Path:
        """The volume's path as seen on `host` (for block domains: needs lvchange -ay)."""
        return self.storage.host_path(self._host(host).spec.name, ref)

    def chain(self, top: VolumeRef) -> list[VolumeRef]:
        """`top` and its ancestors, top first."""
        return self.storage.chain(top)

    @property
    def ca_file(self) -> Path:
        return self.ca.ca_file

    def __enter__(self) -> LabDataPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
