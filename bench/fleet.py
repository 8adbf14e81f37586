"""The lab, a private Redis and a worker, up for one benchmark or demo run."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ovirtsdk4 as sdk
from celery import Celery

from lab.processes import lab_process, worker_process
from lab.redis_server import redis_server
from shared.jobs import BackupRequest
from shared.settings import load_settings
from shared.state import JobState, StateStore, new_job_id
from workers.app import close_app, create_app
from workers.canvas import queue_backup_job

MANAGER = "lab"
JOB_TIMEOUT_S = 1800.0
QUEUES = "drover.default,transfer.image"


@dataclass
class Fleet:
    lab: dict[str, Any]
    app: Celery
    store: StateStore
    connection: sdk.Connection
    repository: str

    def vm(self, name: str) -> Any:
        return self.connection.system_service().vms_service().list(search=f"name={name}")[0]

    def disk_ids(self, vm: Any) -> list[str]:
        service = self.connection.system_service().vms_service().vm_service(vm.id)
        return [a.disk.id for a in service.disk_attachments_service().list()]

    def backup(
        self, vm: Any, disk_ids: list[str], repository: str = "", **options: Any
    ) -> JobState:
        job_id = new_job_id()
        request = BackupRequest(
            job_id=job_id,
            policy="bench",
            manager=MANAGER,
            vm_id=vm.id,
            vm_name=vm.name,
            repository=repository or self.repository,
            **options,
        )
        return self.wait(queue_backup_job(self.app, self.store, request, disk_ids))

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
        yield Fleet(lab, app, store, connection, str(root / "repository"))


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
