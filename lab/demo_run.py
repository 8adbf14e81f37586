"""One mode's round in the demo, driven through the API as an operator would.

Its policy selects the estate's VMs by name (the VMs restored by an earlier mode's round are
not backed up again); mode ssh first registers every lab host's SSH credentials
(`PUT /managers/lab/hosts/{host}`, as `drover host add` does).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lab.guest_client import guest_write
from orchestrator.client import ApiClient

MiB = 1 << 20
JOB_TIMEOUT_S = 900.0
GUEST_WRITES = ((3 * MiB, 256 * 1024), (40 * MiB + 4096, MiB))
SSH_MODES = ("ssh",)  # modes that read the volumes on the hosts over SSH


class DemoRun:
    def __init__(
        self,
        api: ApiClient,
        lab: dict[str, Any],
        root: Path,
        mode: str,
        say: Any,
        vms: list[str],
    ) -> None:
        self.api, self.lab, self.root, self.mode, self.say = api, lab, root, mode, say
        self.vms = vms
        self.policy = f"demo-{mode.replace('_', '-')}"
        self.backups: list[dict[str, Any]] = []
        self.restores: list[dict[str, Any]] = []
        self.errors: list[str] = []

    def run(self) -> dict[str, Any]:
        self._register()
        self.say(f"[{self.mode}] full backup of every VM ...")
        fulls = self._run_policy()
        self.say(f"[{self.mode}] guests write; incremental backup of every VM ...")
        self._guests_write(fulls)
        incrementals = self._run_policy()
        self._restore_one(incrementals)
        ok = not self.errors and bool(self.restores) and all(r["verified"] for r in self.restores)
        return {"ok": ok, "backups": self.backups, "restores": self.restores, "errors": self.errors}

    def _register(self) -> None:
        engine = self.lab["engine"]
        if not any(m["name"] == "lab" for m in self.api.get("/managers")):
            self.api.post(
                "/managers",
                {
                    "name": "lab",
                    "url": engine["url"],
                    "username": engine["username"],
                    "password": engine["password"],
                    "ca_file": engine["ca_file"],
                },
            )
        if self.mode in SSH_MODES:
            self._register_hosts()
        self.api.put(
            f"/policies/{self.policy}",
            {
                "name": self.policy,
                "manager": "lab",
                "repository": str(self.root / "repository"),
                "vms": {"names": self.vms},
                "mode": self.mode,
                "backup": {"type": "incremental", "full_every": 7},
                "quiesce": True,
            },
        )

    def _register_hosts(self) -> None:
        for host in self.lab["hosts"]:
            self.api.put(
                f"/managers/lab/hosts/{host['name']}",
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
            }
        )

    def _guests_write(self, jobs: list[dict[str, Any]]) -> None:
        for job in jobs:
            for offset, length in GUEST_WRITES:
                guest_write(Path(self.lab["state_dir"]), job["vm_name"], 0, offset, length)

    def _restore_one(self, jobs: list[dict[str, Any]]) -> None:
        done = [j for j in jobs if j["status"] != "failed" and j["kind"] == "incremental"]
        if not done:
            self.errors.append("no incremental backup to restore")
            return
        job = done[0]
        name = f"{job['vm_name']}-{self.policy.removeprefix('demo-')}-restore"
        self.say(f"[{self.mode}] restoring {job['vm_name']} ({job['backup_id']}) as {name} ...")
        restore = self._wait(
            self.api.post(
                "/restores",
                {
                    "backup_id": job["backup_id"],
                    "name": name,
                    "manager": "lab",
                    "repository": str(self.root / "repository"),
                },
            )["job_id"]
        )
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
