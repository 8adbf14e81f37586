from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import support
from orchestrator.service import Conflict
from shared.engine.models import EngineVersion
from shared.errors import ConfigError
from shared.jobs import RestoreRequest
from shared.modes import MODES
from shared.proxy.node import proxy_queue
from shared.state import DiskProgress, JobState, JobStatus
from tests.unit.orchestrator_fakes import (
    TestClient,
    World,
    api_client,
    make_world,
    manager_body,
    policy_body,
    quiet_logs,  # noqa: F401  (an autouse fixture)
    vm,
)

PROXY = vm("proxy1", "drover-proxy-cluster1", tags=["drover-proxy"])


@pytest.fixture
def world() -> World:
    world = make_world()
    world.service.add_manager(manager_body())
    world.service.put_policy(policy_body())
    world.engine.vms = [vm("vm-a", "web1"), vm("vm-b", "db01", cluster="cluster2"), PROXY]
    return world


@pytest.fixture
def client(world: World) -> TestClient:
    return api_client(world)


def test_run_expands_into_one_queued_job_per_vm(world: World) -> None:
    run = world.service.run_policy("nightly")
    assert run["vms"] == 2 and run["refused"] == []
    assert [job["vm"] for job in run["jobs"]] == ["web1", "db01"]
    submitted = {
        request.vm_name: (request, disks, queue) for request, disks, queue in world.submit.backups
    }
    request, disks, queue = submitted["db01"]
    assert disks == ["vm-b-d0"]  # "scratch" excluded by name
    assert queue == "transfer.image"
    assert request.policy == "nightly" and request.manager == "lab"
    assert request.mode == "image_transfer" and request.priority == 7
    assert request.repository == "memory://repo"
    job = world.state.job(request.job_id)
    assert job is not None and job.status == JobStatus.QUEUED
    assert (job.vm_id, job.vm_name, job.policy, job.mode) == (
        "vm-b",
        "db01",
        "nightly",
        "image_transfer",
    )
    assert world.state.vm_lock_holder("vm-b") == request.job_id  # claimed for the queued job
    assert world.engine.searches == [([], ["*"], [], [])]
    assert "proxy1" not in world.state.locks


def test_a_vm_held_by_a_live_job_is_refused(world: World) -> None:
    world.state.create_job(JobState(id="running1", vm_id="vm-a", status=JobStatus.RUNNING))
    world.state.locks["vm-a"] = "running1"
    run = world.service.run_policy("nightly")
    assert [job["vm"] for job in run["jobs"]] == ["db01"]
    [refusal] = run["refused"]
    assert refusal["vm"] == "web1"
    assert "already being backed up by job running1 (running)" in refusal["reason"]
    assert "no second snapshot" in refusal["reason"]
    assert [r.vm_name for r, _, _ in world.submit.backups] == ["db01"]
    assert world.state.vm_lock_holder("vm-a") == "running1"


def test_running_twice_never_doubles_a_vm(world: World) -> None:
    first = world.service.run_policy("nightly")
    second = world.service.run_policy("nightly")
    assert len(first["jobs"]) == 2 and second["jobs"] == []
    assert all("(queued)" in r["reason"] for r in second["refused"])
    assert len(world.submit.backups) == 2


def test_a_stale_lock_of_a_finished_job_is_taken_over(world: World) -> None:
    world.state.create_job(JobState(id="old", vm_id="vm-a", status=JobStatus.FAILED))
    world.state.locks["vm-a"] = "old"
    run = world.service.run_policy("nightly")
    assert len(run["jobs"]) == 2
    assert world.state.vm_lock_holder("vm-a") == run["jobs"][0]["job_id"]


def test_every_disk_excluded_is_refused(world: World) -> None:
    world.service.put_policy(policy_body(exclude_disks=["scratch", "web1_os", "db01_os"]))
    run = world.service.run_policy("nightly")
    assert run["jobs"] == [] and len(run["refused"]) == 2
    assert "every disk" in run["refused"][0]["reason"]


def test_a_failed_submission_fails_the_job_and_frees_the_vm(world: World) -> None:
    world.submit.error = ConnectionError("broker down")
    run = world.service.run_policy("nightly")
    assert run["jobs"] == [] and "broker down" in run["refused"][0]["reason"]
    assert all(job.status == JobStatus.FAILED for job in world.state.jobs())
    assert world.state.locks == {}


