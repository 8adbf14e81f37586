"""Everything Drover keeps in Redis: one place for every key prefix and its meaning.

    drover:manager:<name>            hash   a registered engine (url, username, password, ca_file)
    drover:policy:<name>             string a policy as JSON;   drover:policies  set of names
    drover:job:<id>                  hash   job state (see JobState); the job's request, context and
                                            OVF as JSON fields, written once and read by every step
    drover:job:<id>:engine           hash   engine objects the job made or is about to make, one
                                            field each (recorded before creation; see cleanup)
    drover:job:<id>:warnings         list   warnings, in order
    drover:job:<id>:disk:<disk>      hash   per-disk progress: planned chunks, chunks read (a chunk
                                            read again after a worker died counts twice), bytes,
                                            times
    drover:job:<id>:chunks:<disk>    hash   chunk index -> digest of every chunk already stored
    drover:job:<id>:chunks:<disk>:layer<n>
                                     hash   the same for one qcow2 layer's pass (snapshot-chain
                                            backups copy a disk's layers bottom up, one at a time)
    drover:jobs                      zset   job ids by creation time
    drover:lock:vm:<vm>              string "<fencing token>:<job id>" holding the VM (TTL)
    drover:fence:vm:<vm>             string counter handing out fencing tokens
    drover:worker:<hostname>         string a live worker's presence (TTL, renewed while it runs)
    drover:job:<id>:tasks            set    the Celery task ids of the job (recorded when queued
                                            and when each task starts), which a cancel revokes

A job the operator cancels is `cancelling` (its hash's `cancelled_at` set) while its tasks are
revoked and its mode's cleanup runs, then `failed`; its steps stop at their next check.

Chunk progress is what makes a re-delivered transfer task resume: a chunk whose index is
already in `chunks:<disk>` is stored in the repository and is skipped. A job's fencing token
(JobState.fence) is checked against the VM lock before every engine mutation: a step whose
job no longer holds the VM stops without touching the engine.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from shared.errors import DroverError

PREFIX = "drover"
VM_LOCK_TTL_S = 3600  # renewed by the job while it works
JOB_TTL_S = 30 * 24 * 3600
REDIS_RETRIES = 30  # with backoff capped at 4 s: about REDIS_RETRY_S
REDIS_RETRY_S = 120


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    SUCCEEDED_WITH_WARNINGS = "succeeded_with_warnings"
    FAILED = "failed"
    CANCELLING = "cancelling"  # the operator cancelled it; its cleanup runs, then failed

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = {JobStatus.SUCCEEDED, JobStatus.SUCCEEDED_WITH_WARNINGS, JobStatus.FAILED}


class FailOutcome(IntEnum):
    FAILED_NOW = 0
    ALREADY_FAILED = 1  # a sibling step failed first
    ALREADY_SUCCEEDED = 2  # a late message of a job that ended well


class VmLocked(DroverError):
    """Another job holds the VM; this one must wait or give up."""

    retryable = True


class LostVmLock(DroverError):
    """The job no longer holds its VM (its lock expired or another job took it over)."""


def key(*parts: str) -> str:
    return ":".join((PREFIX, *parts))


def new_job_id() -> str:
    return uuid.uuid4().hex


@dataclass
class DiskProgress:
    disk_id: str
    name: str = ""
    size: int = 0
    planned_chunks: int = 0
    done_chunks: int = 0
    chunks_read: int = 0  # reads by every attempt; above done_chunks: re-read after a kill
    bytes_read: int = 0
    started_at: float = 0.0
    updated_at: float = 0.0
    worker: str = ""  # the Celery worker (hostname) that ran the disk's transfer last

    @property
    def rate_bps(self) -> float:
        elapsed = self.updated_at - self.started_at
        return self.bytes_read / elapsed if elapsed > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"rate_bps": round(self.rate_bps)}


@dataclass
class JobState:
    id: str
    vm_id: str
    vm_name: str = ""
    policy: str = ""
    manager: str = ""
    mode: str = ""
    kind: str = ""  # full | incremental (what the job decided)
    status: JobStatus = JobStatus.QUEUED
    created_at: float = field(default_factory=time.time)
    started_at: float = 0.0
    finished_at: float = 0.0
    backup_id: str = ""
    error: str = ""
    mode_reason: str = ""  # why this mode (auto chooses per VM)
    fence: int = 0  # the fencing token of the job's VM lock
    engine_objects: dict[str, str] = field(default_factory=dict)  # what cleanup must remove
    warnings: list[str] = field(default_factory=list)
    disks: list[DiskProgress] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = str(self.status)
        data["disks"] = [d.to_dict() for d in self.disks]
        return data


_SCALARS = (
    "vm_id",
    "vm_name",
    "policy",
    "manager",
    "mode",
    "kind",
    "backup_id",
    "error",
    "mode_reason",
)
_TIMES = ("created_at", "started_at", "finished_at")


class StateStore:
    """Typed access to Drover's Redis keys."""

    def __init__(self, client: redis.Redis) -> None:
        # decode_responses=True: every reply is str; redis-py's stubs cannot say so.
        self.redis: Any = client

    @classmethod
    def from_url(cls, url: str) -> StateStore:
        """A store whose calls ride out a Redis restart or a dropped connection (retried with
        backoff for about REDIS_RETRY_S) instead of failing the step that made them."""
        return cls(
            redis.Redis.from_url(
                url,
                decode_responses=True,
                retry=Retry(ExponentialWithJitterBackoff(base=0.1, cap=4.0), REDIS_RETRIES),
                retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            )
        )

    # jobs -----------------------------------------------------------------
    def create_job(self, job: JobState) -> None:
        fields = {name: getattr(job, name) for name in _SCALARS}
        fields |= {name: repr(getattr(job, name)) for name in _TIMES}
        fields |= {"status": str(job.status), "fence": job.fence}
        pipe = self.redis.pipeline()
        pipe.hset(key("job", job.id), mapping=fields)
        pipe.expire(key("job", job.id), JOB_TTL_S)
        pipe.zadd(key("jobs"), {job.id: job.created_at})
        pipe.execute()

    def update_job(self, job_id: str, **fields: Any) -> None:
        values = {name: _encode(value) for name, value in fields.items()}
        self.redis.hset(key("job", job_id), mapping=values)

    def set_status(self, job_id: str, status: JobStatus, error: str = "") -> None:
        fields: dict[str, Any] = {"status": status, "error": error}
        if status == JobStatus.RUNNING:
            fields["started_at"] = time.time()
        if status.finished:
            fields["finished_at"] = time.time()
        self.update_job(job_id, **fields)

    def fail_once(self, job_id: str, reason: str) -> FailOutcome:
        """Mark the job failed with `reason` unless it has already ended (atomically: of two
        steps failing at once, the first keeps its reason; a late message of a job that
        succeeded leaves it succeeded)."""
        now = repr(time.time())
        outcome = self.redis.eval(_FAIL_ONCE_SCRIPT, 1, key("job", job_id), reason, now)
        return FailOutcome(int(outcome))

    def request_cancel(self, job_id: str) -> bool:
        """Mark the job cancelling (and when), unless it has already ended: True when it is
        cancelling now (again, for a cancel whose cleanup did not finish)."""
        now = repr(time.time())
        return bool(self.redis.eval(_CANCEL_SCRIPT, 1, key("job", job_id), now))

    def cancel_requested(self, job_id: str) -> bool:
        """Has the operator cancelled the job? Its steps then stop without working."""
        return bool(self.redis.hget(key("job", job_id), "cancelled_at"))

    def record_task(self, job_id: str, *task_ids: str) -> None:
        """Celery task ids of the job (a cancel revokes them)."""
        ids = [t for t in task_ids if t]
        if ids:
            pipe = self.redis.pipeline()
            pipe.sadd(key("job", job_id, "tasks"), *ids)
            pipe.expire(key("job", job_id, "tasks"), JOB_TTL_S)
            pipe.execute()

    def tasks(self, job_id: str) -> list[str]:
        return sorted(self.redis.smembers(key("job", job_id, "tasks")))

    def save_queues(self, job_id: str, queues: list[str]) -> None:
        """The queues whose workers the job needs (what `--wait` names when none takes it)."""
        self.update_job(job_id, queues=json.dumps(queues))

    def queues(self, job_id: str) -> list[str]:
        raw = self.redis.hget(key("job", job_id), "queues")
        return [str(q) for q in json.loads(raw)] if raw else []

    def record_engine_object(self, job_id: str, name: str, value: str) -> None:
        """Record an engine object of the job before it is created (and again with its id
        after), so cleanup finds it after a crash. One field each: parallel steps never
        overwrite each other's records."""
        engine_key = key("job", job_id, "engine")
        pipe = self.redis.pipeline()
        pipe.hset(engine_key, name, value)
        pipe.expire(engine_key, JOB_TTL_S)
        pipe.execute()

    def engine_objects(self, job_id: str) -> dict[str, str]:
        return dict(self.redis.hgetall(key("job", job_id, "engine")))

    def save_request(self, job_id: str, request: dict[str, Any]) -> None:
        """What the job was asked to do, written once when it is queued."""
        self.update_job(job_id, request=json.dumps(request))

    def request(self, job_id: str) -> dict[str, Any] | None:
        return self._json_field(job_id, "request")

    def save_context(self, job_id: str, context: dict[str, Any]) -> None:
        """What the job's steps share (decided in prepare and start)."""
        self.update_job(job_id, context=json.dumps(context))

    def context(self, job_id: str) -> dict[str, Any] | None:
        return self._json_field(job_id, "context")

    def save_ovf(self, job_id: str, ovf: str) -> None:
        self.update_job(job_id, ovf=ovf)

    def ovf(self, job_id: str) -> str:
        return str(self.redis.hget(key("job", job_id), "ovf") or "")

    def _json_field(self, job_id: str, name: str) -> dict[str, Any] | None:
        raw = self.redis.hget(key("job", job_id), name)
        return dict(json.loads(raw)) if raw else None

    def add_warning(self, job_id: str, warning: str) -> None:
        self.redis.rpush(key("job", job_id, "warnings"), warning)
        self.redis.expire(key("job", job_id, "warnings"), JOB_TTL_S)

    def warnings(self, job_id: str) -> list[str]:
        return list(self.redis.lrange(key("job", job_id, "warnings"), 0, -1))

    def job(self, job_id: str) -> JobState | None:
        data = self.redis.hgetall(key("job", job_id))
        if not data:
            return None
        return self._job_from(job_id, data)

    def jobs(self, limit: int = 100) -> list[JobState]:
        ids = self.redis.zrevrange(key("jobs"), 0, limit - 1)
        return [job for job in map(self.job, ids) if job is not None]

    def _job_from(self, job_id: str, data: dict[str, str]) -> JobState:
        job = JobState(id=job_id, vm_id=data.get("vm_id", ""))
        for name in _SCALARS:
            setattr(job, name, data.get(name, ""))
        for name in _TIMES:
            setattr(job, name, float(data.get(name) or 0))
        job.status = JobStatus(data.get("status", JobStatus.QUEUED))
        job.fence = int(data.get("fence") or 0)
        job.engine_objects = self.engine_objects(job_id)
        job.warnings = self.warnings(job_id)
        job.disks = self.disk_progress(job_id)
        return job

    # per-disk progress and chunks -------------------------------------------
    def plan_disk(self, job_id: str, disk: DiskProgress) -> None:
        now = time.time()
        progress_key = key("job", job_id, "disk", disk.disk_id)
        pipe = self.redis.pipeline()
        pipe.hsetnx(progress_key, "started_at", repr(now))
        pipe.hset(
            progress_key,
            mapping={
                "name": disk.name,
                "size": disk.size,
                "planned_chunks": disk.planned_chunks,
                "updated_at": repr(now),
            },
        )
        pipe.hsetnx(progress_key, "bytes_read", 0)
        pipe.sadd(key("job", job_id, "disks"), disk.disk_id)
        for k in (progress_key, key("job", job_id, "disks")):
            pipe.expire(k, JOB_TTL_S)
        pipe.execute()

    def record_chunk(self, job_id: str, disk_id: str, index: int, digest: str, nbytes: int) -> None:
        """Mark one chunk stored; counted once even when a redelivered task stores it again."""
        chunks_key = key("job", job_id, "chunks", disk_id)
        progress_key = key("job", job_id, "disk", disk_id)
        if self.redis.hset(chunks_key, str(index), digest):
            pipe = self.redis.pipeline()
            pipe.hincrby(progress_key, "bytes_read", nbytes)
            pipe.hset(progress_key, "updated_at", repr(time.time()))
            pipe.expire(chunks_key, JOB_TTL_S)
            pipe.execute()

    def record_layer_chunk(
        self, job_id: str, disk_id: str, layer: int, index: int, digest: str, nbytes: int
    ) -> None:
        """One chunk of one layer's pass read and stored ("" for zeros): in the layer's map,
        which a resumed pass skips, and in the disk's, where the upper layer's chunk replaces
        the lower one's because the passes run bottom up. One round trip."""
        layer_key = key("job", job_id, "chunks", disk_id, f"layer{layer}")
        progress_key = key("job", job_id, "disk", disk_id)
        pipe = self.redis.pipeline()
        pipe.hincrby(progress_key, "chunks_read", 1)
        pipe.hset(key("job", job_id, "chunks", disk_id), str(index), digest)
        pipe.hset(layer_key, str(index), digest)
        if digest:
            pipe.hincrby(progress_key, "bytes_read", nbytes)
        pipe.hset(progress_key, "updated_at", repr(time.time()))
        for k in (layer_key, key("job", job_id, "chunks", disk_id)):
            pipe.expire(k, JOB_TTL_S)
        pipe.execute()

    def layer_chunks(self, job_id: str, disk_id: str, layer: int) -> dict[int, str]:
        raw = self.redis.hgetall(key("job", job_id, "chunks", disk_id, f"layer{layer}"))
        return {int(index): digest for index, digest in raw.items()}

    def save_disk_chain(self, job_id: str, disk_id: str, chain: list[dict[str, Any]]) -> None:
        """The qcow2 layers a snapshot-chain backup read for the disk, for its manifest."""
        progress_key = key("job", job_id, "disk", disk_id)
        self.redis.hset(progress_key, "chain", json.dumps(chain))

    def disk_chain(self, job_id: str, disk_id: str) -> list[dict[str, Any]]:
        raw = self.redis.hget(key("job", job_id, "disk", disk_id), "chain")
        return list(json.loads(raw)) if raw else []

    def record_disk_worker(self, job_id: str, disk_id: str, worker: str) -> None:
        """The worker now running the disk's transfer (a re-delivered one replaces it)."""
        self.redis.hset(key("job", job_id, "disk", disk_id), "worker", worker)

    def record_read(self, job_id: str, disk_id: str) -> None:
        self.redis.hincrby(key("job", job_id, "disk", disk_id), "chunks_read", 1)

    def record_skipped(self, job_id: str, disk_id: str, index: int) -> None:
        """A planned chunk that turned out to be zero: done, nothing stored."""
        self.redis.hset(key("job", job_id, "chunks", disk_id), str(index), "")

    def stored_chunks(self, job_id: str, disk_id: str) -> dict[int, str]:
        raw = self.redis.hgetall(key("job", job_id, "chunks", disk_id))
        return {int(index): digest for index, digest in raw.items()}

    def disk_progress(self, job_id: str) -> list[DiskProgress]:
        disk_ids = sorted(self.redis.smembers(key("job", job_id, "disks")))
        return [self._progress(job_id, disk_id) for disk_id in disk_ids]

    def _progress(self, job_id: str, disk_id: str) -> DiskProgress:
        data = self.redis.hgetall(key("job", job_id, "disk", disk_id))
        return DiskProgress(
            disk_id=disk_id,
            name=data.get("name", ""),
            size=int(data.get("size") or 0),
            planned_chunks=int(data.get("planned_chunks") or 0),
            done_chunks=int(self.redis.hlen(key("job", job_id, "chunks", disk_id))),
            chunks_read=int(data.get("chunks_read") or 0),
            bytes_read=int(data.get("bytes_read") or 0),
            started_at=float(data.get("started_at") or 0),
            updated_at=float(data.get("updated_at") or 0),
            worker=data.get("worker", ""),
        )

    # VM locks with fencing tokens -------------------------------------------
    def lock_vm(self, vm_id: str, job_id: str, ttl_s: int = VM_LOCK_TTL_S) -> int:
        """Take the VM for `job_id`; returns a fencing token. Re-entrant for the same job."""
        holder_key = key("lock", "vm", vm_id)
        holder = self.redis.get(holder_key)
        if holder and holder.split(":", 1)[1] == job_id:
            self.redis.expire(holder_key, ttl_s)
            return int(holder.split(":", 1)[0])
        token = int(self.redis.incr(key("fence", "vm", vm_id)))
        if not self.redis.set(holder_key, f"{token}:{job_id}", nx=True, ex=ttl_s):
            raise VmLocked(
                f"VM {vm_id} is being backed up by job {self.vm_lock_holder(vm_id)}",
                hint="wait for that job to finish, or see `drover jobs`",
            )
        return token

    def renew_vm_lock(self, vm_id: str, job_id: str, ttl_s: int = VM_LOCK_TTL_S) -> bool:
        """Keep holding the VM while the job works (a backup may outlast one TTL)."""
        return bool(self.redis.eval(_RENEW_SCRIPT, 1, key("lock", "vm", vm_id), job_id, ttl_s))

    def vm_lock_holder(self, vm_id: str) -> str:
        holder = self.redis.get(key("lock", "vm", vm_id)) or ":"
        return str(holder.split(":", 1)[1])

    def check_vm_lock(self, vm_id: str, job_id: str, token: int) -> None:
        """LostVmLock unless `job_id` holds the VM with fencing token `token`."""
        holder = self.redis.get(key("lock", "vm", vm_id)) or ""
        if holder != f"{token}:{job_id}":
            now = holder.split(":", 1)[-1] or "no job"
            raise LostVmLock(
                f"job {job_id} no longer holds VM {vm_id} (now held by {now})",
                hint="this step was stopped before touching the engine; see `drover jobs`",
            )

    def refence_vm(self, vm_id: str, job_id: str) -> int:
        """Keep the VM for `job_id` under a new fencing token (0 when the job does not hold
        it): its steps, which carry the old token, fail their fence check from now on, while
        no other job can take the VM."""
        token = int(self.redis.incr(key("fence", "vm", vm_id)))
        holder_key = key("lock", "vm", vm_id)
        return int(self.redis.eval(_REFENCE_SCRIPT, 1, holder_key, job_id, f"{token}:{job_id}"))

    def unlock_vm(self, vm_id: str, job_id: str) -> None:
        """Release only if this job still holds the lock (compare and delete)."""
        self.redis.eval(_UNLOCK_SCRIPT, 1, key("lock", "vm", vm_id), job_id)

    @contextmanager
    def vm_locked(self, vm_id: str, job_id: str) -> Iterator[int]:
        token = self.lock_vm(vm_id, job_id)
        try:
            yield token
        finally:
            self.unlock_vm(vm_id, job_id)

    # workers ------------------------------------------------------------------
    def announce_worker(self, hostname: str, ttl_s: int, queues: Iterable[str] = ()) -> None:
        """A live worker and the queues it consumes, for `ttl_s` (its keeper renews it)."""
        value = json.dumps({"at": time.time(), "queues": sorted(queues)})
        self.redis.set(key("worker", hostname), value, ex=ttl_s)

    def forget_worker(self, hostname: str) -> None:
        self.redis.delete(key("worker", hostname))

    def live_workers(self) -> list[str]:
        prefix = key("worker", "")
        return sorted(k[len(prefix) :] for k in self.redis.scan_iter(match=prefix + "*"))

    def live_queues(self) -> set[str]:
        """The queues the live workers consume, as they announced them: read at Redis speed,
        where asking the workers (a broadcast) waits out its whole timeout for late ones."""
        found: set[str] = set()
        for worker_key in self.redis.scan_iter(match=key("worker", "") + "*"):
            found |= _announced_queues(self.redis.get(worker_key))
        return found

    # documents: managers and policies -----------------------------------------
    def put_document(self, kind: str, name: str, document: dict[str, Any]) -> None:
        pipe = self.redis.pipeline()
        pipe.set(key(kind, name), json.dumps(document))
        pipe.sadd(key(kind + "s"), name)
        pipe.execute()

    def document(self, kind: str, name: str) -> dict[str, Any] | None:
        raw = self.redis.get(key(kind, name))
        return dict(json.loads(raw)) if raw else None

    def documents(self, kind: str) -> list[dict[str, Any]]:
        names = sorted(self.redis.smembers(key(kind + "s")))
        return [doc for doc in (self.document(kind, n) for n in names) if doc is not None]

    def remove_document(self, kind: str, name: str) -> bool:
        pipe = self.redis.pipeline()
        pipe.delete(key(kind, name))
        pipe.srem(key(kind + "s"), name)
        return bool(pipe.execute()[0])


