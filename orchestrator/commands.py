"""The orchestrator's `drover` commands: the API and Flower servers, and the API's clients.

Client commands talk to the API at DROVER_API_URL with DROVER_API_TOKEN; with `--json` each
prints one JSON document. `register(cli)` adds them to the `drover` group.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from orchestrator.client import ApiClient
from orchestrator.policies import parse_policies
from shared.errors import ConfigError
from shared.proxy.node import proxy_queue
from shared.settings import get_settings
from shared.units import format_size

POLL_S = 1.0
QUEUED_WARNING_S = 10.0  # `--wait` says a job no worker has picked up after this long
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


def make_client() -> ApiClient:
    return ApiClient.from_settings(get_settings())


def emit(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, default=str))


def done(document: Any, message: str, as_json: bool) -> None:
    if as_json:
        emit(document)
    else:
        click.echo(message)


# servers -------------------------------------------------------------------------------


@click.command("api")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=int, default=8400, show_default=True)
@click.option("--insecure-local", is_flag=True, help="No authentication; 127.0.0.1 only.")
def api_command(host: str, port: int, insecure_local: bool) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs)."""
    from orchestrator.api import run_api

    run_api(get_settings(), host, port, insecure_local)


@click.command("flower")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=int, default=5555, show_default=True)
@click.option("--insecure-local", is_flag=True, help="No authentication; 127.0.0.1 only.")
def flower_command(host: str, port: int, insecure_local: bool) -> None:
    """Serve Celery Flower for the fleet, with basic auth from settings."""
    from orchestrator.flower import run_flower

    run_flower(get_settings(), host, port, insecure_local)


@click.command("beat")
@click.option(
    "--max-interval",
    type=click.FloatRange(min=1),
    default=10.0,
    show_default=True,
    help="Seconds between the scheduler's looks at Redis; a standby takes over a dead leader "
    "after 5 of them.",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=1),
    default=3600.0,
    show_default=True,
    help="A missed slot at most this many seconds old runs (once); older ones are skipped.",
)
def beat_command(max_interval: float, grace: float) -> None:
    """Run the scheduler (also `drover scheduler`): policies' schedules and the reaper.

    Run one or more anywhere that reaches Redis: one leads, the others stand by."""
    from workers.beat import run_beat

    run_beat(get_settings(), max_interval, grace)


# managers ------------------------------------------------------------------------------


@click.group("manager")
def manager_group() -> None:
    """Register the engines (oVirt / OLVM / RHV managers) Drover backs up from."""


@manager_group.command("add")
@click.argument("name")
@click.option("--url", required=True, help="https://ENGINE_HOST/ovirt-engine/api")
@click.option("--username", required=True, help="user@domain, e.g. admin@internal")
@click.option("--password-file", type=click.Path(dir_okay=False), help="File holding the password.")
@click.option("--password-env", metavar="VAR", help="Environment variable holding the password.")
@click.option("--password", "password_arg", help="The password itself (visible to other users).")
@click.option("--ca-file", default="", help="The engine's CA certificate (PEM), on the API host.")
@click.option("--replace", is_flag=True, help="Replace a manager of the same name.")
@json_option
def manager_add(
    name: str,
    url: str,
    username: str,
    password_file: str | None,
    password_env: str | None,
    password_arg: str | None,
    ca_file: str,
    replace: bool,
    as_json: bool,
) -> None:
    """Register an engine; the API tests the connection first."""
    password = read_password(password_file, password_env, password_arg)
    body = {"name": name, "url": url, "username": username, "password": password}
    body["ca_file"] = str(Path(ca_file).resolve()) if ca_file else ""
    client = make_client()
    result = client.put(f"/managers/{name}", body) if replace else client.post("/managers", body)
    if as_json:
        return emit(result)
    click.echo(f"manager {name} registered ({result.get('engine_version', 'engine')})")
    print_host_report(name, result)


@manager_group.command("sync")
@click.argument("name")
@json_option
def manager_sync(name: str, as_json: bool) -> None:
    """Test the connection again; report the engine's hosts and which lack SSH credentials,
    and per cluster its proxy VMs and whether a live worker serves it (mode disk_attachment)."""
    result = make_client().post(f"/managers/{name}/sync")
    if as_json:
        return emit(result)
    click.echo(f"manager {name}: {result.get('engine_version', 'engine')}")
    print_host_report(name, result)
    print_proxy_report(result)


