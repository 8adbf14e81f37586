"""The orchestrator's use cases, called by the HTTP API (and by tests directly).

Everything outside Redis comes in by injection (the engine connection, the Celery submission,
the repository), so the use cases run against fakes in unit tests and the real things in
`build_service`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator import hosts as ssh_hosts
from orchestrator import managers as mgr
from orchestrator.policies import (
    NAME_PATTERN,
    Policy,
    backup_request,
    describe_errors,
    is_proxy,
    validate_policy,
)
from orchestrator.support import refuse_unsupported
from shared.backup.enqueue import Queued, SubmitBackup, queue_backup
from shared.engine.models import ClusterInfo, EngineVersion, HostInfo, StorageDomainInfo, VmInfo
from shared.errors import ConfigError, DroverError, ServiceError
from shared.jobs import RestoreRequest
from shared.logging import get_logger
from shared.modes import mode_for
from shared.modes.auto import VmFacts, choose_mode
from shared.proxy import registry
from shared.proxy.node import proxy_queue
from shared.reaper import CANCELLED, ConnectEngine, Reaped, clean_job
from shared.repository.manifest import check_id
from shared.schedules.cron import next_run_view
from shared.sealed import fleet_key, opened_fields, sealed_fields
from shared.settings import EngineSettings, Settings
from shared.ssh import credentials
from shared.state import FailOutcome, JobState, JobStatus, StateStore, new_job_id
from workers.canvas import CONTROL_QUEUE

log = get_logger(__name__)
POLICY = "policy"
JOB_ID = re.compile(r"[0-9a-f]{32}")  # what new_job_id() makes: uuid4().hex
MAX_LOCATION_CHARS = 1024  # of a repository location a client gives
MAX_NAME_BYTES = 255  # of one component of a path (NAME_MAX)
MAX_QUOTED_CHARS = 64  # of an input value quoted in an error
REPOSITORY_HINT = "give an absolute path or a file:// URL, e.g. /srv/backups, file:///srv/backups"
VERSIONED_MODES = ("image_transfer", "auto")  # chosen with the engine's version in hand
PROXY_MODES = ("disk_attachment",)  # served only by a proxy worker of the VM's cluster
CENTRAL_QUEUES = (CONTROL_QUEUE, "transfer.image", "transfer.ssh")  # what /health reports on


class NotFound(DroverError):
    """The named object does not exist (HTTP 404)."""


class Conflict(DroverError):
    """The request clashes with what exists (HTTP 409)."""


class EngineLike(Protocol):
    """What the orchestrator needs of `shared.engine.client.EngineClient`."""

    def __enter__(self) -> EngineLike: ...

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Any: ...

    def test(self) -> str: ...

    def find_vms(
        self, names: list[str], patterns: list[str], tags: list[str], clusters: list[str]
    ) -> Sequence[VmInfo]: ...

    def version(self) -> EngineVersion: ...

    def storage_domains(self) -> Sequence[StorageDomainInfo]: ...

    def hosts(self) -> Sequence[HostInfo]: ...

    def clusters(self) -> Sequence[ClusterInfo]: ...


class RepositoryLike(Protocol):
    def list_backups(self) -> Sequence[Any]: ...


EngineConnect = Callable[[EngineSettings], EngineLike]
SubmitRestore = Callable[[RestoreRequest, str], Any]  # (request, queue)
OpenRepository = Callable[[str], RepositoryLike]
LiveQueues = Callable[[], set[str]]  # the queues a live worker consumes now
Revoke = Callable[[list[str]], object]  # revoke Celery tasks, terminating those running
CleanJob = Callable[[JobState, str], Reaped]  # (job, why): its engine objects closed


class RestoreIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backup_id: str = Field(min_length=1)
    name: str = ""
    cluster: str = ""
    storage_domain: str = ""
    manager: str = Field(default="", pattern=f"({NAME_PATTERN})|^$")
    repository: str = Field(default="", max_length=MAX_LOCATION_CHARS)  # see check_repository
    mode: str = ""  # whose disk sink writes the disks; empty: the backup's mode


@dataclass
class Service:
    state: StateStore
    settings: Settings
    connect: EngineConnect
    submit_backup: SubmitBackup  # (request, queue)
    submit_restore: SubmitRestore
    open_repository: OpenRepository
    live_queues: LiveQueues
    revoke: Revoke = lambda _task_ids: None  # without Celery: nothing to revoke
    clean_job: CleanJob | None = None  # None: the reaper's cleanup through `connect`
    # (policy, its schedule or None): keeps the scheduler's entry in step (workers.beat)
    sync_schedule: Callable[[str, dict[str, Any] | None], None] = lambda _name, _schedule: None

    # managers --------------------------------------------------------------------------
    def add_manager(self, data: dict[str, Any], *, replace: bool = False) -> dict[str, Any]:
        manager = mgr.checked_manager(mgr.manager_from(data))
        if not replace and self.state.document(mgr.KIND, manager.name):
            raise Conflict(
                f"manager {manager.name!r} already exists",
                hint="remove it first, or replace it (PUT /managers/NAME, `--replace`)",
            )
        version, engine_hosts = self._test_engine(manager)
        document = sealed_fields(manager.document(), mgr.SECRETS, fleet_key(self.settings))
        self.state.put_document(mgr.KIND, manager.name, document)
        report = self._host_report(manager.name, engine_hosts)
        log.info(
            "manager registered",
            manager=manager.name,
            url=manager.url,
            hosts_without_ssh=report["hosts_without_ssh"],
        )
        return manager.public() | {"engine_version": version} | report

    def sync_manager(self, name: str) -> dict[str, Any]:
        """Test the connection again and report the engine's hosts against the registered
        SSH credentials (which hosts have none, which credentials name no host any more), and
        the proxy VMs per cluster of the engine (`_proxy_report`)."""
        manager = self._manager(name)
        proxies: dict[str, Any] = {}
        version, engine_hosts = self._test_engine(
            manager, lambda engine: proxies.update(self._proxy_report(manager.name, engine))
        )
        report = {"name": name, "engine_version": version}
        return report | self._host_report(name, engine_hosts) | proxies

    def _proxy_report(self, manager: str, engine: EngineLike) -> dict[str, Any]:
        """`proxies`: per cluster of the engine, its proxy VMs (those whose worker registered,
        found among the engine's VMs by id) with their worker and whether it is alive;
        `clusters_without_live_proxy`: where mode disk_attachment cannot run now. A failure
        to read them is reported (`proxies_error`), not raised: the connection test passed."""
        try:
            found = registry.statuses(self.state)
            clusters = [c.name for c in engine.clusters()]
            names = sorted({s.record.vm_name for s in found})
            vms = {vm.id: vm for vm in engine.find_vms(names, [], [], [])} if names else {}
        except Exception as e:
            log.warning("reading the proxy VMs failed", manager=manager, error=str(e))
            return {"proxies": {}, "proxies_error": f"reading the proxy VMs failed: {e}"}
        proxies: dict[str, list[dict[str, Any]]] = {name: [] for name in sorted(clusters)}
        for status in found:
            vm = vms.get(status.record.vm_id)
            if vm is not None:
                proxies.setdefault(vm.cluster_name, []).append(_proxy_view(status, vm))
        without = [c for c, found_here in proxies.items() if not _serves(c, found_here)]
        return {"proxies": proxies, "clusters_without_live_proxy": without}

    def _host_report(self, manager: str, engine_hosts: Sequence[HostInfo]) -> dict[str, Any]:
        registered = credentials.registered_hosts(self.state, manager)
        return ssh_hosts.host_report(engine_hosts, registered)

    def _test_engine(
        self, manager: mgr.Manager, then: Callable[[EngineLike], object] | None = None
    ) -> tuple[str, list[HostInfo]]:
        """The engine's version string and its hosts, through a new connection (which `then`
        reads more through once the test passed)."""
        try:
            with self.connect(manager.engine_settings()) as engine:
                version, engine_hosts = engine.test(), list(engine.hosts())
                if then is not None:
                    then(engine)
                return version, engine_hosts
        except DroverError as e:
            e.message = f"connection test of manager {manager.name!r} failed: {e.message}"
            e.args = (e.message,)
            raise
        except Exception as e:
            raise ServiceError(
                f"connection test of manager {manager.name!r} failed: {e}",
                hint="check the URL, the network and the CA file",
            ) from e

    def managers(self) -> list[dict[str, Any]]:
        return [self._opened(d).public() for d in self.state.documents(mgr.KIND)]

    def manager(self, name: str) -> dict[str, Any]:
        return self._manager(name).public()

    def _manager(self, name: str) -> mgr.Manager:
        document = self.state.document(mgr.KIND, name)
        if document is None:
            raise NotFound(
                f"manager {name!r} is not registered",
                hint=f"add it with `drover manager add {name} --url ... --username ...`",
            )
        return self._opened(document)

    def _opened(self, document: dict[str, Any]) -> mgr.Manager:
        return mgr.manager_from(opened_fields(document, fleet_key(self.settings)))

    def remove_manager(self, name: str) -> None:
        self._manager(name)
        users = [p.name for p in self._policies() if p.manager == name]
        if users:
            raise Conflict(
                f"manager {name!r} is used by policies {', '.join(users)}",
                hint="remove those policies or point them at another manager first",
            )
        self.state.remove_document(mgr.KIND, name)
        for host in credentials.registered_hosts(self.state, name):
            credentials.remove_host(self.state, name, str(host["name"]))

    # hosts: SSH credentials of a manager's hypervisors ----------------------------------
    def put_host(self, manager_name: str, host: str, data: dict[str, Any]) -> dict[str, Any]:
        """Register (or replace) a host's SSH credentials, once the engine knows the host."""
        manager = self._manager(manager_name)
        where = f"host {ssh_hosts.quoted_name(host)} of manager {manager.name!r}"
        access = ssh_hosts.checked_access(host, ssh_hosts.host_from(data, where), where)
        engine_hosts = self._engine_hosts(manager)
        if host not in {h.name for h in engine_hosts}:
            names = ", ".join(sorted(h.name for h in engine_hosts)) or "none"
            raise NotFound(
                f"the engine of manager {manager.name!r} has no host named "
                f"{ssh_hosts.quoted_name(host)} (its hosts: {names})",
                hint=f"give the host's engine name, as `drover host list {manager.name}` shows",
            )
        registered = credentials.registered_hosts(self.state, manager.name)
        replaced = host in {r["name"] for r in registered}
        credentials.save_host(self.state, manager.name, access, key=fleet_key(self.settings))
        view = ssh_hosts.registered_view(access.redacted())
        log.info(
            "host credentials registered",
            manager=manager.name,
            host=host,
            address=access.address,
            user=access.user,
            auth=view["auth"],
        )
        return {"manager": manager.name, "credentials": True, "replaced": replaced} | view

    def hosts(self, manager_name: str) -> list[dict[str, object]]:
        """Every host of the manager's engine, `credentials` true or false, no secrets."""
        manager = self._manager(manager_name)
        engine_hosts = self._engine_hosts(manager)
        registered = credentials.registered_hosts(self.state, manager.name)
        return ssh_hosts.hosts_view(engine_hosts, registered)

    def remove_host(self, manager_name: str, host: str) -> None:
        manager = self._manager(manager_name)
        ssh_hosts.check_name(host, "host")
        if not credentials.remove_host(self.state, manager.name, host):
            raise NotFound(
                f"host {ssh_hosts.quoted_name(host)} of manager {manager.name!r} has no SSH "
                "credentials registered",
                hint=f"list them with `drover host list {manager.name}`",
            )
        log.info("host credentials removed", manager=manager.name, host=host)

    def _engine_hosts(self, manager: mgr.Manager) -> list[HostInfo]:
        try:
            with self.connect(manager.engine_settings()) as engine:
                return list(engine.hosts())
        except DroverError:
            raise
        except Exception as e:
            raise ServiceError(
                f"reading the hosts of manager {manager.name!r} failed: {e}",
                hint="check the manager with `drover manager sync`",
            ) from e

    # policies --------------------------------------------------------------------------
    def put_policy(
        self, data: dict[str, Any], name: str = "", *, create: bool = False
    ) -> dict[str, Any]:
        if name:
            data = _with_name(data, name)
        policy = validate_policy(data)
        check_length(policy.repository)  # before a message quotes it whole
        refuse_unsupported(policy)
        if policy.repository:
            check_repository(policy.repository)
        if create and self.state.document(POLICY, policy.name):
            raise Conflict(
                f"policy {policy.name!r} already exists",
                hint="replace it with PUT /policies/NAME or `drover policy apply`",
            )
        self.state.put_document(POLICY, policy.name, policy.model_dump(mode="json"))
        self.sync_schedule(policy.name, policy.schedule.model_dump() if policy.schedule else None)
        log.info("policy stored", policy=policy.name)
        return {"policy": policy.model_dump(mode="json"), "warnings": self._policy_warnings(policy)}

    def _policy_warnings(self, policy: Policy) -> list[str]:
        if not self.state.document(mgr.KIND, policy.manager):
            return [
                f"manager {policy.manager!r} is not registered yet: add it with "
                f"`drover manager add {policy.manager} ...` before running the policy"
            ]
        if policy.mode == "ssh" and not credentials.registered_hosts(self.state, policy.manager):
            return [
                f"mode ssh reads the disks on a host of manager {policy.manager!r}, but none "
                f"has SSH credentials: register them with `drover host add {policy.manager} "
                f"HOST ...` (`drover host list {policy.manager}` shows the hosts)"
            ]
        return []

    def policies(self) -> list[dict[str, Any]]:
        """The stored policies, each with its `next_run` (read-only; null: unscheduled)."""
        return [p.model_dump(mode="json") | {"next_run": next_run(p)} for p in self._policies()]

    def _policies(self) -> list[Policy]:
        return [Policy.model_validate(d) for d in self.state.documents(POLICY)]

    def policy(self, name: str) -> dict[str, Any]:
        return self._policy(name).model_dump(mode="json")

    def _policy(self, name: str) -> Policy:
        document = self.state.document(POLICY, name)
        if document is None:
            raise NotFound(
                f"policy {name!r} does not exist",
                hint="list policies with GET /policies; add one with `drover policy apply -f FILE`",
            )
        return Policy.model_validate(document)

    def remove_policy(self, name: str) -> None:
        if not self.state.remove_document(POLICY, name):
            raise NotFound(f"policy {name!r} does not exist")
        self.sync_schedule(name, None)

    # running a policy ------------------------------------------------------------------
    def run_policy(self, name: str) -> dict[str, Any]:
        """One queued job per selected VM; VMs another job holds are refused, not doubled."""
        policy = self._policy(name)
        refuse_unsupported(policy)
        manager = self._policy_manager(policy)
        with self.connect(manager.engine_settings()) as engine:
            vms = self._select_vms(policy, engine)
            facts = self._facts_source(policy, engine)
        repository = policy.repository or self.settings.default_repository
        stored = self._policies()  # whose selections decide whether snapshots are kept
        jobs: list[dict[str, Any]] = []
        refused: list[dict[str, str]] = []
        for vm in vms:
            outcome = self._start_backup(policy, vm, repository, facts, stored)
            (jobs if "job_id" in outcome else refused).append(outcome)
        log.info("policy run", policy=name, jobs=len(jobs), refused=len(refused))
        return {"policy": name, "vms": len(vms), "jobs": jobs, "refused": refused}

    def _policy_manager(self, policy: Policy) -> mgr.Manager:
        try:
            return self._manager(policy.manager)
        except NotFound:
            raise ConfigError(
                f"policy {policy.name!r} names manager {policy.manager!r}, which is not registered",
                hint=f"add it with `drover manager add {policy.manager} ...` "
                "or change the policy's manager",
            ) from None

    def _select_vms(self, policy: Policy, engine: EngineLike) -> list[VmInfo]:
        s = policy.vms
        found = engine.find_vms(list(s.names), list(s.patterns), list(s.tags), list(s.clusters))
        return [vm for vm in found if not is_proxy(vm)]

    def _facts_source(self, policy: Policy, engine: EngineLike) -> _Facts:
        """What the mode is chosen from, read once per run: the engine's version for image
        transfer and auto (an engine before 4.4 needs snapshot chains), the storage domains
        for auto only, and the live queues (auto chooses by them; a VM whose job's queues no
        live worker consumes is refused, see `_start_backup`)."""
        version = EngineVersion(0, 0)  # not read: the mode does not depend on it
        if policy.mode in VERSIONED_MODES:
            version = engine.version()
        live = self._live_queues()
        if policy.mode != "auto":
            return _Facts(version, {}, live)
        domains = {sd.id: sd.type for sd in engine.storage_domains()}
        return _Facts(version, domains, live)

    def _start_backup(
        self,
        policy: Policy,
        vm: VmInfo,
        repository: str,
        facts: _Facts,
        stored: Sequence[Policy] = (),
    ) -> dict[str, Any]:
        try:
            choice = choose_mode(policy.mode, facts.of(vm), snapshot_chain=policy.snapshot_chain)
        except ConfigError as error:
            return _refusal(vm, str(error))
        queues = job_queues(choice.mode, vm.cluster_name, backup=True)
        unserved = no_consumer(queues, facts.live_queues, vm.cluster_name)
        if unserved:  # refused before a job, a lock or anything on the engine exists
            return _refusal(vm, unserved)
        request = backup_request(policy, vm, new_job_id(), repository, choice, stored)
        outcome = queue_backup(
            self.state, self.submit_backup, request, vm, queues[-1], choice.reason
        )
        if isinstance(outcome, Queued):
            self.state.save_queues(outcome.job_id, queues)
            return {"job_id": outcome.job_id, "vm": vm.name, "vm_id": vm.id, "disks": outcome.disks}
        return _refusal(vm, outcome.reason)

    # jobs ------------------------------------------------------------------------------
    def jobs(self, limit: int = 100) -> list[dict[str, Any]]:
        return [job_view(job) for job in self.state.jobs(limit)]

    def job(self, job_id: str) -> dict[str, Any]:
        job = self._job(job_id)
        view = job_view(job)
        view["queues"] = self.state.queues(job_id)  # whose workers the job needs
        if job.mode == "restore" and job.status.finished:
            view["result"] = self.state.context(job_id)  # the restored VM and its checksums
        return view

    def _job(self, job_id: str) -> JobState:
        job = self.state.job(check_job_id(job_id))
        if job is None:
            raise NotFound(f"job {job_id!r} does not exist", hint="list jobs with `drover jobs`")
        return job

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        """Stop a job that has not finished: mark it cancelling, re-fence its VM lock (a
        step of it fails its next fence check, so touches nothing more on the engine),
        revoke its Celery tasks (terminating the one running), close what it made on the
        engine through its mode's cleanup (the reaper's), then fail it "cancelled by the
        operator" and release the VM."""
        job = self._job(job_id)
        if job.status.finished or not self.state.request_cancel(job_id):
            job = self._job(job_id)
            raise Conflict(
                f"job {job_id} has already finished ({job.status}): there is nothing to cancel",
                hint=f"see it with `drover jobs {job_id}`",
            )
        backup = job.mode != "restore"
        if backup:
            self.state.refence_vm(job.vm_id, job_id)
        revoked = self._revoke(job)
        cleanup = self._clean(job)
        outcome = self.state.fail_once(job_id, CANCELLED)
        if backup:
            self.state.unlock_vm(job.vm_id, job_id)
        if cleanup.action == "failed":
            self.state.add_warning(
                job_id, f"cleanup incomplete: {cleanup.why} (`drover reap` finishes it)"
            )
        log.info("job cancelled", job_id=job_id, revoked=len(revoked), cleanup=cleanup.action)
        view = self.job(job_id)
        view["cancelled"] = outcome != FailOutcome.ALREADY_SUCCEEDED  # else it won the race
        view["revoked_tasks"] = revoked
        view["cleanup"] = {"action": cleanup.action, "why": cleanup.why, "objects": cleanup.objects}
        return view

    def _revoke(self, job: JobState) -> list[str]:
        """Revoke the job's tasks (a restore's task id is its job id); a failure is only
        logged: the fence stops the job's steps anyway."""
        task_ids = sorted({*self.state.tasks(job.id), *([job.id] if job.mode == "restore" else [])})
        try:
            if task_ids:
                self.revoke(task_ids)
        except Exception as e:
            log.warning("revoking the job's tasks failed", job_id=job.id, error=str(e))
            self.state.add_warning(job.id, f"its tasks could not be revoked: {e}")
        return task_ids

    def _clean(self, job: JobState) -> Reaped:
        why = CANCELLED
        try:
            if self.clean_job is not None:
                return self.clean_job(job, why)
            return clean_job(self.state, self._connect_manager, job, why)
        except Exception as e:  # an engine that is down: the reaper retries later
            log.warning("cleaning up the cancelled job failed", job_id=job.id, error=str(e))
            return Reaped(job.id, job.vm_name, "failed", f"{why}; cleaning failed: {e}", {})

    @property
    def _connect_manager(self) -> ConnectEngine:
        def connect(name: str) -> Any:
            return self.connect(self._manager(name).engine_settings())

        return connect

    # health ----------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """Redis, and the queues live workers consume: `degraded` when Redis does not
        answer or no live worker consumes the control queue (no backup could run)."""
        try:
            self.state.redis.ping()
        except Exception:
            return {"status": "degraded", "redis": "unreachable"}
        try:
            live = self.live_queues()
            workers = len(self.state.live_workers())
        except Exception as e:
            return {"status": "degraded", "redis": "ok", "workers": f"not answering: {e}"}
        unserved = [q for q in CENTRAL_QUEUES if q not in live]
        problems = [no_consumer([q], live, "") for q in unserved]
        return {
            "status": "degraded" if CONTROL_QUEUE in unserved else "ok",
            "redis": "ok",
            "workers": workers,  # announced (a Redis broker's workers announce themselves)
            "queues": sorted(live),
            "unserved": unserved,
            "problems": problems,
        }

    # backups and restores --------------------------------------------------------------
    def backups(self, repository: str = "") -> list[dict[str, Any]]:
        """`repository` is a client's: checked (`check_repository`); empty: the settings'."""
        location = self._location(repository)
        try:
            if "://" not in location and not Path(location).exists():
                return []
            return [backup_view(b) for b in self.open_repository(location).list_backups()]
        except OSError as e:
            raise ConfigError(
                f"cannot read repository {quoted(location)}: {e.strerror or e}",
                hint="check the repository location and its permissions on the API host",
            ) from None

    def _location(self, repository: str) -> str:
        return check_repository(repository) if repository else self.settings.default_repository

    def backup(self, backup_id: str, repository: str = "") -> dict[str, Any]:
        check_backup_id(backup_id)
        for backup in self.backups(repository):
            if backup["backup_id"] == backup_id:
                return backup
        location = self._location(repository)
        raise NotFound(
            f"backup {backup_id!r} is not in repository {location}",
            hint="list backups with `drover backups`",
        )

    def remove_backup(self, backup_id: str, repository: str = "") -> dict[str, Any]:
        """Forget one backup and collect the chunks only it used; 409 while another backup or
        a running job depends on it."""
        from shared.backup.retention import BackupInUse, remove_backup

        check_backup_id(backup_id)
        location = self._location(repository)
        repo: Any = self.open_repository(location)  # a Repository: it can forget backups
        try:
            return remove_backup(repo, self.state, backup_id)
        except BackupInUse as e:
            raise Conflict(e.message, hint=e.hint) from None

    def prune(self, repository: str = "", dry_run: bool = False) -> dict[str, Any]:
        """Every policy's retention on every VM of a repository, then garbage collection."""
        from shared.backup.retention import apply_retention

        location = self._location(repository)
        repo: Any = self.open_repository(location)  # a Repository: it can forget backups
        return apply_retention(repo, self.state, dry_run=dry_run).to_dict()

    def restore(self, data: dict[str, Any]) -> dict[str, Any]:
        spec = _restore_input(data)
        backup = self.backup(spec.backup_id, spec.repository)
        repository = self._location(spec.repository)
        manager = self._restore_manager(spec.manager)
        mode = _restore_mode(spec.mode, backup)
        cluster = spec.cluster or _backup_cluster(backup)  # where the VM is created
        queues = self._restore_queues(mode, cluster, spec.backup_id)
        request = RestoreRequest(
            job_id=new_job_id(),
            manager=manager,
            repository=repository,
            backup_id=spec.backup_id,
            name=spec.name,
            cluster=spec.cluster,
            storage_domain=spec.storage_domain,
            mode=mode,
        )
        job = JobState(
            id=request.job_id,
            vm_id=backup["vm_id"],
            vm_name=backup["vm_name"],
            manager=manager,
            mode="restore",
            kind="restore",
            backup_id=spec.backup_id,
        )
        self.state.create_job(job)
        self.state.save_queues(request.job_id, queues)
        self._submit_restore(request, queues[-1])
        return {"job_id": request.job_id, "backup_id": spec.backup_id, "manager": manager}

    def _restore_queues(self, mode: str, cluster: str, backup_id: str) -> list[str]:
        """The restore's queue; Conflict unless a live worker consumes it (a proxy mode's:
        a proxy worker of the target `cluster`)."""
        if mode in PROXY_MODES and not cluster:
            raise ConfigError(
                f"mode {mode} writes the disks through a proxy VM of the target cluster, and "
                f"backup {backup_id} does not record its VM's cluster",
                hint="name the cluster to restore into (--cluster, `cluster`)",
            )
        queues = job_queues(mode, cluster, backup=False)
        unserved = no_consumer(queues, self._live_queues(), cluster)
        if unserved:
            raise Conflict(unserved)
        return queues

    def _live_queues(self) -> set[str]:
        try:
            return self.live_queues()
        except Exception as e:
            raise ServiceError(
                f"could not ask the workers which queues they serve: {e}",
                hint="check that the broker is reachable",
            ) from e

    def _restore_manager(self, name: str) -> str:
        if name:
            return self._manager(name).name
        names = [d["name"] for d in self.state.documents(mgr.KIND)]
        if len(names) == 1:
            return str(names[0])
        raise ConfigError(
            "name the manager to restore through"
            if names
            else "no manager is registered to restore through",
            hint=f"pass manager (one of: {', '.join(names)})"
            if names
            else "add one with `drover manager add NAME ...`",
        )

    def _submit_restore(self, request: RestoreRequest, queue: str) -> None:
        try:
            self.submit_restore(request, queue)
        except Exception as e:
            error = f"could not queue the restore: {e}"
            self.state.set_status(request.job_id, JobStatus.FAILED, error)
            raise ServiceError(error, hint="check that the broker is reachable") from e


