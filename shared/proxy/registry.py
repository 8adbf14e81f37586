"""Which proxy VMs have a worker: a record per proxy VM in Redis, and whether it is alive.

    drover:proxy:<vm id>     hash   vm_id, vm_name, cluster, manager, worker (its Celery
                                    hostname), first_seen, last_seen (epoch seconds); no TTL
    drover:proxies           set    the vm ids of every recorded proxy

A proxy worker records itself once it has identified its VM and its Celery worker is ready,
and again at every liveness beat (`workers.liveness.Keeper`), which moves `last_seen`. The
record stays when the worker stops: it is the inventory of proxy VMs that ever served. Whether a
proxy is alive is not stored here: it is alive while its worker is announced
(`StateStore.announce_worker`, drover:worker:<hostname> with a TTL), so a worker that died or
stopped leaves its proxy recorded and not alive.

A proxy's worker is named after its VM (`worker_name`: proxy-<vm name>@<host>), so Flower and
Celery's events show which proxy ran a task.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from shared.proxy.node import ProxyNode, proxy_queue
from shared.state import StateStore, key

INDEX = key("proxies")
WORKER_PREFIX = "proxy-"
_NOT_IN_NODENAME = re.compile(r"[^A-Za-z0-9_.-]+")  # '@' splits a nodename, '%' is expanded


@dataclass(frozen=True)
class ProxyRecord:
    vm_id: str
    vm_name: str
    cluster: str  # the cluster the worker found its VM in: it serves proxy.<cluster>
    manager: str
    worker: str  # the Celery hostname of its worker, e.g. proxy-drover-proxy-c1@node1
    first_seen: float
    last_seen: float

    @property
    def queue(self) -> str:
        return proxy_queue(self.cluster)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"queue": self.queue}


@dataclass(frozen=True)
class ProxyStatus:
    record: ProxyRecord
    alive: bool  # its worker is announced now

    def to_dict(self) -> dict[str, Any]:
        return self.record.to_dict() | {"alive": self.alive}


@dataclass(frozen=True)
class ProxyWorker:
    """What a proxy worker registers: the VM it found itself in and the manager it asked."""

    node: ProxyNode
    manager: str

    @property
    def worker(self) -> str:
        """Its Celery hostname on this host."""
        return worker_name(self.node.vm_name)

    def register(self, store: StateStore, worker: str, now: float | None = None) -> None:
        register(store, self.node, self.manager, worker, now)


def worker_name(vm_name: str, host: str = "") -> str:
    """The Celery hostname of a proxy VM's worker: `proxy-<vm name>@<host>` (this host's name
    by default); characters a nodename cannot hold become '-'."""
    name = _NOT_IN_NODENAME.sub("-", vm_name).strip("-") or "vm"
    return f"{WORKER_PREFIX}{name}@{host or socket.gethostname()}"


def register(
    store: StateStore, node: ProxyNode, manager: str, worker: str, now: float | None = None
) -> None:
    """Record (or refresh) the proxy VM `node` served by `worker`; first_seen is kept."""
    now = time.time() if now is None else now
    record_key = key("proxy", node.vm_id)
    pipe = store.redis.pipeline()
    pipe.hsetnx(record_key, "first_seen", repr(now))
    pipe.hset(
        record_key,
        mapping={
            "vm_id": node.vm_id,
            "vm_name": node.vm_name,
            "cluster": node.cluster,
            "manager": manager,
            "worker": worker,
            "last_seen": repr(now),
        },
    )
    pipe.sadd(INDEX, node.vm_id)
    pipe.execute()


def record(store: StateStore, vm_id: str) -> ProxyRecord | None:
    data = store.redis.hgetall(key("proxy", vm_id))
    return _record(data) if data else None


def records(store: StateStore, manager: str = "") -> list[ProxyRecord]:
    """Every recorded proxy (of `manager` when given), by cluster and VM name."""
    found = (record(store, vm_id) for vm_id in sorted(store.redis.smembers(INDEX)))
    kept = [r for r in found if r is not None and manager in ("", r.manager)]
    return sorted(kept, key=lambda r: (r.cluster, r.vm_name, r.vm_id))


def statuses(store: StateStore, manager: str = "") -> list[ProxyStatus]:
    """The recorded proxies with whether their worker is alive (one scan of the workers)."""
    live = set(store.live_workers())
    return [ProxyStatus(r, r.worker in live) for r in records(store, manager)]


def live_clusters(found: Iterable[ProxyStatus]) -> set[str]:
    return {s.record.cluster for s in found if s.alive}


def forget(store: StateStore, vm_id: str) -> bool:
    """Drop a proxy's record (its VM was removed); True if there was one."""
    pipe = store.redis.pipeline()
    pipe.delete(key("proxy", vm_id))
    pipe.srem(INDEX, vm_id)
    return bool(pipe.execute()[0])


def no_live_proxy(cluster: str) -> str:
    """Why a disk_attachment job for `cluster` cannot run, and what to do."""
    return (
        f"no live proxy worker serves cluster {cluster} (queue {proxy_queue(cluster)}): "
        "start `drover worker --proxy` in a proxy VM of that cluster"
    )


def _record(data: dict[str, str]) -> ProxyRecord:
    return ProxyRecord(
        vm_id=data.get("vm_id", ""),
        vm_name=data.get("vm_name", ""),
        cluster=data.get("cluster", ""),
        manager=data.get("manager", ""),
        worker=data.get("worker", ""),
        first_seen=float(data.get("first_seen") or 0),
        last_seen=float(data.get("last_seen") or 0),
    )
