"""Backup policies: the model, its YAML form, validation messages and expansion into jobs.

A policy selects VMs (by name, pattern, tag, cluster), says how to back them up (mode,
full/incremental rhythm, quiescing, guest commands, excluded disks, priority), where to
(repository), when (schedule) and how long to keep backups (retention). Unknown keys are
refused so a typo never silently changes what is backed up.

The model also describes features that have not landed yet (the disk_attachment mode, S3
repositories), so stored policies keep loading; `orchestrator.support`
refuses those features when a policy is applied or run.

`selects` tells, without the engine, whether a policy's selector selects a VM the engine
returned, as the engine's search does; a backup keeps its snapshot for the next incremental
when any policy of the VM's manager that selects it is incremental (`keep_snapshot`).
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shared.engine.models import VmInfo
from shared.errors import ConfigError
from shared.jobs import BackupRequest, GuestCommand
from shared.repository.retention import RetentionRules
from shared.schedules.cron import Cron, zone

if TYPE_CHECKING:  # the CLI parses policies without importing the transfer modes
    from shared.modes.auto import ModeChoice

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
NAME_HINT = "use letters, digits, '.', '_' and '-' (at most 63, starting with a letter or digit)"
PROXY_TAG = "drover-proxy"
Mode = Literal["image_transfer", "ssh", "disk_attachment", "auto"]
SNAPSHOT_CHAIN_MODES = ("image_transfer", "auto")  # the modes `snapshot_chain` applies to
NETCAT_MODES = ("ssh",)  # the modes `netcat` applies to
_REQUEST_PARTS = ("body", "query", "path")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VmSelector(_Strict):
    """VMs matching any name or pattern, carrying any tag, within any listed cluster."""

    names: list[str] = Field(default_factory=list)
    patterns: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    clusters: list[str] = Field(default_factory=list)

    @field_validator("names", "patterns", "tags", "clusters")
    @classmethod
    def _no_blank(cls, values: list[str]) -> list[str]:
        if any(not v.strip() for v in values):
            raise ValueError("entries must not be empty")
        return values

    @model_validator(mode="after")
    def _not_empty(self) -> VmSelector:
        if not (self.names or self.patterns or self.tags or self.clusters):
            raise ValueError(
                "the selector selects no VM: give at least one of names, patterns, tags or "
                "clusters (patterns: ['*'] selects every VM)"
            )
        return self


class Schedule(_Strict):
    """When the scheduler (`drover beat`) runs the policy: a cron expression read in an IANA
    time zone (shared.schedules.cron says how DST changes are handled)."""

    cron: str
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        cron = Cron.parse(value)  # ValueError: says what is wrong
        if cron.never_runs():
            raise ValueError(f"{value!r} names no date that exists: it would never run")
        return cron.expression

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        zone(value)
        return value


class BackupRhythm(_Strict):
    type: Literal["full", "incremental"] = "incremental"
    full_every: int = Field(default=7, ge=1, le=1000)  # every N-th backup of a chain is full


class Retention(_Strict):
    """How many backups to keep per VM: the last N, and the newest of each of the last N days,
    ISO weeks and months (GFS, in UTC). A backup kept by any rule is kept, and so is the chain
    of parents of a kept incremental (`shared.repository.retention`). All unset keeps
    everything."""

    keep_last: int | None = Field(default=None, ge=1, le=100_000)
    keep_daily: int | None = Field(default=None, ge=1, le=100_000)
    keep_weekly: int | None = Field(default=None, ge=1, le=10_000)
    keep_monthly: int | None = Field(default=None, ge=1, le=10_000)

    @model_validator(mode="before")
    @classmethod
    def _no_keep_days(cls, data: Any) -> Any:
        if isinstance(data, dict) and "keep_days" in data:
            raise ValueError(
                "keep_days was replaced by keep_daily (the newest backup of each of the last "
                "N days that have one), keep_weekly and keep_monthly"
            )
        return data

    def rules(self) -> RetentionRules:
        return RetentionRules(self.keep_last, self.keep_daily, self.keep_weekly, self.keep_monthly)


class GuestCommandSpec(_Strict):
    command: str = Field(min_length=1)
    host: str = Field(min_length=1)
    # the guest's SSH host key, pinned: "ssh-ed25519 AAAA..." or "SHA256:..." (ssh-keygen -lf)
    host_key: str = Field(min_length=1)
    user: str = "root"
    port: int = Field(default=22, ge=1, le=65535)
    key_file: str = ""

    def to_guest_command(self) -> GuestCommand:
        return GuestCommand(**self.model_dump())


class Policy(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    manager: str = Field(pattern=NAME_PATTERN)
    repository: str = ""  # empty: the settings' repository
    vms: VmSelector
    mode: Mode = "auto"
    # image_transfer (or what auto chooses) through snapshot chains, not the backup API; engines
    # before 4.4 get them whatever this says
    snapshot_chain: bool = False
    netcat: bool = False  # ssh: the data over a plain TCP connection (nc), not the SSH session
    schedule: Schedule | None = None
    backup: BackupRhythm = Field(default_factory=lambda: BackupRhythm())
    retention: Retention = Field(default_factory=lambda: Retention())
    exclude_disks: list[str] = Field(default_factory=list)
    quiesce: bool = True
    pre_snapshot: GuestCommandSpec | None = None
    post_snapshot: GuestCommandSpec | None = None
    priority: int = Field(default=5, ge=0, le=9)

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str) -> str:
        if value and not (value.startswith("/") or "://" in value):
            raise ValueError(
                f"{value!r} is neither an absolute path nor a URL such as file:///srv/backups"
            )
        return value

    @field_validator("snapshot_chain")
    @classmethod
    def _snapshot_chain(cls, value: bool, info: ValidationInfo) -> bool:
        mode = info.data.get("mode")
        if not value or mode is None or mode in SNAPSHOT_CHAIN_MODES:
            return value
        why = (
            "mode ssh always reads snapshot chains off the hypervisor"
            if mode == "ssh"
            else f"mode {mode} does not read snapshot chains"
        )
        raise ValueError(
            f"applies to mode image_transfer or auto only, and {why}: "
            "remove snapshot_chain, or use mode image_transfer"
        )

    @field_validator("netcat")
    @classmethod
    def _netcat(cls, value: bool, info: ValidationInfo) -> bool:
        mode = info.data.get("mode")
        if not value or mode is None or mode in NETCAT_MODES:
            return value
        raise ValueError(
            "applies to mode ssh only (the data over a plain TCP connection from the "
            f"hypervisor), not to mode {mode}: remove netcat, or use mode ssh"
        )

    @model_validator(mode="after")
    def _mode_fits_rhythm(self) -> Policy:
        if self.mode == "disk_attachment" and self.backup.type == "incremental":
            raise ValueError(
                "mode disk_attachment makes full backups only: set backup: {type: full}, "
                "or use mode image_transfer or ssh for incrementals"
            )
        return self


# validation and YAML ------------------------------------------------------------------


def validate_policy(data: Any, where: str = "") -> Policy:
    """A Policy from a mapping, or a ConfigError saying every problem found."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'a policy'} must be a mapping, not {type(data).__name__}")
    try:
        return Policy.model_validate(data)
    except ValidationError as e:
        label = f"policy {data['name']!r}" if isinstance(data.get("name"), str) else "policy"
        prefix = f"{where}: {label}" if where else label
        raise ConfigError(
            f"{prefix}: {describe_errors(e, Policy)}",
            hint="see the policy reference in README.md",
        ) from None


