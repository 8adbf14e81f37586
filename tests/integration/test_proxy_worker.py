"""`drover worker --proxy` on the lab's proxy VMs: each finds its own VM through its SMBIOS
UUID and the engine, serves its cluster's queue under a Celery hostname that names its VM,
records itself in the proxy registry (alive while it runs), and is refused when VirtIO-SCSI
is off."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from bench.fleet import register_lab_manager
from lab.processes import drover_command, worker_process
from lab.redis_server import redis_server
from shared.engine.client import EngineClient
from shared.proxy import registry
from shared.proxy.node import identify
from shared.settings import load_settings
from shared.state import StateStore
from workers.app import create_app
from workers.resources import engine_settings

pytestmark = pytest.mark.integration


def proxies(lab: dict[str, Any], virtio_scsi: bool) -> list[dict[str, Any]]:
    found = [p for p in lab["proxies"] if p["virtio_scsi"] is virtio_scsi]
    assert found, f"the lab has no proxy VM with VirtIO-SCSI {virtio_scsi}"
    return found


@pytest.fixture
def store(redis_url: str, lab: dict[str, Any]) -> StateStore:
    state = StateStore.from_url(redis_url)
    register_lab_manager(state, lab)
    return state


def test_each_proxy_node_finds_its_vm_and_cluster(lab: dict[str, Any], store: StateStore) -> None:
    with EngineClient.connect(engine_settings("lab", store)) as engine:
        for proxy in proxies(lab, virtio_scsi=True):
            node = identify(engine, Path(proxy["root"]))
            assert (node.vm_id, node.vm_name) == (proxy["vm_id"], proxy["vm"])
            assert node.queue == f"proxy.{proxy['cluster']}"


def test_a_proxy_worker_serves_its_clusters_queue_and_registers_itself(
    lab: dict[str, Any], tmp_path: Path
) -> None:
    """On a broker of its own: the session's other workers answer the same ping."""
    proxy = proxies(lab, virtio_scsi=True)[0]
    env = {"DROVER_PROXY__ROOT": proxy["root"]}
    queue = f"proxy.{proxy['cluster']}"
    with redis_server(tmp_path / "redis") as broker:
        store = StateStore.from_url(broker)
        register_lab_manager(store, lab)
        app = create_app(load_settings(redis_url=broker))
        try:
            with worker_process(broker, tmp_path / "proxy.log", queue, 1, env, proxy=True):
                [(hostname, queues)] = app.control.inspect(timeout=2).active_queues().items()
                assert hostname.startswith(f"proxy-{proxy['vm']}@")  # Flower and events show it
                assert [q["name"] for q in queues] == [queue]
                status = registered(store)
                assert status.alive and status.record.worker == hostname
                record = status.record
                assert (record.vm_id, record.vm_name) == (proxy["vm_id"], proxy["vm"])
                assert (record.cluster, record.queue, record.manager) == (
                    proxy["cluster"],
                    queue,
                    "lab",
                )
                assert 0 < record.first_seen <= record.last_seen
            [stopped] = registry.statuses(store)  # the record stays: the proxy VM is known
            assert stopped.record.vm_id == proxy["vm_id"] and not stopped.alive
        finally:
            app.close()


def registered(store: StateStore, timeout_s: float = 20.0) -> registry.ProxyStatus:
    """The one recorded proxy once it is alive (its first liveness beat follows readiness)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = registry.statuses(store)
        if (found and found[0].alive) or time.monotonic() > deadline:
            assert len(found) == 1, found
            return found[0]
        time.sleep(0.2)


def test_a_proxy_vm_with_virtio_scsi_off_is_refused_at_start(
    lab: dict[str, Any], redis_url: str, store: StateStore
) -> None:
    proxy = proxies(lab, virtio_scsi=False)[0]
    env = os.environ | {"DROVER_REDIS_URL": redis_url, "DROVER_PROXY__ROOT": proxy["root"]}
    done = subprocess.run(
        drover_command("worker", "--proxy"), env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert f"VirtIO-SCSI is off on proxy VM {proxy['vm']}" in done.stderr
    assert "Traceback" not in done.stderr