def test_unknown_manager_at_run_time(world: World, client: TestClient) -> None:
    world.service.put_policy(policy_body(name="orphan", manager="gone"))
    response = client.post("/policies/orphan/run")
    assert response.status_code == 400
    assert "names manager 'gone', which is not registered" in response.json()["detail"]
    assert client.post("/policies/nope/run").status_code == 404


def test_policy_endpoints(client: TestClient) -> None:
    body = policy_body(name="weekly", manager="unregistered")
    created = client.post("/policies", json=body)
    assert created.status_code == 201
    assert "not registered yet" in created.json()["warnings"][0]
    assert client.post("/policies", json=body).status_code == 409
    assert client.put("/policies/other", json=body).status_code == 400
    assert {p["name"] for p in client.get("/policies").json()} == {"nightly", "weekly"}
    assert client.get("/policies/weekly").json()["priority"] == 7
    bad = client.put("/policies/weekly", json=body | {"vms": {"namez": ["x"]}})
    assert bad.status_code == 400
    assert (
        "unknown key 'vms.namez' (allowed here: names, patterns, tags, clusters)"
        in (bad.json()["detail"])
    )
    bad = client.put("/policies/weekly", json=body | {"mode": "nbd"})
    assert bad.status_code == 400 and "mode:" in bad.json()["detail"]
    assert client.delete("/policies/weekly").status_code == 204
    assert client.get("/policies/weekly").status_code == 404


def test_run_and_jobs_over_http(world: World, client: TestClient) -> None:
    response = client.post("/policies/nightly/run")
    assert response.status_code == 202
    job_id = response.json()["jobs"][0]["job_id"]
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "queued" and job["finished"] is False
    assert {"disks", "warnings", "error", "kind", "bytes_read", "rate_bps"} <= set(job)
    assert len(client.get("/jobs", params={"limit": 1}).json()) == 1
    assert client.get("/jobs/nope").status_code == 404
    assert client.get("/jobs", params={"limit": 0}).status_code == 400


BACKUP = {
    "backup_id": "b1",
    "vm_id": "vm-a",
    "vm_name": "web1",
    "kind": "full",
    "parent_id": None,
    "mode": "image_transfer",
    "created_at": "2024-01-01T02:00:00Z",
    "disks": [{"disk_id": "d0", "name": "web1_os", "size": 1024, "format": "cow"}],
}


def test_backups_and_restores(world: World, client: TestClient) -> None:
    world.repository.summaries = [BACKUP]
    assert client.get("/backups").json() == [BACKUP]
    assert client.get("/backups/b1").json()["vm_name"] == "web1"
    assert client.get("/backups/nope").status_code == 404
    response = client.post("/restores", json={"backup_id": "b1", "name": "web1-copy"})
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    [request] = world.submit.restores
    assert (request.job_id, request.manager, request.name) == (job_id, "lab", "web1-copy")
    assert request.repository == "memory://repo"
    job = client.get(f"/jobs/{job_id}").json()
    assert job["mode"] == "restore" and job["vm_name"] == "web1" and job["backup_id"] == "b1"
    assert client.post("/restores", json={"backup_id": "nope"}).status_code == 404
    bad = client.post("/restores", json={"backup_id": "b1", "clustr": "x"})
    assert bad.status_code == 400 and "unknown key 'clustr'" in bad.json()["detail"]


def test_a_restore_writes_in_the_backups_mode_unless_told_otherwise(world: World) -> None:
    world.repository.summaries = [BACKUP]
    world.service.restore({"backup_id": "b1"})
    world.service.restore({"backup_id": "b1", "mode": "ssh"})
    assert [r.mode for r in world.submit.restores] == [BACKUP.get("mode", "image_transfer"), "ssh"]
    with pytest.raises(ConfigError, match="unknown mode 'nbd'"):
        world.service.restore({"backup_id": "b1", "mode": "nbd"})


def test_restore_needs_a_manager_when_there_are_several(world: World) -> None:
    world.repository.summaries = [BACKUP]
    world.service.add_manager(manager_body(name="other"))
    with pytest.raises(ConfigError, match="name the manager"):
        world.service.restore({"backup_id": "b1"})
    assert world.service.restore({"backup_id": "b1", "manager": "other"})["manager"] == "other"


def test_missing_local_repository_lists_nothing(tmp_path: Path) -> None:
    world = make_world(tmp_repository=f"{tmp_path}/none")
    assert world.service.backups() == []
    assert world.repository.opened == []