# queues and their workers ------------------------------------------------------------------


def job_queues(mode: str, cluster: str, *, backup: bool) -> list[str]:
    """The queues a job needs a live consumer of, its mode's last: a backup's steps run on
    the control queue, its transfers (a restore as a whole) on the mode's queue."""
    transfer = mode_for(mode).queue(cluster)
    return list(dict.fromkeys([*([CONTROL_QUEUE] if backup else []), transfer]))


def no_consumer(queues: Sequence[str], live: set[str], cluster: str) -> str:
    """Why a job on `queues` cannot run now and what to start; "" when every queue has a
    live consumer."""
    missing = [q for q in queues if q not in live]
    proxy = [q for q in missing if cluster and q == proxy_queue(cluster)]
    central = [q for q in missing if q not in proxy]
    reasons = []
    if central:
        names = ", ".join(central)
        reasons.append(
            f"no live worker consumes queue{'s' if len(central) > 1 else ''} {names}: "
            f"start one with `drover worker --queues {','.join(central)}`"
        )
    if proxy:
        reasons.append(registry.no_live_proxy(cluster))
    return "; ".join(reasons)


# checks of what clients give -------------------------------------------------------------


def quoted(value: str) -> str:
    """`value` quoted for an error message, cut to MAX_QUOTED_CHARS."""
    if len(value) > MAX_QUOTED_CHARS:
        return repr(value[:MAX_QUOTED_CHARS]) + f"... ({len(value)} characters)"
    return repr(value)


