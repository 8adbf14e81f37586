"""RabbitMQ as the broker, Redis kept for state: one image-transfer backup end to end.

The test starts its own RabbitMQ (lab.rabbitmq: own node name, ports, epmd and directories;
a RabbitMQ the machine runs as a service is never used) and a Redis of its own for state and
results, runs a worker whose DROVER_BROKER_URL is the RabbitMQ, backs up a lab VM and checks
the backup bit-exact against what the guest sees, with nothing left on the engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kombu
import pytest
import redis

from lab.processes import worker_process
from lab.rabbitmq import RabbitMQServer, rabbitmq_executable, rabbitmq_server
from lab.redis_server import redis_server
from shared.repository.repository import Repository
from shared.settings import load_settings
from shared.state import StateStore
from tests.e2e.conftest import QUEUES
from tests.e2e.jobs import backup
from tests.e2e.test_image_transfer_mode import disk_sha256, no_leftovers
from tests.integration.engine_client import connect, find_vm, vm_disks
from workers.app import close_app, create_app

# the lab, a RabbitMQ, a Redis and a worker to start (when this test is the first to need them),
# then a backup of up to JOB_TIMEOUT_S
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

MANAGER = "lab"  # the name bench.fleet.queue_lab_backup submits under


@pytest.fixture(scope="module")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQServer]:
    if rabbitmq_executable() is None:
        pytest.skip("rabbitmq-server is not installed (`make setup` installs it)")
    with rabbitmq_server(tmp_path_factory.mktemp("rabbitmq")) as server:
        yield server


@pytest.fixture
def state_url(tmp_path: Path) -> Iterator[str]:
    """A Redis of this test's own: state and results only, never the broker."""
    with redis_server(tmp_path / "redis") as url:
        yield url


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


def test_image_transfer_backup_through_rabbitmq(
    lab: dict[str, Any],
    rabbitmq: RabbitMQServer,
    state_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the worker (a child process) and this test's submitting app read the same setting
    monkeypatch.setenv("DROVER_BROKER_URL", rabbitmq.url)
    settings = load_settings(redis_url=state_url)
    assert settings.effective_broker_url == rabbitmq.url
    store = StateStore.from_url(state_url)
    register_lab_manager(store, lab)
    repo_dir = tmp_path / "repository"

    app = create_app(settings)
    assert str(app.conf.broker_url).startswith("amqp://")
    assert app.conf.result_backend == state_url
    try:
        with (
            worker_process(state_url, tmp_path / "worker.log", QUEUES, concurrency=2),
            connect(lab) as connection,
        ):
            vm = find_vm(connection, "name=web01")  # one raw disk: no checkpoint is kept
            ids = [d.id for d in vm_disks(connection, vm)]
            job = backup(app, store, MANAGER, vm, ids, repo_dir)
            assert job.kind == "full"
            expected = {d: disk_sha256(lab, connection, d, tmp_path) for d in ids}
            no_leftovers(connection)
    finally:
        close_app(app)

    repo = Repository.open(str(repo_dir))
    assert [b.backup_id for b in repo.list_backups()] == [job.id]
    for disk_id in ids:
        assert repo.image_sha256(job.id, disk_id) == expected[disk_id]

    # The messages went through RabbitMQ: its queues exist there, and the state Redis holds
    # none of kombu's broker keys (queue lists, bindings, unacked messages).
    with kombu.Connection(rabbitmq.url) as conn, conn.channel() as channel:
        for queue in QUEUES.split(","):
            channel.queue_declare(queue=queue, passive=True)  # raises if it does not exist
    client = redis.Redis.from_url(state_url)
    try:
        broker_keys = [
            k for pattern in ("_kombu.*", "unacked*", "drover.default*", "transfer.*")
            for k in client.scan_iter(match=pattern)
        ]  # fmt: skip
    finally:
        client.close()
    assert broker_keys == []
