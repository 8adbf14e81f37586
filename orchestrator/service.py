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
from shared.repository.manifest import check_id
from shared.sealed import fleet_key, opened_fields, sealed_fields
from shared.settings import EngineSettings, Settings
from shared.ssh import credentials
from shared.state import JobState, JobStatus, StateStore, new_job_id

log = get_logger(__name__)
POLICY = "policy"
JOB_ID = re.compile(r"[0-9a-f]{32}")  # what new_job_id() makes: uuid4().hex
MAX_LOCATION_CHARS = 1024  # of a repository location a client gives
MAX_NAME_BYTES = 255  # of one component of a path (NAME_MAX)
MAX_QUOTED_CHARS = 64  # of an input value quoted in an error
REPOSITORY_HINT = "give an absolute path or a file:// URL, e.g. /srv/backups, file:///srv/backups"
VERSIONED_MODES = ("image_transfer", "auto")  # chosen with the engine's version in hand
PROXY_MODES = ("disk_attachment",)  # served only by a proxy worker of the VM's cluster
LIVE_QUEUE_MODES = ("auto", *PROXY_MODES)  # chosen or checked with the live queues in hand


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
        return [p.model_dump(mode="json") for p in self._policies()]

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
        for auto only, the live queues for auto and for the modes a proxy worker serves
        (whose VMs are refused when no live worker serves their cluster)."""
        version = EngineVersion(0, 0)  # not read: the mode does not depend on it
        if policy.mode in VERSIONED_MODES:
            version = engine.version()
        live = self._live_queues() if policy.mode in LIVE_QUEUE_MODES else set()
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
        if choice.mode in PROXY_MODES and not facts.serves(vm.cluster_name):
            return _refusal(vm, registry.no_live_proxy(vm.cluster_name))
        request = backup_request(policy, vm, new_job_id(), repository, choice, stored)
        queue = mode_for(choice.mode).queue(vm.cluster_name)
        outcome = queue_backup(self.state, self.submit_backup, request, vm, queue, choice.reason)
        if isinstance(outcome, Queued):
            return {"job_id": outcome.job_id, "vm": vm.name, "vm_id": vm.id, "disks": outcome.disks}
        return _refusal(vm, outcome.reason)

    # jobs ------------------------------------------------------------------------------
    def jobs(self, limit: int = 100) -> list[dict[str, Any]]:
        return [job_view(job) for job in self.state.jobs(limit)]

    def job(self, job_id: str) -> dict[str, Any]:
        job = self.state.job(check_job_id(job_id))
        if job is None:
            raise NotFound(f"job {job_id!r} does not exist", hint="list jobs with `drover jobs`")
        view = job_view(job)
        if job.mode == "restore" and job.status.finished:
            view["result"] = self.state.context(job_id)  # the restored VM and its checksums
        return view

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

    def restore(self, data: dict[str, Any]) -> dict[str, Any]:
        spec = _restore_input(data)
        backup = self.backup(spec.backup_id, spec.repository)
        repository = self._location(spec.repository)
        manager = self._restore_manager(spec.manager)
        mode = _restore_mode(spec.mode, backup)
        cluster = spec.cluster or _backup_cluster(backup)  # where the VM is created
        if mode in PROXY_MODES:
            self._check_proxy(mode, cluster, spec.backup_id)
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
        self._submit_restore(request, mode_for(request.mode).queue(cluster))
        return {"job_id": request.job_id, "backup_id": spec.backup_id, "manager": manager}

    def _check_proxy(self, mode: str, cluster: str, backup_id: str) -> None:
        """Conflict unless a live proxy worker serves `cluster` (a restore in a proxy mode)."""
        if not cluster:
            raise ConfigError(
                f"mode {mode} writes the disks through a proxy VM of the target cluster, and "
                f"backup {backup_id} does not record its VM's cluster",
                hint="name the cluster to restore into (--cluster, `cluster`)",
            )
        if proxy_queue(cluster) not in self._live_queues():
            raise Conflict(registry.no_live_proxy(cluster))

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
    from workers import canvas
    from workers.app import create_app

    app = create_app(settings)
    return Service(
        state=StateStore.from_url(settings.redis_url),
        settings=settings,
        connect=mgr.connect,  # EngineClient.connect, failing fast on an engine that is silent
        submit_backup=functools.partial(canvas.submit_backup, app),
        submit_restore=functools.partial(canvas.submit_restore, app),
        open_repository=functools.partial(Repository.open, create=False),
        live_queues=functools.partial(canvas.live_queues, app),
    )