def print_host_report(name: str, report: dict[str, Any]) -> None:
    """The engine's hosts and those without SSH credentials (mode ssh needs them)."""
    hosts, missing = report.get("hosts", []), report.get("hosts_without_ssh", [])
    click.echo(f"hosts: {', '.join(hosts) or 'none'}")
    if missing:
        click.echo(
            f"hosts without SSH credentials: {', '.join(missing)} (mode ssh needs them: "
            f"`drover host add {name} HOST --address ... --host-key ... --key-file ...`)"
        )
    for host in report.get("credentials_without_host", []):
        click.echo(
            f"warning: credentials of host {host}, which the engine no longer has: "
            f"`drover host remove {name} {host}`",
            err=True,
        )


def print_proxy_report(report: dict[str, Any]) -> None:
    """A line per cluster: its proxy VMs, their workers and whether they are alive; a warning
    for each cluster that no live proxy worker serves."""
    if report.get("proxies_error"):
        click.echo(f"warning: proxies not shown: {report['proxies_error']}", err=True)
        return
    for cluster, proxies in report.get("proxies", {}).items():
        shown = ", ".join(_proxy_text(p) for p in proxies) or "no proxy VM has registered"
        click.echo(f"cluster {cluster}: proxies: {shown}")
    for cluster in report.get("clusters_without_live_proxy", []):
        click.echo(
            f"warning: no live proxy worker serves cluster {cluster} "
            f"(queue {proxy_queue(cluster)}): "
            "mode disk_attachment cannot run there; start `drover worker --proxy` in a proxy "
            "VM of that cluster",
            err=True,
        )


def _proxy_text(proxy: dict[str, Any]) -> str:
    if proxy["alive"]:
        state = "alive"
    else:
        seen = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(proxy.get("last_seen") or 0))
        state = f"not alive, last seen {seen}"
    return f"{proxy['vm']} ({state}, worker {proxy['worker']})"


def read_password(file: str | None, env: str | None, given: str | None) -> str:
    sources = [s for s in (file, env, given) if s is not None]
    if len(sources) > 1:
        raise ConfigError(
            "give the password one way: --password-file, --password-env or --password"
        )
    if file is not None:
        return _password_from_file(Path(file))
    if env is not None:
        return password_from_env(env)
    if given is not None:
        return given
    if sys.stdin.isatty():
        return str(click.prompt("Engine password", hide_input=True))
    raise ConfigError("no password given", hint="use --password-file FILE or --password-env VAR")


def _password_from_file(path: Path) -> str:
    try:
        password = path.read_text().strip()
    except OSError as e:
        raise ConfigError(f"cannot read the password file {path}: {e.strerror}") from None
    if not password:
        raise ConfigError(f"the password file {path} is empty")
    return password


def password_from_env(name: str) -> str:
    password = os.environ.get(name, "")
    if not password:
        raise ConfigError(f"environment variable {name} is not set or empty")
    return password


@manager_group.command("list")
@json_option
def manager_list(as_json: bool) -> None:
    """List registered engines (passwords are never shown)."""
    managers = make_client().get("/managers")
    if as_json:
        return emit(managers)
    for m in managers:
        click.echo(f"{m['name']:<20} {m['username']:<24} {m['url']}")


@manager_group.command("remove")
@click.argument("name")
@json_option
def manager_remove(name: str, as_json: bool) -> None:
    """Forget a registered engine."""
    make_client().delete(f"/managers/{name}")
    done({"removed": name}, f"manager {name} removed", as_json)


# policies ------------------------------------------------------------------------------


@click.group("policy")
def policy_group() -> None:
    """Backup policies: which VMs, how, where, when."""


@policy_group.command("apply")
@click.option("-f", "--file", "file", required=True, type=click.Path(dir_okay=False))
@json_option
def policy_apply(file: str, as_json: bool) -> None:
    """Create or replace the policies in a YAML file."""
    policies = parse_policies(_read_text(Path(file)), file)
    client = make_client()
    results = [client.put(f"/policies/{p.name}", p.model_dump(mode="json")) for p in policies]
    if as_json:
        return emit({"applied": [r["policy"]["name"] for r in results], "results": results})
    for result in results:
        click.echo(f"policy {result['policy']['name']} applied")
        for warning in result.get("warnings", []):
            click.echo(f"warning: {warning}", err=True)


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None