def test_auto_chooses_per_vm_and_records_why(world: World) -> None:
    world.service.put_policy(policy_body(mode="auto"))
    world.service.live_queues = lambda: {"drover.default", "transfer.image", "proxy.cluster2"}
    run = world.service.run_policy("nightly")
    jobs = {j["vm"]: world.state.job(j["job_id"]) for j in run["jobs"]}
    web, db = jobs["web1"], jobs["db01"]
    assert web is not None and db is not None
    assert web.mode == db.mode == "image_transfer"
    assert web.mode_reason.startswith("auto chose image_transfer: engine 4.5 has the backup API")
    assert "storage: nfs" in web.mode_reason
    assert "no proxy worker serves the cluster" in web.mode_reason
    assert (
        "a proxy worker serves the cluster; disk_attachment (full only) is not chosen by auto"
        in db.mode_reason
    )
    assert {r.mode for r, _, _ in world.submit.backups} == {"image_transfer"}


def test_auto_on_an_engine_without_the_backup_api_uses_snapshot_chains(world: World) -> None:
    world.service.put_policy(policy_body(mode="auto"))
    world.engine.engine_version = EngineVersion(4, 3)
    run = world.service.run_policy("nightly")
    assert [job["vm"] for job in run["jobs"]] == ["web1", "db01"] and run["refused"] == []
    assert {(r.mode, r.snapshot_chain) for r, _, _ in world.submit.backups} == {
        ("image_transfer", True)
    }
    assert {queue for _, _, queue in world.submit.backups} == {"transfer.image"}
    job = world.state.job(run["jobs"][0]["job_id"])
    assert job is not None and job.mode == "image_transfer"
    assert "snapshot chains: engine 4.3 has no backup API (4.4+)" in job.mode_reason


@pytest.mark.parametrize(
    ("version", "snapshot_chain", "expected"),
    [
        (EngineVersion(4, 3), False, True),  # the engine has no backup API
        (EngineVersion(4, 5), False, False),
        (EngineVersion(4, 5), True, True),  # asked by the policy
    ],
)
def test_image_transfer_reads_the_engine_version_for_snapshot_chains(
    world: World, version: EngineVersion, snapshot_chain: bool, expected: bool
) -> None:
    world.service.put_policy(policy_body(snapshot_chain=snapshot_chain))
    world.engine.engine_version = version
    run = world.service.run_policy("nightly")
    assert len(run["jobs"]) == 2
    assert {(r.mode, r.snapshot_chain) for r, _, _ in world.submit.backups} == {
        ("image_transfer", expected)
    }
    assert world.engine.version_reads == 1  # once per run, not per VM
    assert world.engine.domain_reads == 0  # storage domains matter to auto only
    job = world.state.job(run["jobs"][0]["job_id"])
    assert job is not None and job.mode_reason.startswith("mode image_transfer set by the policy")
    if snapshot_chain:
        assert job.mode_reason.endswith("snapshot chains by policy")


@pytest.mark.parametrize(
    ("mode", "version_reads", "domain_reads", "live_queue_reads"),
    [("auto", 1, 1, 1), ("image_transfer", 1, 0, 1), ("ssh", 0, 0, 1)],
)
def test_the_facts_read_depend_on_the_mode(
    world: World, mode: str, version_reads: int, domain_reads: int, live_queue_reads: int
) -> None:
    """The live queues are read once per run whatever the mode (every job needs a consumer
    of its queues); the engine's version and storage domains only where the mode needs them."""
    reads: list[int] = []

    def live_queues() -> set[str]:
        reads.append(1)
        return {"drover.default", "transfer.image", "transfer.ssh"}

    world.service.live_queues = live_queues
    world.service.put_policy(policy_body(mode=mode))
    assert len(world.service.run_policy("nightly")["jobs"]) == 2
    assert world.engine.version_reads == version_reads
    assert world.engine.domain_reads == domain_reads
    assert len(reads) == live_queue_reads


def test_a_snapshot_is_kept_when_another_policy_of_the_vm_is_incremental(world: World) -> None:
    world.service.remove_policy("nightly")  # incremental, of every VM
    world.service.put_policy(policy_body(name="weekly-full", backup={"type": "full"}))
    world.service.put_policy(
        policy_body(name="web-incremental", vms={"patterns": ["WEB*"]}, mode="ssh")
    )
    world.service.put_policy(
        policy_body(name="db-elsewhere", manager="other", vms={"names": ["db01"]})
    )
    world.service.run_policy("weekly-full")
    kept = {r.vm_name: r.keep_snapshot for r, _, _ in world.submit.backups}
    # web1 is selected by an incremental policy too; db01 only by one of another manager
    assert kept == {"web1": True, "db01": False}


