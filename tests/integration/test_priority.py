"""Job priorities through a real Redis broker: a high-priority job's first step goes first."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from lab.redis_server import redis_server
from shared.jobs import BackupRequest
from shared.settings import load_settings
from workers.app import close_app, create_app
from workers.canvas import CONTROL_QUEUE, submit_backup

pytestmark = pytest.mark.integration


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Celery]:
    """A private broker: no worker of the session consumes its queues."""
    with redis_server(tmp_path / "redis") as url:
        celery = create_app(load_settings(redis_url=url))
        yield celery
        close_app(celery)


def request(job_id: str, priority: int) -> BackupRequest:
    return BackupRequest(
        job_id=job_id,
        policy="p",
        manager="lab",
        vm_id=f"vm-{job_id}",
        vm_name=job_id,
        repository="/r",
        disk_ids=("d0",),
        priority=priority,
    )


def queued_job_ids(app: Celery) -> list[str]:
    """The control queue's messages in the order a worker receives them."""
    seen = []
    with app.connection_for_read() as connection:
        queue = connection.SimpleQueue(CONTROL_QUEUE)
        try:
            while True:
                message = queue.get(timeout=1)
                seen.append(message.headers["argsrepr"].strip("(),' "))
                message.ack()
        except queue.Empty:
            pass
        finally:
            queue.close()
    return seen


def test_a_high_priority_job_is_served_before_a_low_one_queued_earlier(app: Celery) -> None:
    submit_backup(app, request("low", 0), "transfer.image")
    submit_backup(app, request("normal", 5), "transfer.image")
    submit_backup(app, request("high", 9), "transfer.image")
    assert queued_job_ids(app) == ["high", "normal", "low"]
