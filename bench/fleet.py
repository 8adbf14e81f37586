"""The lab, a private Redis and a worker, up for one benchmark or demo run; proxy workers
(`drover worker --proxy` in a lab proxy VM) on demand, for mode disk_attachment."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ovirtsdk4 as sdk
from celery import Celery

from lab.demo import fit_proxies, proxy_worker
from lab.processes import lab_process, worker_process
from lab.redis_server import redis_server
from shared.backup.enqueue import Queued, queue_backup
from shared.engine.client import EngineClient
from shared.errors import DroverError
from shared.jobs import BackupRequest
from shared.modes import mode_for
from shared.settings import load_settings
from shared.ssh.access import HostAccess
from shared.ssh.credentials import save_host
from shared.state import JobState, StateStore, new_job_id
from workers.app import close_app, create_app
from workers.canvas import submit_backup

MANAGER = "lab"
JOB_TIMEOUT_S = 1800.0
QUEUES = "drover.default,transfer.image,transfer.ssh"


@dataclass
class Fleet:
    lab: dict[str, Any]
    app: Celery
    store: StateStore
    connection: sdk.Connection
    repository: str
    redis_url: str
    root: Path

    def engine(self) -> EngineClient:
        return EngineClient(self.connection, ca_file=self.lab["engine"]["ca_file"])

    def vm(self, name: str) -> Any:
        return self.connection.system_service().vms_service().list(search=f"name={name}")[0]

    def disk_ids(self, vm: Any) -> list[str]:
        service = self.connection.system_service().vms_service().vm_service(vm.id)
        return [a.disk.id for a in service.disk_attachments_service().list()]

    def backup(
        self, vm: Any, disk_ids: list[str], repository: str = "", **options: Any
    ) -> JobState:
        job_id = queue_lab_backup(
            self.app,
            self.store,
            self.engine(),
            vm.id,
            disk_ids,
            repository or self.repository,
            **options,
        )
        return self.wait(job_id)

    def cluster_of(self, vm: Any) -> str:
        return str(self.engine().vm(vm.id).cluster_name)

    def fit_proxy(self, cluster: str) -> dict[str, Any]:
        """The first proxy VM of the cluster with VirtIO-SCSI on (lab.json's entry)."""
        proxy = fit_proxies(self.lab).get(cluster)
        if proxy is None:
            raise DroverError(
                f"cluster {cluster} of the lab has no proxy VM with VirtIO-SCSI on, so mode "
                "disk_attachment cannot run there",
                hint="lab.json's `proxies` must hold one with virtio_scsi true in that cluster",
            )
        return proxy

    @contextmanager
    def proxy_worker(self, cluster: str) -> Iterator[dict[str, Any]]:
        """A proxy worker in the cluster's fit proxy VM while the block runs; yields the VM."""
        proxy = self.fit_proxy(cluster)
        with proxy_worker(self.redis_url, proxy, self.root / f"{proxy['vm']}.log"):
            yield proxy

    def wait(self, job_id: str) -> JobState:
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while time.monotonic() < deadline:
            job = self.store.job(job_id)
            if job is not None and job.status.finished:
                return job
            time.sleep(0.1)
        raise TimeoutError(f"job {job_id} did not finish in {JOB_TIMEOUT_S:.0f} s")


@contextmanager
def fleet(root: Path, *lab_args: str, concurrency: int = 2) -> Iterator[Fleet]:
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_server(root / "redis"))
        lab = stack.enter_context(lab_process(root / "lab", *lab_args))
        store = StateStore.from_url(redis_url)
        register_lab_manager(store, lab)
        register_lab_hosts(store, lab)
        stack.enter_context(worker_process(redis_url, root / "worker.log", QUEUES, concurrency))
        engine = lab["engine"]
        connection = stack.enter_context(
            sdk.Connection(
                url=engine["url"],
                username=engine["username"],
                password=engine["password"],
                ca_file=engine["ca_file"],
            )
        )
        app = create_app(load_settings(redis_url=redis_url))
        stack.callback(close_app, app)
        yield Fleet(lab, app, store, connection, str(root / "repository"), redis_url, root)


def queue_lab_backup(
    app: Celery,
    store: StateStore,
    engine: EngineClient,
    vm_id: str,
    disk_ids: list[str],
    repository: str,
    *,
    policy: str = "bench",
    **options: Any,
) -> str:
    """Queue a backup of `disk_ids` of a lab VM the way the API does (the other disks are
    excluded); returns the job id."""
    vm = engine.vm(vm_id)
    excluded = tuple(d.id for d in vm.disks if d.id not in disk_ids)
    request = BackupRequest(
        job_id=new_job_id(),
        policy=policy,
        manager=MANAGER,
        vm_id=vm.id,
        vm_name=vm.name,
        repository=repository,
        excluded_disks=excluded,
        **options,
    )
    queue = mode_for(request.mode).queue(vm.cluster_name)
    outcome = queue_backup(store, lambda r, q: submit_backup(app, r, q), request, vm, queue)
    if not isinstance(outcome, Queued):
        raise RuntimeError(f"backup of {vm.name} refused: {outcome.reason}")
    return outcome.job_id


def lab_host_access(host: dict[str, Any], **changes: Any) -> HostAccess:
    """SSH credentials of one lab host, from lab.json (key text, pinned host key, roots)."""
    values: dict[str, Any] = {
        "name": host["name"],
        "address": host["address"],
        "port": host["ssh_port"],
        "user": host["ssh_user"],
        "host_key": host["ssh_host_key"],
        "private_key": Path(host["ssh_key"]).read_text(),
        "mount_root": host["mount_root"],
        "dev_root": host["dev_root"],
    }
    return HostAccess(**(values | changes))


def register_lab_hosts(store: StateStore, lab: dict[str, Any]) -> None:
    """Every lab host's SSH credentials under the lab manager (`drover host add`)."""
    for host in lab["hosts"]:
        save_host(store, MANAGER, lab_host_access(host))


def register_lab_manager(store: StateStore, lab: dict[str, Any]) -> None:
    engine = lab["engine"]
    store.put_document(
        "manager",
        MANAGER,
        {
            "name": MANAGER,
            "url": engine["url"],
            "username": engine["username"],
            "password": engine["password"],
            "ca_file": engine["ca_file"],
        },
    )