def test_the_incremental_policy_itself_keeps_its_snapshots(world: World) -> None:
    world.service.run_policy("nightly")  # incremental by default
    assert {r.keep_snapshot for r, _, _ in world.submit.backups} == {True}


# disk_attachment: only where a live proxy worker serves the cluster ------------------------


class ProxyModeStub:
    """What the orchestrator asks of mode disk_attachment, for a tree where it has not landed."""

    name = "disk_attachment"
    incremental = False
    anchor_name = ""

    def queue(self, cluster: str) -> str:
        return proxy_queue(cluster)


@pytest.fixture
def disk_attachment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mode disk_attachment available, its queue its cluster's proxy queue."""
    if "disk_attachment" not in MODES:
        monkeypatch.setitem(MODES, "disk_attachment", ProxyModeStub())  # type: ignore[arg-type]
    usable = tuple(dict.fromkeys((*support.AVAILABLE_MODES, "disk_attachment")))
    monkeypatch.setattr(support, "AVAILABLE_MODES", usable)


NO_PROXY_CLUSTER2 = (
    "no live proxy worker serves cluster cluster2 (queue proxy.cluster2): "
    "start `drover worker --proxy` in a proxy VM of that cluster"
)


@pytest.mark.usefixtures("disk_attachment")
def test_disk_attachment_refuses_a_vm_whose_cluster_no_live_proxy_serves(world: World) -> None:
    reads: list[int] = []

    def live_queues() -> set[str]:
        reads.append(1)
        return {"drover.default", "transfer.image", "proxy.cluster1"}

    world.service.live_queues = live_queues
    world.service.put_policy(policy_body(mode="disk_attachment", backup={"type": "full"}))
    run = world.service.run_policy("nightly")
    assert [job["vm"] for job in run["jobs"]] == ["web1"]
    assert run["refused"] == [{"vm": "db01", "vm_id": "vm-b", "reason": NO_PROXY_CLUSTER2}]
    [(request, _, queue)] = world.submit.backups
    assert (request.vm_name, request.mode, queue) == ("web1", "disk_attachment", "proxy.cluster1")
    assert {j.vm_id for j in world.state.job_states.values()} == {"vm-a"}  # none for db01
    assert "vm-b" not in world.state.locks
    assert len(reads) == 1  # once per run, not per VM
    assert world.engine.domain_reads == 0 and world.engine.version_reads == 0


@pytest.mark.usefixtures("disk_attachment")
def test_disk_attachment_without_any_proxy_worker_queues_nothing(
    world: World, client: TestClient
) -> None:
    world.service.put_policy(policy_body(mode="disk_attachment", backup={"type": "full"}))
    response = client.post("/policies/nightly/run")
    assert response.status_code == 202, response.text
    run = response.json()
    assert run["jobs"] == [] and [r["vm"] for r in run["refused"]] == ["web1", "db01"]
    assert (
        "no live proxy worker serves cluster cluster1 (queue proxy.cluster1)"
        in (run["refused"][0]["reason"])
    )
    assert world.submit.backups == [] and world.state.job_states == {} and world.state.locks == {}


def placed(cluster: str, mode: str = "disk_attachment") -> dict[str, object]:
    """A backup summary that records its VM's cluster, as backups do."""
    return BACKUP | {"mode": mode, "stats": {"placement": {"cluster": cluster, "disks": {}}}}


def record_restore_queues(world: World) -> list[tuple[RestoreRequest, str]]:
    queued: list[tuple[RestoreRequest, str]] = []
    world.service.submit_restore = lambda request, queue: queued.append((request, queue))
    return queued