def check_job_id(job_id: str) -> str:
    """Job ids become Redis keys: only what `new_job_id` makes is one (404 otherwise)."""
    if not JOB_ID.fullmatch(job_id):
        raise NotFound(
            f"job {quoted(job_id)} does not exist: job ids are 32 lowercase hexadecimal digits",
            hint="list jobs with `drover jobs`",
        )
    return job_id


def check_backup_id(backup_id: str) -> str:
    """A backup id as the repository checks it (`check_id`), quoted only in part."""
    try:
        return check_id(backup_id, "backup id")
    except ConfigError as e:
        raise ConfigError(f"backup id {quoted(backup_id)} is not valid", hint=e.hint) from None


def check_repository(location: str) -> str:
    """A repository location from a client: an absolute path or a file:// URL whose path the
    filesystem can take (S3 is not supported yet)."""
    shown = f"repository {quoted(location)}"
    check_length(location)
    path = _repository_path(location, shown)
    if not (location.isprintable() and path.isprintable()):
        raise ConfigError(f"{shown} contains control characters", hint=REPOSITORY_HINT)
    if not path.startswith("/"):
        raise ConfigError(f"{shown} is not an absolute path", hint=REPOSITORY_HINT)
    if any(len(part.encode()) > MAX_NAME_BYTES for part in path.split("/")):
        raise ConfigError(f"{shown} has a path component longer than {MAX_NAME_BYTES} bytes")
    return location


