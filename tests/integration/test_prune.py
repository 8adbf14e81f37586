"""`drover repo prune` and `drover backups remove` through the API, with a real Redis and a
filesystem repository, while a backup job is writing to the same repository."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from orchestrator import cli as cli_module
from orchestrator import commands
from orchestrator.cli import cli
from orchestrator.client import ApiClient
from orchestrator.policies import Policy
from orchestrator.service import Service
from shared.repository import DiskManifest, Manifest, Repository
from shared.repository.chunks import chunk_name
from shared.settings import Settings, get_settings
from shared.state import JobState, JobStatus, StateStore, new_job_id
from tests.unit.orchestrator_fakes import (
    SECRET_KEY,
    TOKEN,
    FakeEngine,
    FakeSubmit,
    TestClient,  # imported there without starlette's warning about httpx2
    make_api,
    policy_body,
)

CHUNK = 4096
LONG_AGO = time.time() - 30 * 86400


class Fixture:
    def __init__(self, store: StateStore, repo: Repository, vm: str) -> None:
        self.store, self.repo, self.vm = store, repo, vm

    def chunk(self, n: int, when: float | None = LONG_AGO) -> str:
        digest = self.repo.put_chunk(bytes([n]) * CHUNK)
        if when is not None:
            os.utime(Path(self.repo.location) / chunk_name(digest), (when, when))
        return digest

    def commit(
        self, backup_id: str, day: int, chunks: list[str], parent: str | None = None
    ) -> None:
        disk = DiskManifest("d0", "os", CHUNK * 8, "raw", CHUNK, dict(enumerate(chunks)))
        self.repo.commit_manifest(Manifest(
            backup_id, self.vm, "web", "incremental" if parent else "full", parent, "ssh",
            f"2024-05-{day:02d}T00:00:00Z", "<ovf/>", None, [disk],
        ))  # fmt: skip

    def job(self, job_id: str, status: JobStatus) -> None:
        self.store.create_job(
            JobState(job_id, self.vm, vm_name="web", policy=f"p-{self.vm}", status=status)
        )


@pytest.fixture
def world(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fixture]:
    store = StateStore.from_url(redis_url)
    location = str(tmp_path / "repo")
    repo = Repository.open(location, chunk_size=CHUNK)
    vm = f"vm-{new_job_id()[:8]}"  # the Redis of the session is shared: own names
    policy = Policy.model_validate(policy_body(name=f"p-{vm}", retention={"keep_last": 2}))
    store.put_document("policy", policy.name, policy.model_dump(mode="json"))
    key = SecretStr(SECRET_KEY.decode())
    settings = Settings(repository=location, api_tokens=[SecretStr(TOKEN)], secret_key=key)
    engine, submit = FakeEngine(), FakeSubmit()
    service = Service(
        state=store, settings=settings, connect=engine.connect, submit_backup=submit.backup,
        submit_restore=submit.restore,
        open_repository=lambda where: Repository.open(where, create=False),
        live_queues=lambda: set(),
    )  # fmt: skip
    http = TestClient(make_api_for(service), raise_server_exceptions=False)
    monkeypatch.setattr(commands, "make_client", lambda: ApiClient("http://t", TOKEN, http=http))
    monkeypatch.setattr(cli_module, "configure_logging", lambda *_a, **_k: None)
    get_settings.cache_clear()
    yield Fixture(store, repo, vm)
    store.remove_document("policy", policy.name)
    get_settings.cache_clear()


def make_api_for(service: Service):  # type: ignore[no-untyped-def]
    world = type("W", (), {"service": service})()
    return make_api(world)  # type: ignore[arg-type]


def drover(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_prune_and_remove_while_a_backup_is_written(world: Fixture) -> None:
    ids = [f"{world.vm}-b{n}" for n in range(1, 5)]
    shared_base = world.chunk(1)
    only_b1, only_b2 = world.chunk(11), world.chunk(12)
    world.commit(ids[0], 1, [shared_base, only_b1])
    world.commit(ids[1], 2, [shared_base, only_b2])
    world.commit(ids[2], 3, [shared_base, world.chunk(13)])
    world.commit(ids[3], 4, [shared_base, world.chunk(14)], parent=ids[2])
    for backup_id in ids:
        world.job(backup_id, JobStatus.SUCCEEDED)

    # a job of the same VM is running: incremental on b4, one chunk stored (long ago), and it
    # is about to reuse b1's chunk (already stored: touched by put)
    running = f"{world.vm}-running"
    world.job(running, JobStatus.RUNNING)
    world.store.save_context(running, {"parent_id": ids[3], "disks": [{"id": "d0"}]})
    early = world.chunk(30, when=LONG_AGO)
    world.store.record_chunk(running, "d0", 2, early, CHUNK)
    assert world.repo.put_chunk(bytes([11]) * CHUNK) == only_b1

    code, out = drover("repo", "prune", "--dry-run", "--json")
    assert code == 0, out
    dry = json.loads(out)
    assert [b["backup_id"] for b in dry["removed"]] == ids[:2]
    assert len(world.repo.backup_ids()) == 4

    code, out = drover("repo", "prune", "--json")
    assert code == 0, out
    report = json.loads(out)
    assert sorted(world.repo.backup_ids()) == ids[2:]  # keep_last 2 (b4 is also the parent)
    assert report["gc"]["chunks_removed"] == 1  # only_b2; only_b1 was reused, `early` is the job's
    assert not world.repo.has_chunk(only_b2)

    code, out = drover("backups", "remove", ids[2])
    assert code == 1 and f"parent of incremental backup(s) {ids[3]}" in out
    code, out = drover("backups", "remove", ids[3])
    assert code == 1 and f"parent of running job(s) {running}" in out

    # the running job commits: everything it references is there
    world.commit(running, 5, [shared_base, only_b1, early], parent=ids[3])
    assert world.repo.check(read_data=True).ok
    world.store.set_status(running, JobStatus.SUCCEEDED)
    code, out = drover("backups", "remove", running, "--json")
    assert code == 0 and json.loads(out)["removed"] is True
    assert sorted(world.repo.backup_ids()) == ids[2:]
    assert world.repo.check(read_data=True).ok