@pytest.mark.usefixtures("disk_attachment")
def test_a_disk_attachment_restore_needs_a_live_proxy_of_its_target_cluster(
    world: World, client: TestClient
) -> None:
    world.repository.summaries = [placed("cluster2")]
    queued = record_restore_queues(world)
    world.service.live_queues = lambda: {"drover.default", "proxy.cluster1"}
    with pytest.raises(Conflict) as refused:
        world.service.restore({"backup_id": "b1"})  # into the backup's cluster, cluster2
    assert str(refused.value) == NO_PROXY_CLUSTER2
    response = client.post("/restores", json={"backup_id": "b1"})
    assert response.status_code == 409 and response.json()["detail"] == NO_PROXY_CLUSTER2
    assert world.state.job_states == {} and queued == []  # refused before the job exists

    accepted = world.service.restore({"backup_id": "b1", "cluster": "cluster1"})
    [(request, queue)] = queued
    assert (request.job_id, request.mode, request.cluster) == (
        accepted["job_id"],
        "disk_attachment",
        "cluster1",
    )
    assert queue == "proxy.cluster1"
    world.service.live_queues = lambda: {"proxy.cluster2"}
    world.service.restore({"backup_id": "b1"})
    assert queued[-1][1] == "proxy.cluster2" and queued[-1][0].cluster == ""


@pytest.mark.usefixtures("disk_attachment")
def test_a_restore_asked_in_disk_attachment_checks_the_cluster_it_writes_into(
    world: World,
) -> None:
    world.repository.summaries = [placed("cluster1", mode="image_transfer")]
    queued = record_restore_queues(world)
    world.service.live_queues = lambda: {"transfer.image"}
    with pytest.raises(Conflict, match="serves cluster cluster1 "):
        world.service.restore({"backup_id": "b1", "mode": "disk_attachment"})
    world.service.restore({"backup_id": "b1"})  # in its own mode: no proxy needed
    assert [queue for _, queue in queued] == ["transfer.image"]


@pytest.mark.usefixtures("disk_attachment")
def test_a_disk_attachment_restore_of_a_backup_without_its_cluster_asks_for_one(
    world: World,
) -> None:
    world.repository.summaries = [BACKUP]  # from before backups recorded their placement
    world.service.live_queues = lambda: {"proxy.cluster1"}
    with pytest.raises(ConfigError, match="does not record its VM's cluster") as refused:
        world.service.restore({"backup_id": "b1", "mode": "disk_attachment"})
    assert "--cluster" in refused.value.hint and world.state.job_states == {}
    world.service.restore({"backup_id": "b1", "mode": "disk_attachment", "cluster": "cluster1"})
    assert [r.cluster for r in world.submit.restores] == ["cluster1"]


def test_every_restore_checks_that_a_live_worker_consumes_its_queue(world: World) -> None:
    world.repository.summaries = [placed("cluster2", mode="image_transfer")]
    world.service.live_queues = lambda: {"drover.default", "transfer.image"}
    accepted = world.service.restore({"backup_id": "b1"})
    assert world.state.queues(accepted["job_id"]) == ["transfer.image"]
    with pytest.raises(Conflict) as refused:
        world.service.restore({"backup_id": "b1", "mode": "ssh"})
    assert str(refused.value) == (
        "no live worker consumes queue transfer.ssh: "
        "start one with `drover worker --queues transfer.ssh`"
    )
    assert len(world.submit.restores) == 1 and len(world.state.job_states) == 1


# the job view: per disk, the worker that ran its transfer -------------------------------


def test_a_jobs_view_names_the_worker_of_each_disk(world: World, client: TestClient) -> None:
    job_id = world.service.run_policy("nightly")["jobs"][0]["job_id"]
    job = world.state.job_states[job_id]
    job.disks = [
        DiskProgress("d0", "web1_os", size=1024, worker="proxy-drover-proxy-cluster1@node1"),
        DiskProgress("d1", "data", size=1024),  # not started yet
    ]
    view = client.get(f"/jobs/{job_id}").json()
    assert [d["worker"] for d in view["disks"]] == ["proxy-drover-proxy-cluster1@node1", ""]
    assert view["workers"] == ["proxy-drover-proxy-cluster1@node1"]


@pytest.mark.usefixtures("disk_attachment")
def test_a_broker_that_does_not_answer_is_named_not_a_crash(
    world: World, client: TestClient
) -> None:
    def live_queues() -> set[str]:
        raise ConnectionError("Error 111 connecting to broker:6379")

    world.service.live_queues = live_queues
    world.service.put_policy(policy_body(mode="disk_attachment", backup={"type": "full"}))
    response = client.post("/policies/nightly/run")
    assert response.status_code == 502
    assert response.json()["detail"].startswith(
        "could not ask the workers which queues they serve: Error 111"
    )
    world.repository.summaries = [placed("cluster1")]
    assert client.post("/restores", json={"backup_id": "b1"}).status_code == 502
    assert world.state.job_states == {} and world.submit.backups == []
