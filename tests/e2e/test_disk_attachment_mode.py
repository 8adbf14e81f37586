"""Disk attachment mode end to end: `drover worker --proxy` inside the lab's proxy VMs (one per
cluster, each consuming its own cluster's queue), the snapshot's disks attached to the proxy
one by one and read as its devices, restores written through the proxy and verified, nothing
left attached, no snapshot left behind. Which worker ran each transfer is read from Celery's
own events, as Flower shows them."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from bench.fleet import register_lab_manager
from lab.demo import proxy_worker
from lab.processes import worker_process
from lab.redis_server import redis_server
from shared.repository.repository import Repository
from shared.settings import load_settings
from shared.state import JobStatus, StateStore
from tests.e2e.celery_events import TaskEvents, task_events
from tests.e2e.jobs import backup, start_backup, wait_job
from tests.e2e.test_image_transfer_mode import disk_sha256, no_leftovers, restore_and_verify
from tests.integration.engine_client import connect, find_vm, lab_write, vm_disks, wait_for
from workers.app import close_app, create_app
from workers.canvas import TRANSFER

MiB = 1 << 20
MODE = {"mode": "disk_attachment", "quiesce": False, "incremental": False}
CONTROL = "drover.default"
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("fleet")]


def fit_proxies(lab: dict[str, Any], cluster: str) -> list[dict[str, Any]]:
    """The cluster's proxy VMs with VirtIO-SCSI on (the others refuse to serve)."""
    return [p for p in lab["proxies"] if p["cluster"] == cluster and p["virtio_scsi"]]


@pytest.fixture(scope="module")
def proxies(
    lab: dict[str, Any], redis_url: str, manager: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, dict[str, Any]]]:
    """One proxy worker per cluster: {cluster: its proxy VM}."""
    logs = tmp_path_factory.mktemp("proxies")
    chosen = {c: fit_proxies(lab, c)[0] for c in sorted({p["cluster"] for p in lab["proxies"]})}
    with ExitStack() as stack:
        for proxy in chosen.values():
            stack.enter_context(proxy_worker(redis_url, proxy, logs / f"{proxy['vm']}.log"))
        yield chosen


@pytest.fixture
def connection(lab: dict[str, Any]) -> Iterator[Any]:
    with connect(lab) as conn:
        yield conn


class DeviceWatch:
    """Every guest disk device seen under a proxy's /dev/disk/by-id while the block runs,
    and the most seen at once (the node's own disk is not among them)."""

    def __init__(self, proxy: dict[str, Any]) -> None:
        self.by_id = Path(proxy["root"]) / "dev" / "disk" / "by-id"
        self.seen: set[str] = set()
        self.most_at_once = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.01):
            names = {p.name for p in self.by_id.glob("*")} if self.by_id.is_dir() else set()
            self.seen |= names
            self.most_at_once = max(self.most_at_once, len(names))

    def __enter__(self) -> DeviceWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def saw_disk(self, disk_id: str) -> bool:
        return any(name.endswith(disk_id) or disk_id.startswith(name[7:]) for name in self.seen)


def transfer_hosts(events: TaskEvents, job_id: str) -> set[str]:
    return {t.get("succeeded_by", "") for t in events.ran(TRANSFER, job_id)}


def test_each_cluster_backs_up_through_its_own_proxy_and_restores_bit_exact(
    lab: dict[str, Any],
    proxies: dict[str, dict[str, Any]],
    connection: Any,
    celery_app: Any,
    store: StateStore,
    manager: str,
    repo_dir: Path,
    tmp_path: Path,
) -> None:
    vms = [find_vm(connection, "name=app01"), find_vm(connection, "name=db01")]
    assert len({vm.cluster.id for vm in vms}) == 2, "the VMs are in two clusters"
    expected: dict[str, dict[str, str]] = {}
    with task_events(celery_app) as events:
        jobs = []
        for vm in vms:
            ids = [d.id for d in vm_disks(connection, vm)]
            expected[vm.name] = {d: disk_sha256(lab, connection, d, tmp_path) for d in ids}
            jobs.append(start_backup(celery_app, store, manager, vm, ids, repo_dir, **MODE))
        done = [wait_job(store, job_id) for job_id in jobs]
        wait_for(lambda: all(transfer_hosts(events, j.id) - {""} for j in done), "events")
    repo = Repository.open(str(repo_dir))
    for vm, job in zip(vms, done, strict=True):
        assert job.status == JobStatus.SUCCEEDED, job.error
        assert job.kind == "full"
        proxy = proxies[cluster_of(connection, vm)]
        hosts = transfer_hosts(events, job.id)
        assert len(hosts) == 1 and proxy["vm"] in hosts.pop(), "its own cluster's proxy ran it"
        assert all(proxy["vm"] in d.worker for d in job.disks), "drover jobs shows the proxy"
        for disk_id, digest in expected[vm.name].items():
            assert repo.image_sha256(job.id, disk_id) == digest
    no_leftovers(connection)
    restore_and_verify(
        connection,
        celery_app,
        store,
        manager,
        repo_dir,
        done[0].id,
        "app01-attached",
        expected["app01"],
        mode="disk_attachment",
        cluster=cluster_of(connection, vms[0]),
    )


