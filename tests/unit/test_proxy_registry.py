"""The proxy registry: what a proxy worker records of its VM, and when its proxy is alive.

No servers: `MemoryRedis` holds the few Redis commands the registry and the worker
announcements use (the orchestrator's tests use it too); the real Redis is exercised by
tests/integration/test_proxy_worker.py.
"""

from __future__ import annotations

import fnmatch
import socket
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from shared.proxy import registry
from shared.proxy.node import ProxyNode
from shared.proxy.registry import ProxyRecord, ProxyStatus, ProxyWorker, worker_name
from shared.settings import Settings
from shared.state import StateStore
from workers import start
from workers.liveness import Keeper

NODE = ProxyNode("6f1c2a52-9a67-4a5e-8f0e-0d1c2b3a4f5e", "drover-proxy-cluster1", "cluster1")
OTHER = ProxyNode("0b7c0d4e-3f0a-4c3e-9d1b-6a5f4e3d2c1b", "drover-proxy-cluster2", "cluster2")
WORKER = "proxy-drover-proxy-cluster1@node1"


class MemoryRedis:
    """Strings (with a TTL), hashes and sets, as redis-py answers them with
    decode_responses=True; `now` is the clock keys expire by."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.expiry: dict[str, float] = {}
        self.now = 1_000_000.0

    def ping(self) -> bool:
        return True

    def _live(self, name: str) -> Any:
        if name in self.expiry and self.expiry[name] <= self.now:
            self.data.pop(name, None)
            self.expiry.pop(name)
        return self.data.get(name)

    def set(self, name: str, value: Any, ex: int | None = None) -> bool:
        self.data[name] = str(value)
        self.expiry.pop(name, None)
        if ex is not None:
            self.expiry[name] = self.now + ex
        return True

    def get(self, name: str) -> str | None:
        value = self._live(name)
        return value if isinstance(value, str) else None

    def delete(self, *names: str) -> int:
        removed = [n for n in names if self._live(n) is not None]
        for name in removed:
            del self.data[name]
            self.expiry.pop(name, None)
        return len(removed)

    def hset(
        self, name: str, key: str | None = None, value: Any = None, mapping: Any = None
    ) -> int:
        fields = dict(mapping or {}) | ({key: value} if key is not None else {})
        stored = self.data.setdefault(name, {})
        added = len(set(fields) - set(stored))
        stored.update({k: str(v) for k, v in fields.items()})
        return added

    def hsetnx(self, name: str, key: str, value: Any) -> int:
        stored = self.data.setdefault(name, {})
        if key in stored:
            return 0
        stored[key] = str(value)
        return 1

    def hgetall(self, name: str) -> dict[str, str]:
        return dict(self._live(name) or {})

    def sadd(self, name: str, *values: str) -> int:
        stored = self.data.setdefault(name, set())
        added = set(values) - stored
        stored.update(values)
        return len(added)

    def srem(self, name: str, *values: str) -> int:
        stored = self.data.get(name, set())
        removed = set(values) & stored
        stored.difference_update(values)
        return len(removed)

    def smembers(self, name: str) -> set[str]:
        return set(self._live(name) or set())

    def scan_iter(self, match: str = "*") -> Iterator[str]:
        return iter(
            [
                n
                for n in list(self.data)
                if self._live(n) is not None and fnmatch.fnmatchcase(n, match)
            ]
        )

    def pipeline(self) -> MemoryPipeline:
        return MemoryPipeline(self)


class MemoryPipeline:
    def __init__(self, redis: MemoryRedis) -> None:
        self.redis = redis
        self.calls: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.redis, name)
        return lambda *args, **kwargs: self.calls.append(lambda: method(*args, **kwargs))

    def execute(self) -> list[Any]:
        return [call() for call in self.calls]


@pytest.fixture
def memory() -> MemoryRedis:
    return MemoryRedis()


@pytest.fixture
def store(memory: MemoryRedis) -> StateStore:
    return StateStore(memory)  # type: ignore[arg-type]


def test_a_proxy_is_recorded_with_its_vm_cluster_manager_and_worker(store: StateStore) -> None:
    registry.register(store, NODE, "lab", WORKER, now=100.0)
    assert registry.record(store, NODE.vm_id) == ProxyRecord(
        vm_id=NODE.vm_id,
        vm_name="drover-proxy-cluster1",
        cluster="cluster1",
        manager="lab",
        worker=WORKER,
        first_seen=100.0,
        last_seen=100.0,
    )
    assert registry.record(store, OTHER.vm_id) is None


def test_registering_again_keeps_first_seen_and_follows_the_worker(store: StateStore) -> None:
    registry.register(store, NODE, "lab", WORKER, now=100.0)
    registry.register(store, NODE, "lab", "proxy-drover-proxy-cluster1@node2", now=160.0)
    [record] = registry.records(store)
    assert (record.first_seen, record.last_seen) == (100.0, 160.0)
    assert record.worker == "proxy-drover-proxy-cluster1@node2"
    assert record.queue == "proxy.cluster1"


def test_a_proxy_is_alive_while_its_worker_is_announced(
    store: StateStore, memory: MemoryRedis
) -> None:
    registry.register(store, NODE, "lab", WORKER)
    assert registry.statuses(store) == [ProxyStatus(registry.records(store)[0], alive=False)]
    store.announce_worker(WORKER, ttl_s=30)
    store.announce_worker("celery@central", ttl_s=30)
    [status] = registry.statuses(store)
    assert status.alive and status.to_dict()["alive"] is True
    assert status.to_dict()["queue"] == "proxy.cluster1"
    memory.now += 31  # its worker stopped announcing itself: the TTL ran out
    [status] = registry.statuses(store)
    assert not status.alive and status.record.vm_name == NODE.vm_name  # still recorded
    store.announce_worker(WORKER, ttl_s=30)
    store.forget_worker(WORKER)  # a worker that shut down
    assert [s.alive for s in registry.statuses(store)] == [False]


def test_records_by_manager_and_forgetting_one(store: StateStore) -> None:
    registry.register(store, OTHER, "lab", "proxy-drover-proxy-cluster2@node1")
    registry.register(store, NODE, "lab", WORKER)
    registry.register(store, ProxyNode("id-3", "px", "c9"), "other", "proxy-px@node1")
    assert [r.cluster for r in registry.records(store)] == ["c9", "cluster1", "cluster2"]
    assert [r.vm_name for r in registry.records(store, "other")] == ["px"]
    assert registry.forget(store, "id-3") is True
    assert registry.forget(store, "id-3") is False
    assert registry.records(store, "other") == []
    store.announce_worker(WORKER, ttl_s=30)
    assert registry.live_clusters(registry.statuses(store)) == {"cluster1"}


def test_the_refusal_names_the_cluster_its_queue_and_what_to_do() -> None:
    assert registry.no_live_proxy("cluster2") == (
        "no live proxy worker serves cluster cluster2 (queue proxy.cluster2): "
        "start `drover worker --proxy` in a proxy VM of that cluster"
    )


# the worker's name -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vm_name", "expected"),
    [
        ("drover-proxy-cluster1", "proxy-drover-proxy-cluster1@node1"),
        ("proxy.c1_a", "proxy-proxy.c1_a@node1"),
        ("bad name@%h/x", "proxy-bad-name-h-x@node1"),  # no '@', '%' or spaces in a nodename
        ("@@", "proxy-vm@node1"),
    ],
)
def test_a_proxy_worker_is_named_after_its_vm(vm_name: str, expected: str) -> None:
    assert worker_name(vm_name, "node1") == expected


def test_the_worker_name_takes_this_hosts_name_by_default() -> None:
    assert worker_name("p1") == f"proxy-p1@{socket.gethostname()}"
    assert ProxyWorker(NODE, "lab").worker == f"proxy-{NODE.vm_name}@{socket.gethostname()}"


def test_only_a_proxy_worker_gets_a_hostname_argument() -> None:
    settings = Settings()
    central = start.worker_argv(settings, ["transfer.image"], 2)
    assert "--hostname" not in central
    proxy = start.worker_argv(settings, ["proxy.cluster1"], 2, WORKER)
    assert proxy[proxy.index("--hostname") + 1] == WORKER
    assert proxy[proxy.index("--queues") + 1] == "proxy.cluster1"


def test_a_proxy_worker_serves_its_clusters_queue_under_its_vms_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = ProxyWorker(NODE, "lab")
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(start, "identify_proxy", lambda settings: proxy)
    monkeypatch.setattr(
        start, "run_worker", lambda *args, **kwargs: calls.append((*args, kwargs["proxy"]))
    )
    settings = Settings()
    start.run_proxy_worker(settings, 3)
    assert calls == [(settings, ["proxy.cluster1"], 3, proxy)]


# the liveness keeper records the proxy ------------------------------------------------------


def test_each_beat_of_a_proxy_workers_keeper_records_its_vm(
    store: StateStore, memory: MemoryRedis
) -> None:
    consumer = SimpleNamespace(hostname=WORKER)  # holds no message: nothing to refresh
    keeper = Keeper(consumer, broker=None, store=store, every_s=10, proxy=ProxyWorker(NODE, "lab"))  # type: ignore[arg-type]
    keeper._beat()
    [status] = registry.statuses(store)
    assert status.alive and (status.record.worker, status.record.manager) == (WORKER, "lab")
    first = status.record.last_seen
    keeper._beat()
    assert registry.records(store)[0].last_seen >= first
    keeper.stop()
    [status] = registry.statuses(store)
    assert not status.alive  # the worker is forgotten; its proxy stays recorded


def test_a_central_workers_keeper_records_no_proxy(store: StateStore) -> None:
    keeper = Keeper(SimpleNamespace(hostname="celery@central"), None, store, 10)  # type: ignore[arg-type]
    keeper._beat()
    assert store.live_workers() == ["celery@central"] and registry.records(store) == []