@policy_group.command("list")
@json_option
def policy_list(as_json: bool) -> None:
    """List policies."""
    policies = make_client().get("/policies")
    if as_json:
        return emit(policies)
    for p in policies:
        click.echo(f"{p['name']:<24} {p['manager']:<16} {p['mode']:<16} {schedule_text(p)}")


def schedule_text(policy: dict[str, Any]) -> str:
    """The policy's cron and zone, and its next run in that zone and in UTC; '-': none."""
    schedule, upcoming = policy.get("schedule"), policy.get("next_run")
    if not schedule:
        return "-"
    text = f"{schedule['cron']} ({schedule.get('timezone', 'UTC')})"
    if not upcoming or not upcoming.get("utc"):
        return f"{text}  next: never"
    utc = upcoming["utc"].replace("T", " ").replace(":00Z", " UTC")
    return f"{text}  next: {upcoming['local_text']} = {utc}"


@policy_group.command("show")
@click.argument("name")
def policy_show(name: str) -> None:
    """Show one policy as JSON."""
    emit(make_client().get(f"/policies/{name}"))


@policy_group.command("remove")
@click.argument("name")
@json_option
def policy_remove(name: str, as_json: bool) -> None:
    """Delete a policy."""
    make_client().delete(f"/policies/{name}")
    done({"removed": name}, f"policy {name} removed", as_json)


@policy_group.command("run")
@click.argument("name")
@click.option("--wait", is_flag=True, help="Follow the jobs until all have finished.")
@click.option("--timeout", type=float, default=0, help="Give up waiting after N seconds.")
@json_option
def policy_run(name: str, wait: bool, timeout: float, as_json: bool) -> None:
    """Back up the policy's VMs now: one job per VM."""
    client = make_client()
    run = client.post(f"/policies/{name}/run")
    if not as_json:
        _print_run(run)
    if wait:
        ids = [job["job_id"] for job in run["jobs"]]
        run["jobs"] = watch_jobs(client, ids, show=not as_json, timeout_s=timeout)
    if as_json:
        emit(run)
    if wait and (run["refused"] or any(j["status"] == "failed" for j in run["jobs"])):
        sys.exit(1)


def _print_run(run: dict[str, Any]) -> None:
    click.echo(f"policy {run['policy']}: {run['vms']} VMs, {len(run['jobs'])} jobs queued")
    for job in run["jobs"]:
        click.echo(f"  {job['vm']:<24} job {job['job_id']}")
    for refusal in run["refused"]:
        click.echo(f"  {refusal['vm']:<24} refused: {refusal['reason']}", err=True)


# jobs, backups, restores ---------------------------------------------------------------


class _JobsGroup(click.Group):
    """`drover jobs` lists, `drover jobs ID` shows one (as `drover jobs show ID`), and
    `drover jobs cancel ID` stops one."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        rest = list(args)
        for index, token in enumerate(rest):
            if token.startswith("-") or (index and rest[index - 1] == "--limit"):
                continue
            if token not in self.commands:
                rest.insert(index, "show")
            break
        return super().parse_args(ctx, rest)


@click.group("jobs", cls=_JobsGroup, invoke_without_command=True)
@click.option("--limit", type=int, default=50, show_default=True)
@json_option
@click.pass_context
def jobs_command(ctx: click.Context, limit: int, as_json: bool) -> None:
    """List jobs (latest first); `drover jobs ID` shows one with its per-disk progress."""
    if ctx.invoked_subcommand is not None:
        return
    jobs = make_client().get("/jobs", limit=limit)
    if as_json:
        return emit(jobs)
    for job in jobs:
        click.echo(job_line(job))


def _json_here_or_above(ctx: click.Context, as_json: bool) -> bool:
    return as_json or bool(ctx.parent and ctx.parent.params.get("as_json"))


@jobs_command.command("show")
@click.argument("job_id")
@json_option
@click.pass_context
def jobs_show(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Show one job with its per-disk progress, warnings and error."""
    job = make_client().get(f"/jobs/{job_id}")
    return emit(job) if _json_here_or_above(ctx, as_json) else _print_job(job)