def check_length(location: str) -> None:
    if len(location) > MAX_LOCATION_CHARS:
        raise ConfigError(
            f"repository {quoted(location)} is longer than {MAX_LOCATION_CHARS} characters",
            hint=REPOSITORY_HINT,
        )


def _repository_path(location: str, shown: str) -> str:
    if "://" not in location:
        return location
    try:
        url = urlparse(location)
    except ValueError:
        raise ConfigError(f"{shown} is not a valid URL", hint=REPOSITORY_HINT) from None
    if url.scheme == "s3":
        raise ConfigError(
            f"{shown}: S3 repositories are not supported yet",
            hint="use a filesystem path or a file:// URL (an S3 bucket can be mounted)",
        )
    if url.scheme != "file":
        raise ConfigError(f"{shown} is neither a path nor a file:// URL", hint=REPOSITORY_HINT)
    if url.netloc not in ("", "localhost") or url.params or url.query or url.fragment:
        raise ConfigError(
            f"{shown} is not a plain file:// URL of this host", hint="write file:///path"
        )
    return unquote(url.path)


# views and helpers ---------------------------------------------------------------------


def job_view(job: JobState) -> dict[str, Any]:
    data = job.to_dict()
    data["finished"] = job.status.finished
    data["size"] = sum(d.size for d in job.disks)
    data["bytes_read"] = sum(d.bytes_read for d in job.disks)
    data["rate_bps"] = sum(round(d.rate_bps) for d in job.disks if not job.status.finished)
    data["workers"] = sorted({d.worker for d in job.disks if d.worker})  # per disk: disks[].worker
    return data