_UNLOCK_SCRIPT = """
local holder = redis.call('get', KEYS[1])
if holder and string.sub(holder, string.find(holder, ':') + 1) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


_FAIL_ONCE_SCRIPT = """
local status = redis.call('hget', KEYS[1], 'status')
if status == 'failed' then
  return 1
end
if status == 'succeeded' or status == 'succeeded_with_warnings' then
  return 2
end
redis.call('hset', KEYS[1], 'status', 'failed', 'error', ARGV[1], 'finished_at', ARGV[2])
return 0
"""


_CANCEL_SCRIPT = """
local status = redis.call('hget', KEYS[1], 'status')
if not status or status == 'failed' or status == 'succeeded'
    or status == 'succeeded_with_warnings' then
  return 0
end
redis.call('hset', KEYS[1], 'status', 'cancelling')
redis.call('hsetnx', KEYS[1], 'cancelled_at', ARGV[1])
return 1
"""


_REFENCE_SCRIPT = """
local holder = redis.call('get', KEYS[1])
if holder and string.sub(holder, string.find(holder, ':') + 1) == ARGV[1] then
  local ttl = redis.call('ttl', KEYS[1])
  if ttl > 0 then
    redis.call('set', KEYS[1], ARGV[2], 'EX', ttl)
  else
    redis.call('set', KEYS[1], ARGV[2])
  end
  return tonumber(string.sub(ARGV[2], 1, string.find(ARGV[2], ':') - 1))
end
return 0
"""


_RENEW_SCRIPT = """
local holder = redis.call('get', KEYS[1])
if holder and string.sub(holder, string.find(holder, ':') + 1) == ARGV[1] then
  return redis.call('expire', KEYS[1], ARGV[2])
end
return 0
"""


def _encode(value: Any) -> str | int | float:
    if isinstance(value, StrEnum):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int | str):
        return value
    return json.dumps(value)


def _announced_queues(raw: str | None) -> set[str]:
    """A worker announcement's queues (none for a worker that has gone meanwhile)."""
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        return set()
    queues = data.get("queues", []) if isinstance(data, dict) else []
    return {str(q) for q in queues}