@jobs_command.command("cancel")
@click.argument("job_id")
@json_option
@click.pass_context
def jobs_cancel(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Stop a job that has not finished: its tasks are revoked (the running one terminated),
    what it made on the engine (snapshot, transfer, backup, disk attachment) is cleaned up,
    and it fails "cancelled by the operator"."""
    result = make_client().post(f"/jobs/{job_id}/cancel")
    if _json_here_or_above(ctx, as_json):
        return emit(result)
    if not result.get("cancelled", True):
        click.echo(f"job {job_id} finished ({result['status']}) before it could be stopped")
        return
    click.echo(f"job {job_id} cancelled: {result['status']}: {result['error']}")
    cleanup = result.get("cleanup") or {}
    objects = ", ".join(
        f"{name} {value}" for name, value in sorted(cleanup.get("objects", {}).items())
    )
    if cleanup.get("action") == "failed":
        click.echo(f"warning: engine cleanup incomplete: {cleanup.get('why', '')}", err=True)
    else:
        click.echo(f"  engine: {'cleaned ' + objects if objects else 'nothing to clean'}")
    for warning in result.get("warnings", []):
        click.echo(f"  warning: {warning}")


def _print_job(job: dict[str, Any]) -> None:
    click.echo(job_line(job))
    if job.get("mode_reason"):
        click.echo(f"  mode: {job['mode_reason']}")
    for disk in job["disks"]:
        done = f"{disk['done_chunks']}/{disk['planned_chunks']} chunks"
        worker = f"  worker {disk['worker']}" if disk.get("worker") else ""
        line = f"  disk {disk['name'] or disk['disk_id']:<20} {done:<18} {_bytes(disk)}{worker}"
        click.echo(line)
    for warning in job["warnings"]:
        click.echo(f"  warning: {warning}")
    if job["error"]:
        click.echo(f"  error: {job['error']}")


def job_line(job: dict[str, Any]) -> str:
    rate = f"{format_size(job['rate_bps'])}/s" if job.get("rate_bps") else ""
    what = job["kind"] or job["mode"]
    status = job["status"]
    return f"{job['id'][:12]}  {job['vm_name']:<20} {what:<12} {status:<24} {_bytes(job)} {rate}"


def _bytes(item: dict[str, Any]) -> str:
    return f"{format_size(item.get('bytes_read', 0))}/{format_size(item.get('size', 0))}"


@click.group("backups", invoke_without_command=True)
@click.option("--repository", default="", help="Repository location (default: settings).")
@json_option
@click.pass_context
def backups_command(ctx: click.Context, repository: str, as_json: bool) -> None:
    """List the backups in a repository, oldest first; `drover backups remove ID` removes one."""
    if ctx.invoked_subcommand is not None:
        return
    params = {"repository": repository} if repository else {}
    backups = make_client().get("/backups", **params)
    if as_json:
        return emit(backups)
    for b in backups:
        size = format_size(sum(d["size"] for d in b["disks"]))
        click.echo(
            f"{b['backup_id']}  {b['vm_name']:<20} {b['kind']:<12} {b['created_at']}  {size}"
        )


@backups_command.command("remove")
@click.argument("backup_id")
@click.option("--repository", default="", help="Repository location (default: settings).")
@json_option
@click.pass_context
def backups_remove(ctx: click.Context, backup_id: str, repository: str, as_json: bool) -> None:
    """Remove one backup and free the chunks only it used. Refused while an incremental
    backup or a running job depends on it (it names them)."""
    repository = repository or (ctx.parent.params.get("repository", "") if ctx.parent else "")
    params = {"repository": repository} if repository else None
    result = make_client().request("DELETE", f"/backups/{backup_id}", params=params)
    if _json_here_or_above(ctx, as_json):
        return emit(result)
    gc = result.get("gc") or {}
    click.echo(
        f"backup {backup_id} removed; {gc.get('chunks_removed', 0)} chunks "
        f"({format_size(gc.get('bytes_freed', 0))}) freed"
    )


def prune_repository(repository: str, dry_run: bool, as_json: bool) -> None:
    """`drover repo prune`: every policy's retention, then garbage collection, via the API
    (it knows the policies and the running jobs)."""
    params: dict[str, Any] = {"dry_run": dry_run}
    if repository:
        params["repository"] = repository
    report = make_client().request("POST", "/repository/prune", params=params)
    if as_json:
        return emit(report)
    verb = "would remove" if dry_run else "removed"
    for backup in report["removed"]:
        click.echo(f"{verb} {backup['backup_id']}  {backup['vm_name']:<20} {backup['created_at']}")
    click.echo(f"kept {len(report['kept'])} backups, {verb} {len(report['removed'])}")
    for vm in report["unattributed_vms"]:
        click.echo(f"  VM {vm}: no policy with retention made its backups: all kept")
    for error in report["errors"]:
        click.echo(f"  error: {error}", err=True)
    gc = report.get("gc") or {}
    if gc.get("skipped"):
        click.echo(f"chunks: {gc['skipped']}")
    elif gc:
        click.echo(
            f"chunks: {verb} {gc['chunks_removed']} ({format_size(gc['bytes_freed'])}), "
            f"kept {gc['chunks_kept_recent'] + gc['chunks_kept_running']} written recently or "
            f"by {len(gc['running_jobs'])} running job(s)"
        )
    if report["errors"]:
        raise SystemExit(1)


@click.command("restore")
@click.argument("backup_id")
@click.option("--name", default="", help="Name of the new VM (default: <original>-restored).")
@click.option("--cluster", default="", help="Cluster (default: the original one).")
@click.option("--storage-domain", default="", help="Storage domain for all disks.")
@click.option("--manager", default="", help="Engine to restore through (default: the only one).")
@click.option("--repository", default="", help="Repository location (default: settings).")
@click.option(
    "--mode", default="", help="Write the disks in this mode (default: the backup's mode)."
)
@click.option("--instant", is_flag=True, help="Boot from the backup (not available yet).")
@click.option(
    "--live-migrate", default="", metavar="SD", help="With --instant (not available yet)."
)
@click.option("--wait", is_flag=True, help="Follow the restore until it has finished.")
@click.option("--timeout", type=float, default=0, help="Give up waiting after N seconds.")
@json_option
def restore_command(
    backup_id: str,
    name: str,
    cluster: str,
    storage_domain: str,
    manager: str,
    repository: str,
    mode: str,
    instant: bool,
    live_migrate: str,
    wait: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Recreate a VM from a backup."""
    if instant or live_migrate:
        raise ConfigError(
            "instant restore (and its live migration) is not available in this version of Drover",
            hint="restore without --instant: the VM is recreated and its disks written in full",
        )
    body = {"backup_id": backup_id, "name": name, "cluster": cluster}
    body |= {"storage_domain": storage_domain, "manager": manager, "repository": repository}
    if mode:
        body["mode"] = mode
    client = make_client()
    result = client.post("/restores", body)
    if not as_json:
        click.echo(f"restore of {backup_id} queued as job {result['job_id']}")
    if wait:
        [result["job"]] = watch_jobs(
            client, [result["job_id"]], show=not as_json, timeout_s=timeout
        )
    if as_json:
        emit(result)
    if wait and result["job"]["status"] == "failed":
        sys.exit(1)


# following jobs ------------------------------------------------------------------------


def watch_jobs(
    client: ApiClient,
    job_ids: list[str],
    *,
    show: bool = True,
    timeout_s: float = 0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    queued_warning_s: float = QUEUED_WARNING_S,
) -> list[dict[str, Any]]:
    """Poll the jobs until all have finished; live lines on a terminal, changes otherwise.
    Each job's error and warnings (a restore's result) are shown as it finishes, then one
    "N succeeded, M failed" line; a job no worker has picked up after `queued_warning_s` is
    named on stderr with the queues it waits on and what to start."""
    display = _Display(show and sys.stdout.isatty(), show)
    started = clock()
    deadline = started + timeout_s if timeout_s else None
    warned: set[str] = set()
    while True:
        jobs = [client.get(f"/jobs/{job_id}") for job_id in job_ids]
        display.update(jobs)
        if all(job["finished"] for job in jobs):
            display.summary(jobs)
            return jobs
        waited = clock() - started
        if waited >= queued_warning_s:
            for job in jobs:
                if job["status"] == "queued" and job["id"] not in warned:
                    warned.add(job["id"])
                    display.note(not_picked_up(job, waited))
        if deadline is not None and clock() > deadline:
            raise ConfigError(
                f"jobs still running after {timeout_s:.0f} s",
                hint="follow them with `drover jobs`; they keep running",
            )
        sleep(POLL_S)


def not_picked_up(job: dict[str, Any], waited_s: float) -> str:
    """A job still queued: which queues it waits on and what consumes them."""
    queues = list(job.get("queues") or [])
    proxies = [q for q in queues if q.startswith("proxy.")]
    central = [q for q in queues if q not in proxies]
    starts = [f"`drover worker --queues {','.join(central)}`"] if central else []
    starts += [
        f"`drover worker --proxy` in a proxy VM of cluster {q.removeprefix('proxy.')}"
        for q in proxies
    ]
    waits = f" on queue{'s' if len(queues) > 1 else ''} {', '.join(queues)}" if queues else ""
    start = " or ".join(starts) or "`drover worker`"
    return (
        f"warning: job {job['id'][:12]} ({job.get('vm_name') or job['mode']}) is still queued "
        f"after {waited_s:.0f} s: no worker has picked it up{waits}; is a worker consuming "
        f"{'them' if len(queues) > 1 else 'it'} running? Start {start} (GET /health lists "
        "the live queues)"
    )


def finished_lines(job: dict[str, Any]) -> list[str]:
    """What a finished job says below its line: warnings, error, a restore's result."""
    lines = [f"  warning: {w}" for w in job.get("warnings", [])]
    if job.get("error"):
        lines.append(f"  error: {job['error']}")
    result = job.get("result") or {}
    if job.get("mode") == "restore" and result.get("vm_name"):
        disks = result.get("disks", [])
        verified = "verified" if disks and all(d.get("verified") for d in disks) else "NOT verified"
        written = format_size(int(result.get("bytes_written", 0)))
        lines.append(
            f"  restored VM {result['vm_name']} ({result.get('vm_id', '')}): "
            f"{len(disks)} disk(s), {written} written, {verified}"
        )
        for disk in disks:
            state = "verified" if disk.get("verified") else "NOT verified"
            lines.append(
                f"    disk {disk.get('name') or disk['disk_id']}: "
                f"{format_size(int(disk.get('bytes_written', 0)))} written, {state} "
                f"(sha256 {str(disk.get('sha256', ''))[:16]}...)"
            )
    return lines


def summary_line(jobs: list[dict[str, Any]]) -> str:
    failed = sum(1 for job in jobs if job["status"] == "failed")
    warned = sum(1 for job in jobs if job["status"] == "succeeded_with_warnings")
    line = f"{len(jobs) - failed} succeeded, {failed} failed"
    return line + (f" ({warned} with warnings)" if warned else "")


class _Display:
    """On a terminal: the unfinished jobs' lines redrawn in place, a finished job's line and
    details printed above them for good; otherwise: a line per change of status."""

    def __init__(self, live: bool, show: bool) -> None:
        self.live, self.show = live, show
        self.lines = 0
        self.seen: dict[str, str] = {}

    def update(self, jobs: list[dict[str, Any]]) -> None:
        if self.live:
            self._clear()
            self._finished(jobs)
            running = [job_line(job) for job in jobs if not job["finished"]]
            if running:
                click.echo("\n".join(running))
            self.lines = len(running)
        elif self.show:
            self._changes(jobs)

    def note(self, text: str) -> None:
        """A warning on stderr (kept above the live lines)."""
        self._clear()
        click.echo(text, err=True)

    def summary(self, jobs: list[dict[str, Any]]) -> None:
        if self.show:
            click.echo(summary_line(jobs))

    def _clear(self) -> None:
        if self.live and self.lines:
            click.echo(f"\x1b[{self.lines}F\x1b[J", nl=False)
            self.lines = 0

    def _finished(self, jobs: list[dict[str, Any]]) -> None:
        for job in jobs:
            if job["finished"] and self.seen.get(job["id"]) != job["status"]:
                self.seen[job["id"]] = job["status"]
                click.echo("\n".join([job_line(job), *finished_lines(job)]))

    def _changes(self, jobs: list[dict[str, Any]]) -> None:
        for job in jobs:
            if self.seen.get(job["id"]) != job["status"]:
                self.seen[job["id"]] = job["status"]
                click.echo(job_line(job))
                if job["finished"]:
                    for line in finished_lines(job):
                        click.echo(line)


def register(cli: click.Group) -> None:
    from orchestrator.host_commands import host_group
    from orchestrator.reap_command import reap_command
    from orchestrator.repo_commands import repo_group

    for command in (
        repo_group,
        reap_command,
        api_command,
        flower_command,
        manager_group,
        host_group,
        policy_group,
        jobs_command,
        backups_command,
        restore_command,
        beat_command,
    ):
        cli.add_command(command)
    cli.add_command(beat_command, "scheduler")