def backup_view(backup: Any) -> dict[str, Any]:
    data = dict(backup.to_dict() if hasattr(backup, "to_dict") else backup)
    data["disks"] = [
        {k: v for k, v in disk.items() if k != "chunks"} for disk in data.get("disks", [])
    ]
    data.pop("ovf", None)
    return data


@dataclass(frozen=True)
class _Facts:
    engine_version: EngineVersion
    storage_types: dict[str, str]  # storage domain id -> type
    live_queues: set[str]

    def of(self, vm: VmInfo) -> VmFacts:
        return VmFacts(
            engine_version=self.engine_version,
            disk_formats=tuple(d.format for d in vm.disks),
            storage_types=tuple(self.storage_types.get(d.storage_domain_id, "") for d in vm.disks),
            proxy_worker=self.serves(vm.cluster_name),
        )

    def serves(self, cluster: str) -> bool:
        """Does a live worker consume the cluster's proxy queue?"""
        return proxy_queue(cluster) in self.live_queues


def _proxy_view(status: registry.ProxyStatus, vm: VmInfo) -> dict[str, Any]:
    """One proxy VM of a cluster as `drover manager sync` shows it."""
    record = status.record
    return {
        "vm": vm.name,
        "vm_id": vm.id,
        "worker": record.worker,
        "alive": status.alive,
        "queue": record.queue,  # the worker's; not the cluster's when the VM moved since
        "last_seen": record.last_seen,
    }


