"""Workers killed at random points of a backup, run after run: every job finishes or fails
with its reason, no committed backup is corrupt, nothing is left on the engine. Prints the
figures as one JSON line (runs, succeeded, failed cleanly, corrupt, leftovers, chunks
re-read after a kill)."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from bench.fleet import queue_lab_backup
from lab.guest_client import guest_write
from lab.leftovers import count_leftovers
from lab.processes import worker_process
from shared.engine.client import EngineClient
from shared.repository.repository import Repository
from shared.state import JobState, JobStatus, StateStore
from tests.e2e.jobs import wait_job
from tests.e2e.test_image_transfer_mode import (
    NO_LEFTOVERS,
    disk_sha256,
    kill_pool_children,
)
from tests.faults.conftest import QUEUES
from tests.integration.engine_client import wait_for
from workers.resources import engine_settings

pytestmark = pytest.mark.integration
MiB = 1 << 20
VM = "file01"
RUNS = int(os.environ.get("DROVER_FAULT_RUNS", "20"))
GROUP_KILL_EVERY = 5  # every 5th kill takes the whole worker process group, the rest the pool
FAST = {"DROVER_WORKER__VISIBILITY_TIMEOUT_S": "8"}
FIGURES = ("succeeded", "failed_cleanly", "failed_without_reason", "corrupt", "leftovers")


class Fleet:
    """One worker at a time, replaced when its whole process group is killed."""

    def __init__(self, broker: str, logs: Path) -> None:
        self.broker, self.logs = broker, logs
        self.stack = ExitStack()
        self.started = 0
        self.worker: Any = None

    def start(self) -> None:
        self.started += 1
        log = self.logs / f"worker-{self.started}.log"
        self.worker = self.stack.enter_context(worker_process(self.broker, log, QUEUES, 2, FAST))

    def kill(self, whole_group: bool) -> None:
        if whole_group:
            os.killpg(self.worker.pid, signal.SIGKILL)
            self.stack.close()
            self.start()
        else:
            kill_pool_children(self.worker.pid)

    def log_tails(self, lines: int = 60) -> str:
        """What the workers last said, for a job that did not finish."""
        tails = []
        for log in sorted(self.logs.glob("worker-*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            tails.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(tails)


def reread(job: JobState) -> int:
    return sum(max(0, d.chunks_read - d.done_chunks) for d in job.disks)


def test_workers_killed_at_random_points(
    lab: dict[str, Any], broker: str, store: StateStore, app: Celery, connection: Any,
    tmp_path: Path,
) -> None:  # fmt: skip
    rng = random.Random(int(os.environ.get("DROVER_FAULT_SEED", "6")))
    repo = Repository.open(str(tmp_path / "repository"))
    figures: Counter[str] = Counter(dict.fromkeys(FIGURES, 0), runs=RUNS)
    guest_write(Path(lab["state_dir"]), VM, 0, 4 * MiB, 128 * MiB)
    fleet = Fleet(broker, tmp_path)
    with EngineClient.connect(engine_settings("lab", store)) as engine, fleet.stack:
        vm = engine.find_vms(names=[VM])[0]
        disk_ids = [d.id for d in vm.disks]
        expected = {d: disk_sha256(lab, connection, d, tmp_path) for d in disk_ids}
        fleet.start()

        def backup() -> str:
            return queue_lab_backup(app, store, engine, vm.id, disk_ids, repo.location,
                                    quiesce=False, incremental=False)  # fmt: skip

        started = time.monotonic()
        assert wait_job(store, backup()).status == JobStatus.SUCCEEDED
        job_s = time.monotonic() - started
        for run in range(RUNS):
            job_id = backup()
            time.sleep(rng.uniform(0.0, job_s))
            fleet.kill(whole_group=run % GROUP_KILL_EVERY == GROUP_KILL_EVERY - 1)
            try:
                job = wait_job(store, job_id, timeout_s=120)
            except AssertionError as error:
                raise AssertionError(f"{error}\n{fleet.log_tails()}") from None
            figures.update(judge(job, repo, expected, connection))
    print("\nfault figures:", json.dumps(dict(figures)))
    assert figures["succeeded"] + figures["failed_cleanly"] == RUNS
    assert figures["corrupt"] == 0 and figures["leftovers"] == 0


def judge(
    job: JobState, repo: Repository, expected: dict[str, str], connection: Any
) -> Counter[str]:
    outcome: Counter[str] = Counter(chunks_reread=reread(job))
    if job.status == JobStatus.FAILED:
        outcome["failed_cleanly" if job.error else "failed_without_reason"] += 1
    else:
        outcome["succeeded"] += 1
        actual = {d: repo.image_sha256(job.id, d) for d in expected}
        outcome["corrupt"] += int(actual != expected)
    try:
        wait_for(lambda: count_leftovers(connection) == NO_LEFTOVERS or None, "no leftovers", 30)
    except AssertionError:
        outcome["leftovers"] += 1
    return outcome
