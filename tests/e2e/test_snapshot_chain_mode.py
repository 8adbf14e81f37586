"""Image transfer through snapshot chains, on an engine that reports 4.3 (no backup API):
a disk-only snapshot, each disk's new qcow2 layers downloaded through image transfers of
its disk snapshots, incrementals from the kept snapshot, restore bit-exact."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.guest_client import set_engine_version
from shared.engine.client import EngineClient
from shared.engine.models import EngineVersion
from shared.modes.auto import VmFacts, choose_mode
from shared.repository.repository import Repository
from shared.state import StateStore
from tests.e2e.jobs import backup
from tests.e2e.test_image_transfer_mode import disk_sha256, no_leftovers, restore_and_verify
from tests.e2e.test_ssh_mode import drover_snapshots, remove_kept_snapshots
from tests.integration.engine_client import connect, find_vm, lab_write, vm_disks
from workers.resources import engine_settings

MiB = 1 << 20
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("fleet")]


@pytest.fixture
def connection(lab: dict[str, Any]) -> Iterator[Any]:
    with connect(lab) as conn:
        yield conn
        remove_kept_snapshots(conn)


@pytest.fixture
def engine_43(lab: dict[str, Any]) -> Iterator[None]:
    set_engine_version(lab, "4.3")
    try:
        yield
    finally:
        set_engine_version(lab, "4.5")


def chain_choice(store: StateStore, manager: str) -> dict[str, Any]:
    """What the orchestrator decides for an image_transfer policy on this engine."""
    with EngineClient.connect(engine_settings(manager, store)) as engine:
        version = engine.version()
    choice = choose_mode("image_transfer", VmFacts(version, (), (), False))
    assert version == EngineVersion(4, 3)
    assert choice.snapshot_chain, choice.reason
    return {"mode": choice.mode, "snapshot_chain": True}


def test_an_engine_reporting_43_is_backed_up_through_snapshot_chains(
    lab: dict[str, Any],
    connection: Any,
    celery_app: Any,
    store: StateStore,
    manager: str,
    repo_dir: Path,
    tmp_path: Path,
    engine_43: None,
) -> None:
    vm = find_vm(connection, "name=app01")  # raw on block, qcow2 on NFS
    ids = [d.id for d in vm_disks(connection, vm)]
    options = chain_choice(store, manager) | {"keep_snapshot": True}
    full = backup(celery_app, store, manager, vm, ids, repo_dir, **options)
    assert full.kind == "full"
    assert len(drover_snapshots(connection, vm)) == 1

    lab_write(lab, vm.name, 0, offset=3 * MiB, length=128 * 1024)
    lab_write(lab, vm.name, 1, offset=64 * MiB + 4096, length=4096)
    incremental = backup(celery_app, store, manager, vm, ids, repo_dir, **options)
    assert incremental.kind == "incremental", incremental.warnings
    assert sum(d.bytes_read for d in incremental.disks) <= 2 * MiB

    set_engine_version(lab, "4.5")  # the checksums are read as the SDK's example does (4.4+)
    after = {d: disk_sha256(lab, connection, d, tmp_path) for d in ids}
    repo = Repository.open(str(repo_dir))
    manifest = repo.manifest(incremental.id)
    for disk_id in ids:
        assert repo.image_sha256(incremental.id, disk_id) == after[disk_id]
    assert all(len(d.chain) == 1 for d in manifest.disks)
    assert drover_snapshots(connection, vm) == [manifest.checkpoint_id]
    no_leftovers(connection, kept_snapshots=1)
    restore_and_verify(
        connection,
        celery_app,
        store,
        manager,
        repo_dir,
        incremental.id,
        "app01-chain",
        after,
        kept_snapshots=1,
    )