def _serves(cluster: str, proxies: Sequence[dict[str, Any]]) -> bool:
    return any(p["alive"] and p["queue"] == proxy_queue(cluster) for p in proxies)


def _backup_cluster(backup: dict[str, Any]) -> str:
    """The cluster the backed-up VM was in (recorded by backups since placement was)."""
    placement = (backup.get("stats") or {}).get("placement") or {}
    return str(placement.get("cluster") or "")


def next_run(policy: Policy) -> dict[str, str] | None:
    """The policy's next scheduled run, in its time zone and in UTC (shared.schedules)."""
    if policy.schedule is None:
        return None
    return next_run_view(policy.schedule.cron, policy.schedule.timezone)


def _refusal(vm: VmInfo, reason: str) -> dict[str, str]:
    return {"vm": vm.name, "vm_id": vm.id, "reason": reason}


def _with_name(data: dict[str, Any], name: str) -> dict[str, Any]:
    given = data.get("name")
    if given not in (None, name):
        raise ConfigError(
            f"the policy body is named {given!r} but the URL names {name!r}",
            hint="make them the same, or leave name out of the body",
        )
    return {**data, "name": name}


def _restore_mode(requested: str, backup: dict[str, Any]) -> str:
    """The backup's own mode unless another is asked for: every backup is a full image, so any
    mode's disk sink can write it."""
    mode = requested or backup.get("mode") or "image_transfer"  # before modes existed
    mode_for(mode)  # refuses a mode this version does not have
    return mode


