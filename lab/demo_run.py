"""One mode's round in the demo, driven through the API as an operator would.

Its policy selects the estate's VMs by name (the VMs restored by an earlier mode's round are
not backed up again); mode ssh first registers every lab host's SSH credentials
(`PUT /managers/lab/hosts/{host}`, as `drover host add` does). A mode that makes incrementals
backs up twice (full, then incremental after the guests wrote) and restores an incremental; a
full-only mode (disk_attachment) backs up once and restores a full. A mode whose transfers run
on proxy workers (its queue is its cluster's, `proxy.<cluster>`) needs a proxy worker in every
cluster of the estate; each backup then says, per disk, which worker moved it and in which
proxy VM, and a restore is queued on its target cluster's proxy (the VM's own cluster).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lab.guest_client import guest_write
from orchestrator.client import ApiClient
from shared.modes import mode_for

MiB = 1 << 20
JOB_TIMEOUT_S = 900.0
GUEST_WRITES = ((3 * MiB, 256 * 1024), (40 * MiB + 4096, MiB))
SSH_MODES = ("ssh",)  # modes that read the volumes on the hosts over SSH
MANAGER = "lab"


def runs_on_proxies(mode: str) -> bool:
    """Does the mode's queue depend on the VM's cluster (a proxy worker in that cluster)?"""
    transfer = mode_for(mode)
    return transfer.queue("cluster-a") != transfer.queue("cluster-b")


def register_manager(api: ApiClient, lab: dict[str, Any]) -> None:
    """The lab's engine as manager "lab" (`drover manager add`), unless it is there."""
    if any(m["name"] == MANAGER for m in api.get("/managers")):
        return
    engine = lab["engine"]
    api.post(
        "/managers",
        {
            "name": MANAGER,
            "url": engine["url"],
            "username": engine["username"],
            "password": engine["password"],
            "ca_file": engine["ca_file"],
        },
    )


