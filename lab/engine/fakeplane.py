"""An in-memory `DataPlane` for tests of the engine: records every call, moves no bytes."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from lab.dataplane import DomainSpec, HostEndpoints, HostSpec, VolumeFormat, VolumeRef


@dataclass
class FakeVolume:
    fmt: VolumeFormat
    size: int
    parent: VolumeRef | None
    bitmaps: set[str] = field(default_factory=set)
    writes: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class FakeExport:
    nbd_url: str
    top: VolumeRef
    writable: bool
    backing_chain: bool
    dirty_bitmap: str | None
    fmt: VolumeFormat
    closed: bool = False
    size: int = 0

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeTicket:
    host: str
    url: str
    size: int
    ops: list[str]
    dirty: bool
    added: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)


class FakeDataPlane:
    def __init__(self, hosts: list[HostSpec] | None = None) -> None:
        self.hosts = hosts or []
        self.lock = threading.RLock()
        self.domains: dict[str, DomainSpec] = {}
        self.volumes: dict[VolumeRef, FakeVolume] = {}
        self.exports: list[FakeExport] = []
        self.tickets: dict[str, FakeTicket] = {}
        self.proxy_tickets: dict[str, str] = {}
        self.holds: Counter[str] = Counter()
        self.devices: dict[tuple[str, str], VolumeRef] = {}
        self.writable_devices: set[tuple[str, str]] = set()  # of `devices`: written back
        self.calls: list[tuple[str, tuple[object, ...]]] = []
        self.fail: set[str] = set()  # method names that raise

    def _record(self, name: str, *args: object) -> None:
        with self.lock:
            self.calls.append((name, args))
        if name in self.fail:
            raise RuntimeError(f"fake {name} failure")

    def called(self, name: str) -> list[tuple[object, ...]]:
        with self.lock:
            return [args for n, args in self.calls if n == name]

    # life cycle
    def start(self) -> None:
        self._record("start")

    def stop(self) -> None:
        self._record("stop")

    def host_endpoints(self) -> list[HostEndpoints]:
        return [
            HostEndpoints(
                h.name, "127.0.0.1", 0, "root", "/dev/null", "", 54322 + i, "/tmp", "/dev"
            )
            for i, h in enumerate(self.hosts)
        ]

    def proxy_imageio_url(self) -> str:
        return "https://127.0.0.1:54323"

    # storage
    def add_domain(self, domain: DomainSpec) -> None:
        self._record("add_domain", domain)
        self.domains[domain.id] = domain

    def create_volume(
        self, ref: VolumeRef, fmt: VolumeFormat, size: int, parent: VolumeRef | None = None
    ) -> None:
        self._record("create_volume", ref, fmt, size, parent)
        with self.lock:
            if ref in self.volumes:
                raise ValueError(f"volume {ref} exists")
            if parent is not None and parent not in self.volumes:
                raise ValueError(f"parent {parent} missing")
            self.volumes[ref] = FakeVolume(fmt, size, parent)

    def fill_volume(self, ref: VolumeRef, offset: int, length: int, seed: int) -> None:
        self._record("fill_volume", ref, offset, length, seed)
        with self.lock:
            self.volumes[ref].writes.append((offset, length))

    def remove_volume(self, ref: VolumeRef) -> None:
        self._record("remove_volume", ref)
        with self.lock:
            self.volumes.pop(ref, None)

    def merge_into_parent(self, child: VolumeRef, parent: VolumeRef) -> None:
        self._record("merge_into_parent", child, parent)
        with self.lock:
            volume = self.volumes.pop(child)
            if volume.parent != parent:
                raise ValueError("not the parent")
            self.volumes[parent].writes.extend(volume.writes)
            for other in self.volumes.values():
                if other.parent == child:
                    other.parent = parent

    def volume_info(self, ref: VolumeRef) -> dict[str, object]:
        volume = self.volumes[ref]
        return {
            "format": "qcow2" if volume.fmt == VolumeFormat.COW else "raw",
            "virtual-size": volume.size,
            "actual-size": volume.size // 4,
        }

    def copy_disk(self, chain_top: VolumeRef, dst: VolumeRef, fmt: VolumeFormat) -> None:
        self._record("copy_disk", chain_top, dst, fmt)
        with self.lock:
            self.volumes[dst] = FakeVolume(fmt, self.volumes[chain_top].size, None)

    # exports and tickets
    def export(
        self,
        top: VolumeRef,
        *,
        backing_chain: bool,
        writable: bool,
        dirty_bitmap: str | None = None,
        fmt: VolumeFormat = VolumeFormat.RAW,
    ) -> FakeExport:
        self._record("export", top, backing_chain, writable, dirty_bitmap, fmt)
        with self.lock:
            if top not in self.volumes:
                raise ValueError(f"no volume {top}")
            url = f"nbd+unix:///{top.volume_id}?socket=/run/fake/{len(self.exports)}.sock"
            export = FakeExport(url, top, writable, backing_chain, dirty_bitmap, fmt)
            export.size = self.volumes[top].size
            self.exports.append(export)
            return export

    def add_ticket(
        self,
        host: str,
        ticket_id: str,
        url: str,
        size: int,
        ops: list[str],
        timeout_s: int,
        dirty: bool = False,
    ) -> str:
        self._record("add_ticket", host, ticket_id, url, size, ops, timeout_s, dirty)
        with self.lock:
            self.tickets[ticket_id] = FakeTicket(host, url, size, ops, dirty)
        return f"https://{host}.lab.local:54322/images/{ticket_id}"

    def add_proxy_ticket(
        self, ticket_id: str, transfer_url: str, size: int, ops: list[str], timeout_s: int
    ) -> str:
        self._record("add_proxy_ticket", ticket_id, transfer_url, size, ops, timeout_s)
        with self.lock:
            self.proxy_tickets[ticket_id] = transfer_url
        return f"https://127.0.0.1:54323/images/{ticket_id}"

    def touch(self, ticket_id: str) -> None:
        """Tests: pretend a client just used the ticket."""
        with self.lock:
            self.tickets[ticket_id].last_used = time.monotonic()

    def ticket_status(self, host: str, ticket_id: str) -> dict[str, object]:
        with self.lock:
            ticket = self.tickets[ticket_id]
            idle = time.monotonic() - ticket.last_used
        return {"active": False, "idle_time": idle, "transferred": 0, "connections": 0}

    def remove_ticket(self, host: str, ticket_id: str) -> None:
        self._record("remove_ticket", host, ticket_id)
        with self.lock:
            self.tickets.pop(ticket_id, None)

    def remove_proxy_ticket(self, ticket_id: str) -> None:
        self._record("remove_proxy_ticket", ticket_id)
        with self.lock:
            self.proxy_tickets.pop(ticket_id, None)

    # bitmaps
    def add_bitmap(self, top: VolumeRef, name: str) -> None:
        self._record("add_bitmap", top, name)
        with self.lock:
            self.volumes[top].bitmaps.add(name)

    def remove_bitmap(self, chain: list[VolumeRef], name: str) -> None:
        self._record("remove_bitmap", chain, name)
        with self.lock:
            for ref in chain:
                if ref in self.volumes:
                    self.volumes[ref].bitmaps.discard(name)

    def has_bitmap(self, chain: list[VolumeRef], name: str) -> bool:
        with self.lock:
            return any(name in self.volumes[r].bitmaps for r in chain if r in self.volumes)

    # guest I/O
    def hold(self, disk_id: str) -> None:
        self._record("hold", disk_id)
        with self.lock:
            self.holds[disk_id] += 1

    def release(self, disk_id: str) -> None:
        self._record("release", disk_id)
        with self.lock:
            self.holds[disk_id] -= 1
            if self.holds[disk_id] <= 0:
                del self.holds[disk_id]

    def guest_write(self, top: VolumeRef, offset: int, length: int) -> None:
        self._record("guest_write", top, offset, length)
        with self.lock:
            self.volumes[top].writes.append((offset, length))

    # proxy VMs
    def attach_device(
        self, proxy_vm: str, top: VolumeRef, device_name: str, writable: bool = False
    ) -> str:
        self._record("attach_device", proxy_vm, top, device_name, writable)
        with self.lock:
            self.devices[(proxy_vm, device_name)] = top
            if writable:
                self.writable_devices.add((proxy_vm, device_name))
        return f"/dev/disk/by-id/{device_name}"

    def detach_device(self, proxy_vm: str, device_name: str) -> None:
        self._record("detach_device", proxy_vm, device_name)
        with self.lock:
            self.devices.pop((proxy_vm, device_name), None)
            self.writable_devices.discard((proxy_vm, device_name))