def _restore_input(data: dict[str, Any]) -> RestoreIn:
    try:
        return RestoreIn.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"restore: {describe_errors(e, RestoreIn)}") from None


def build_service(settings: Settings) -> Service:
    """The service wired to the real engine client, Celery app and repository."""
    from shared.repository.repository import Repository
    from workers import beat, canvas
    from workers.app import create_app

    app = create_app(settings)
    state = StateStore.from_url(settings.redis_url)
    return Service(
        state=state,
        settings=settings,
        connect=mgr.connect,  # EngineClient.connect, failing fast on an engine that is silent
        submit_backup=functools.partial(submit_recorded, app, state),
        submit_restore=functools.partial(canvas.submit_restore, app),
        open_repository=functools.partial(Repository.open, create=False),
        live_queues=state.live_queues,  # as the workers announce them (workers.liveness)
        revoke=functools.partial(revoke_tasks, app),
        sync_schedule=functools.partial(beat.sync_policy, app, settings),
    )


def submit_recorded(app: Any, state: StateStore, request: Any, queue: str) -> None:
    """Queue a backup's canvas and record its task ids under the job (what a cancel
    revokes while they wait in their queues)."""
    from workers import canvas

    result = canvas.backup_canvas(app, request, queue).apply_async()
    state.record_task(request.job_id, *task_ids(result))


def task_ids(result: Any) -> list[str]:
    """Every task id of a submitted canvas: its result, its parents and groups."""
    ids: list[str] = []
    todo = [result]
    while todo:
        found = todo.pop()
        if found is None or getattr(found, "id", None) in ids:
            continue
        ids.append(str(found.id))
        todo.append(getattr(found, "parent", None))
        todo.extend(getattr(found, "results", None) or [])
    return ids


def revoke_tasks(app: Any, task_ids: list[str], timeout_s: float = 1.0) -> None:
    """Revoke tasks on every live worker: a queued one is dropped when it arrives, a running
    one is terminated (SIGTERM to its pool process; its message is acknowledged)."""
    app.control.revoke(task_ids, terminate=True, signal="SIGTERM", reply=True, timeout=timeout_s)