def parse_policies(text: str, source: str = "policy file") -> list[Policy]:
    """One policy, a list of policies, or a list under `policies:`."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source} is not valid YAML: {e}") from None
    items = _policy_items(data, source)
    policies = [validate_policy(item, f"{source} (policy {i + 1})") for i, item in enumerate(items)]
    _no_duplicates(policies, source)
    return policies


def _policy_items(data: Any, source: str) -> list[Any]:
    if isinstance(data, dict) and set(data) == {"policies"}:
        data = data["policies"]
    if isinstance(data, dict):
        return [data]
    if isinstance(data, list) and data:
        return data
    raise ConfigError(
        f"{source} holds no policy",
        hint="write one policy as a mapping, or a list of them under `policies:`",
    )


def _no_duplicates(policies: Sequence[Policy], source: str) -> None:
    names = [p.name for p in policies]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"{source} defines policy {repeated[0]!r} more than once")


def describe_errors(error: ValidationError, model: type[BaseModel] | None) -> str:
    """pydantic errors as one line an operator can act on."""
    return describe_error_items(list(error.errors()), model)


def describe_error_items(items: Sequence[Any], model: type[BaseModel] | None) -> str:
    return "; ".join(_describe(item, model) for item in items) or "invalid input"


def _describe(item: Any, model: type[BaseModel] | None) -> str:
    loc = [str(p) for p in item.get("loc", ())]
    if loc and loc[0] in _REQUEST_PARTS:
        loc = loc[1:]
    where = ".".join(loc) or "the body"
    kind = item.get("type", "")
    if kind == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(model, loc[:-1]))
        return f"unknown key {where!r}" + (f" (allowed here: {allowed})" if allowed else "")
    if kind == "missing":
        return f"{where} is required"
    if kind == "string_pattern_mismatch":
        return f"{where} {item.get('input')!r} is not a valid name: {NAME_HINT}"
    message = str(item.get("msg", "is invalid")).removeprefix("Value error, ")
    return f"{where}: {message[:1].lower()}{message[1:]}"


def _allowed_keys(model: type[BaseModel] | None, path: list[str]) -> list[str]:
    current: Any = model
    for part in path:
        field = current.model_fields.get(part) if _is_model(current) else None
        current = _model_in(field.annotation) if field else None
    return list(current.model_fields) if _is_model(current) else []


def _model_in(annotation: Any) -> Any:
    if _is_model(annotation):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return next((a for a in typing.get_args(annotation) if _is_model(a)), None)
    return None


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


# expansion into jobs ------------------------------------------------------------------


def is_proxy(vm: VmInfo) -> bool:
    return PROXY_TAG in (vm.tags or [])


def backup_request(
    policy: Policy,
    vm: VmInfo,
    job_id: str,
    repository: str,
    choice: ModeChoice,
    policies: Iterable[Policy] = (),
) -> BackupRequest:
    """The request for one VM; `choice` is the policy's mode, or what `auto` chose for this VM.

    `policies` are the stored policies: the VM's snapshot is kept for the next incremental
    when any of them (or `policy`) of the same manager selects the VM and is incremental.
    """
    pre, post = policy.pre_snapshot, policy.post_snapshot
    return BackupRequest(
        job_id=job_id,
        policy=policy.name,
        manager=policy.manager,
        vm_id=vm.id,
        vm_name=vm.name,
        repository=repository,
        mode=choice.mode,
        incremental=policy.backup.type == "incremental",
        full_every=policy.backup.full_every,
        excluded_disks=tuple(policy.exclude_disks),
        quiesce=policy.quiesce,
        pre_command=pre.to_guest_command() if pre else None,
        post_command=post.to_guest_command() if post else None,
        priority=policy.priority,
        keep_snapshot=keeps_snapshot(policy, vm, policies),
        snapshot_chain=choice.snapshot_chain,
        netcat=policy.netcat,
    )


def keeps_snapshot(policy: Policy, vm: VmInfo, policies: Iterable[Policy] = ()) -> bool:
    """Is the VM's last snapshot kept on the hypervisor for the next incremental? Yes when at
    least one policy of the manager that selects the VM (`policy` selected it) is incremental."""
    if policy.backup.type == "incremental":
        return True
    return any(
        other.manager == policy.manager
        and other.backup.type == "incremental"
        and selects(other.vms, vm)
        for other in policies
    )


# selecting VMs without the engine -------------------------------------------------------


def selects(selector: VmSelector, vm: VmInfo) -> bool:
    """Does the engine's search (`shared.engine.inventory.find_vms`) select the VM?

    (any name or any pattern) and (any tag) and (any cluster); a criterion left empty does
    not filter. As the engine's search: case is ignored, and in patterns, tags and clusters
    `*` matches any run of characters; a name is compared whole (VM names hold no `*`).
    """
    if (selector.names or selector.patterns) and not (
        any(_same(vm.name, name) for name in selector.names)
        or any(_like(vm.name, pattern) for pattern in selector.patterns)
    ):
        return False
    if selector.tags and not any(_like(tag, want) for tag in vm.tags for want in selector.tags):
        return False
    return not selector.clusters or any(_like(vm.cluster_name, c) for c in selector.clusters)


def _same(actual: str, wanted: str) -> bool:
    return actual.casefold() == wanted.casefold()


def _like(actual: str, pattern: str) -> bool:
    """`pattern` with `*` wildcards (nothing else is special) matches `actual`, ignoring case."""
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, actual, flags=re.IGNORECASE | re.DOTALL) is not None