def cluster_of(connection: Any, vm: Any) -> str:
    clusters = connection.system_service().clusters_service()
    return str(clusters.cluster_service(vm.cluster.id).get().name)


def test_excluded_disks_are_never_attached_and_disks_go_one_at_a_time(
    lab: dict[str, Any],
    proxies: dict[str, dict[str, Any]],
    connection: Any,
    celery_app: Any,
    store: StateStore,
    manager: str,
    repo_dir: Path,
) -> None:
    vm = find_vm(connection, "name=db01")
    first, second = (d.id for d in vm_disks(connection, vm))
    proxy = proxies[cluster_of(connection, vm)]
    with DeviceWatch(proxy) as watch:
        job = backup(celery_app, store, manager, vm, [second], repo_dir, **MODE)
    assert watch.saw_disk(second) and not watch.saw_disk(first)
    assert [d.disk_id for d in Repository.open(str(repo_dir)).manifest(job.id).disks] == [second]
    with DeviceWatch(proxy) as watch:
        backup(celery_app, store, manager, vm, [first, second], repo_dir, **MODE)
    assert watch.saw_disk(first) and watch.saw_disk(second)
    assert watch.most_at_once == 1, "the next disk is attached once the previous one is gone"
    no_leftovers(connection)


def test_a_proxy_killed_mid_read_hands_the_job_to_another_proxy_of_its_cluster(
    lab: dict[str, Any], manager: str, tmp_path: Path, connection: Any
) -> None:
    """Its own broker and fleet: one control worker, then proxy A of cluster1 is SIGKILLed
    (its whole process group) while it reads, and proxy B of the same cluster takes over."""
    vm = find_vm(connection, "name=app01")
    first, second = fit_proxies(lab, cluster_of(connection, vm))[:2]
    ids = [d.id for d in vm_disks(connection, vm)]
    for index in range(len(ids)):
        lab_write(lab, vm.name, index, offset=32 * MiB, length=160 * MiB)
    expected = {d: disk_sha256(lab, connection, d, tmp_path) for d in ids}
    fast = {"DROVER_WORKER__VISIBILITY_TIMEOUT_S": "8"}
    with redis_server(tmp_path / "redis") as broker:
        store = StateStore.from_url(broker)
        register_lab_manager(store, lab)
        app = create_app(load_settings(redis_url=broker))
        try:
            with (
                worker_process(broker, tmp_path / "control.log", CONTROL, 2, fast),
                task_events(app) as events,
            ):
                with proxy_worker(broker, first, tmp_path / "first.log", fast) as doomed:
                    job_id = start_backup(app, store, manager, vm, ids, tmp_path / "repo", **MODE)
                    wait_for(lambda: reading(store, job_id), "the proxy to read", timeout_s=120)
                    os.killpg(doomed.pid, signal.SIGKILL)
                with proxy_worker(broker, second, tmp_path / "second.log", fast):
                    job = wait_job(store, job_id, timeout_s=180)
        finally:
            close_app(app)
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert any(second["vm"] in host for host in transfer_hosts(events, job_id))
    repo = Repository.open(str(tmp_path / "repo"))
    for disk_id, digest in expected.items():
        assert repo.image_sha256(job_id, disk_id) == digest
    no_leftovers(connection)


def reading(store: StateStore, job_id: str) -> bool:
    job = store.job(job_id)
    return job is not None and any(d.done_chunks > 0 for d in job.disks)


def test_a_cluster_without_a_live_proxy_worker_fails_fast_with_nothing_created(
    lab: dict[str, Any], connection: Any, tmp_path: Path
) -> None:
    """The API's own service on a broker no worker consumes: the run is refused for the VM,
    naming its cluster, before a job, a lock or anything on the engine exists."""
    from orchestrator.service import build_service

    with redis_server(tmp_path / "redis") as broker:
        settings = load_settings(redis_url=broker, state_dir=tmp_path)
        service = build_service(settings)
        register_lab_manager(service.state, lab)
        policy = {
            "name": "attached",
            "manager": "lab",
            "mode": "disk_attachment",
            "backup": {"type": "full"},
            "vms": {"names": ["app01"]},
            "repository": str(tmp_path / "repo"),
        }
        service.put_policy(policy)
        run = service.run_policy("attached")
        assert run["jobs"] == [] and len(run["refused"]) == 1
        reason = run["refused"][0]["reason"]
        cluster = cluster_of(connection, find_vm(connection, "name=app01"))
        assert f"no live proxy worker serves cluster {cluster}" in reason
        assert service.jobs() == []
    no_leftovers(connection)
