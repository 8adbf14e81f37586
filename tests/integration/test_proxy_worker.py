"""`drover worker --proxy` on the lab's proxy VMs: each finds its own VM through its SMBIOS
UUID and the engine, serves its cluster's queue, and is refused when VirtIO-SCSI is off."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench.fleet import register_lab_manager
from lab.processes import drover_command, worker_process
from lab.redis_server import redis_server
from shared.engine.client import EngineClient
from shared.proxy.node import identify
from shared.state import StateStore
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


def test_a_proxy_worker_serves_its_clusters_queue(lab: dict[str, Any], tmp_path: Path) -> None:
    """On a broker of its own: the session's other workers answer the same ping."""
    proxy = proxies(lab, virtio_scsi=True)[0]
    env = {"DROVER_PROXY__ROOT": proxy["root"]}
    queue = f"proxy.{proxy['cluster']}"
    with redis_server(tmp_path / "redis") as broker:
        register_lab_manager(StateStore.from_url(broker), lab)
        with worker_process(broker, tmp_path / "proxy.log", queue, 1, env, proxy=True) as worker:
            assert worker.pid


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