class DemoRun:
    def __init__(
        self,
        api: ApiClient,
        lab: dict[str, Any],
        root: Path,
        mode: str,
        say: Any,
        clusters: dict[str, str],
        proxies: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        """`clusters`: the estate's VMs (name -> cluster name); `proxies`: cluster name ->
        the lab proxy VM (lab.json's entry) whose worker serves that cluster's queue."""
        self.api, self.lab, self.root, self.mode, self.say = api, lab, root, mode, say
        self.clusters = clusters
        self.vms = sorted(clusters)
        self.proxies = proxies or {}
        self.on_proxies = runs_on_proxies(mode)
        self.incremental = mode_for(mode).incremental
        self.policy = f"demo-{mode.replace('_', '-')}"
        self.backups: list[dict[str, Any]] = []
        self.restores: list[dict[str, Any]] = []
        self.errors: list[str] = []

    def run(self) -> dict[str, Any]:
        self._register()
        if self.on_proxies and not self._proxies_cover_the_estate():
            return self._result()
        self.say(f"[{self.mode}] full backup of every VM ...")
        restorable = self._run_policy()
        if self.incremental:
            self.say(f"[{self.mode}] guests write; incremental backup of every VM ...")
            self._guests_write(restorable)
            restorable = self._run_policy()
        self._restore_one(restorable)
        return self._result()

    def _result(self) -> dict[str, Any]:
        ok = not self.errors and bool(self.restores) and all(r["verified"] for r in self.restores)
        result = {"ok": ok, "backups": self.backups, "restores": self.restores}
        if self.on_proxies:
            result["proxy_workers"] = {c: p["vm"] for c, p in sorted(self.proxies.items())}
        return result | {"errors": self.errors}

    def _register(self) -> None:
        register_manager(self.api, self.lab)
        if self.mode in SSH_MODES:
            self._register_hosts()
        rhythm = {"type": "incremental", "full_every": 7} if self.incremental else {"type": "full"}
        self.api.put(
            f"/policies/{self.policy}",
            {
                "name": self.policy,
                "manager": MANAGER,
                "repository": str(self.root / "repository"),
                "vms": {"names": self.vms},
                "mode": self.mode,
                "backup": rhythm,
                "quiesce": True,
            },
        )

    def _register_hosts(self) -> None:
        for host in self.lab["hosts"]:
            self.api.put(
                f"/managers/{MANAGER}/hosts/{host['name']}",
                {
                    "address": host["address"],
                    "port": host["ssh_port"],
                    "user": host["ssh_user"],
                    "host_key": host["ssh_host_key"],
                    "private_key": Path(host["ssh_key"]).read_text(),
                    "mount_root": host["mount_root"],
                    "dev_root": host["dev_root"],
                },
            )

    def _proxies_cover_the_estate(self) -> bool:
        """A job queued on a cluster nobody serves would wait forever: say so instead."""
        for cluster in sorted(set(self.clusters.values()) - set(self.proxies)):
            self.errors.append(
                f"cluster {cluster} has no proxy VM with VirtIO-SCSI on, so mode {self.mode} "
                "cannot back up its VMs: enable VirtIO-SCSI on a proxy VM of the cluster "
                "(Edit VM -> Resource Allocation) and run `drover worker --proxy` inside it"
            )
        return not self.errors

    def _run_policy(self) -> list[dict[str, Any]]:
        run = self.api.post(f"/policies/{self.policy}/run")
        for refused in run.get("refused", []):
            self.errors.append(f"{refused['vm']} refused: {refused['reason']}")
        jobs = [self._wait(j["job_id"]) for j in run.get("jobs", [])]
        for job in jobs:
            self._record(job)
        return jobs

    def _record(self, job: dict[str, Any]) -> None:
        if job["status"] == "failed":
            self.errors.append(f"{job['vm_name']}: {job['error']}")
            return
        self.backups.append(
            {
                "vm": job["vm_name"],
                "kind": job["kind"],
                "backup_id": job["backup_id"],
                "bytes_read": job["bytes_read"],
                "seconds": round(job["finished_at"] - job["created_at"], 2),
                "disks": [self._moved_by(job["vm_name"], disk) for disk in job["disks"]],
            }
        )

    def _moved_by(self, vm: str, disk: dict[str, Any]) -> dict[str, Any]:
        """Which worker moved the disk (its Celery hostname) and, on a proxy, in which VM."""
        moved = {"disk_id": disk["disk_id"], "worker": disk.get("worker", "")}
        if not self.on_proxies:
            return moved
        proxy = self._proxy_named_in(moved["worker"])
        cluster = self.clusters.get(vm, "")
        if proxy is None:
            self.errors.append(
                f"{vm}: disk {disk['disk_id']} was moved by worker {moved['worker']!r}, which "
                "names none of the lab's proxy VMs"
            )
        elif proxy["cluster"] != cluster:
            self.errors.append(
                f"{vm}: disk {disk['disk_id']} of cluster {cluster} was moved by proxy VM "
                f"{proxy['vm']} of cluster {proxy['cluster']}"
            )
        return moved | {"proxy_vm": proxy["vm"] if proxy else None}

    def _proxy_named_in(self, worker: str) -> dict[str, Any] | None:
        """The proxy VM whose name the worker's hostname holds (the longest such name:
        `drover-proxy-cluster1` is part of `drover-proxy-cluster1-b`)."""
        named = [p for p in self.lab["proxies"] if p["vm"] in worker]
        return max(named, key=lambda p: len(p["vm"]), default=None)

    def _guests_write(self, jobs: list[dict[str, Any]]) -> None:
        for job in jobs:
            for offset, length in GUEST_WRITES:
                guest_write(Path(self.lab["state_dir"]), job["vm_name"], 0, offset, length)

    def _restore_one(self, jobs: list[dict[str, Any]]) -> None:
        kind = "incremental" if self.incremental else "full"
        done = [j for j in jobs if j["status"] != "failed" and j["kind"] == kind]
        if not done:
            self.errors.append(f"no {kind} backup to restore")
            return
        job = done[0]
        name = f"{job['vm_name']}-{self.policy.removeprefix('demo-')}-restore"
        self.say(f"[{self.mode}] restoring {job['vm_name']} ({job['backup_id']}) as {name} ...")
        body = {
            "backup_id": job["backup_id"],
            "name": name,
            "manager": MANAGER,
            "repository": str(self.root / "repository"),
        }
        if self.on_proxies:  # queued on the target cluster's proxy: the VM's own cluster
            body["cluster"] = self.clusters[job["vm_name"]]
        restore = self._wait(self.api.post("/restores", body)["job_id"])
        result = restore.get("result") or {}
        verified = (
            restore["status"] == "succeeded"
            and all(d.get("verified") for d in result.get("disks", []))
            and bool(result.get("disks"))
        )
        if restore["status"] == "failed":
            self.errors.append(f"restore of {job['backup_id']}: {restore['error']}")
        self.restores.append({"backup_id": job["backup_id"], "vm": name, "verified": verified})

    def _wait(self, job_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while time.monotonic() < deadline:
            job: dict[str, Any] = self.api.get(f"/jobs/{job_id}")
            if job["finished"]:
                return job
            time.sleep(0.3)
        raise TimeoutError(f"job {job_id} did not finish in {JOB_TIMEOUT_S:.0f} s")
