"""`drover demo`: Drover end to end on embedded defaults.

A private Redis, the lab, the API, a worker and Flower as processes; per mode, a policy backs
up every VM (full), the guests write, the policy runs again (incremental), and the newest
incremental of one VM is restored under a new name and verified. Mode ssh reads the volumes
off the lab's hosts, whose SSH credentials the demo registers through the API first. Mode
disk_attachment (full only: one backup of every VM, a full restored) runs on proxy workers:
one `drover worker --proxy` per cluster, each "inside" the first proxy VM of its cluster with
VirtIO-SCSI on, serving its own cluster's queue; the report names, per disk, the worker that
moved it and its proxy VM.

Nothing may be left on the engine afterwards (disks attached to proxy VMs included), but for
what is kept on purpose: the snapshot the newest ssh backup of each VM keeps for the next
incremental (`kept_snapshots`).
"""

from __future__ import annotations

import json
import secrets
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import click
import ovirtsdk4 as sdk
from cryptography.fernet import Fernet

from lab import procs
from lab.demo_run import DemoRun, register_manager, runs_on_proxies
from lab.leftovers import count_leftovers, kept_snapshot_anchors, kept_snapshots
from lab.processes import lab_process, service_process, worker_process
from lab.procs import free_port
from lab.redis_server import redis_server
from orchestrator.client import ApiClient
from shared.errors import DroverError
from shared.modes import AVAILABLE_MODES as MODES
from shared.modes import mode_for
from shared.proxy.node import proxy_queue

PROXY_PREFIX = "drover-proxy"
SETTLE_S = 60.0  # snapshots being merged away after a job are gone within this


@click.command("demo")
@click.option(
    "--modes",
    default=",".join(MODES),
    show_default=True,
    help="Comma-separated backup modes to run.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the demo's files here (default: a temporary directory).",
)
def demo_command(modes: str, as_json: bool, state_dir: Path | None) -> None:
    """Run Drover end to end against the lab on embedded defaults."""
    wanted = [m.strip() for m in modes.split(",") if m.strip()]
    unknown = sorted(set(wanted) - set(MODES))
    if unknown or not wanted:
        raise DroverError(
            f"mode(s) {', '.join(unknown) or '(none)'} cannot run in the demo yet",
            hint=f"choose from: {', '.join(MODES)}",
        )
    with ExitStack() as stack:
        root = state_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="drover-demo-"))
        )
        report = _run(root, stack, wanted, say=_sayer(as_json))
    _print(report, as_json)
    if not report["ok"]:
        raise SystemExit(1)


def _run(root: Path, stack: ExitStack, modes: list[str], say: Any) -> dict[str, Any]:
    say("starting a private Redis, the lab, the API, a worker and Flower ...")
    redis_url = stack.enter_context(redis_server(root / "redis"))
    lab = stack.enter_context(lab_process(root / "lab"))
    token = secrets.token_urlsafe(24)
    env = {
        "DROVER_REDIS_URL": redis_url,
        "DROVER_API_TOKENS": json.dumps([token]),
        "DROVER_FLOWER_USER": "demo",
        "DROVER_FLOWER_PASSWORD": secrets.token_urlsafe(12),
        # the API seals the hosts' SSH keys, the worker unseals them: one key for both
        "DROVER_SECRET_KEY": Fernet.generate_key().decode(),
        "DROVER_STATE_DIR": str(root / "state"),
    }
    api_port, flower_port = free_port(), free_port()
    stack.enter_context(
        service_process(
            ["api", "--port", str(api_port)],
            env,
            root / "api.log",
            f"http://127.0.0.1:{api_port}/health",
        )
    )
    stack.enter_context(
        service_process(
            ["flower", "--port", str(flower_port)],
            env,
            root / "flower.log",
            f"http://127.0.0.1:{flower_port}/healthcheck",
        )
    )
    api = ApiClient(f"http://127.0.0.1:{api_port}", token)
    register_manager(api, lab)  # a proxy worker asks the engine which VM it runs in
    proxies = _start_workers(stack, redis_url, lab, root, env, modes, say)
    connection = stack.enter_context(_connect(lab["engine"]))
    clusters = _estate(connection)  # before any restore adds a VM
    results = {mode: DemoRun(api, lab, root, mode, say, clusters, proxies).run() for mode in modes}
    say("checking what is left on the engine ...")
    return _report(api, connection, root, results)


def _start_workers(
    stack: ExitStack,
    redis_url: str,
    lab: dict[str, Any],
    root: Path,
    env: dict[str, str],
    modes: list[str],
    say: Any,
) -> dict[str, dict[str, Any]]:
    """One central worker on the central modes' queues and, when a mode runs on proxies, one
    proxy worker per cluster that has a fit proxy VM; returns cluster -> its proxy VM."""
    central = [m for m in modes if not runs_on_proxies(m)]
    queues = ",".join(dict.fromkeys(["drover.default", *(mode_for(m).queue("") for m in central)]))
    stack.enter_context(
        worker_process(redis_url, root / "worker.log", queues, concurrency=2, env=env)
    )
    if len(central) == len(modes):
        return {}
    say("starting a proxy worker in a proxy VM of each cluster ...")
    proxies = fit_proxies(lab)
    for proxy in proxies.values():
        stack.enter_context(proxy_worker(redis_url, proxy, root / f"{proxy['vm']}.log", env))
    return proxies


def _report(
    api: ApiClient, connection: sdk.Connection, root: Path, results: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    anchors = kept_snapshot_anchors(api.get("/backups", repository=str(root / "repository")))
    leftovers = _settled_leftovers(connection, anchors)
    kept = kept_snapshots(connection, anchors)
    errors = [
        f"VM {vm_id}: kept snapshot {snapshot} is gone, so its next incremental would be full"
        for vm_id, snapshot in anchors.items()
        if snapshot not in kept.values()
    ]
    ok = all(r["ok"] for r in results.values()) and not any(leftovers.values()) and not errors
    return {
        "ok": ok,
        "modes": {m: _public(r) for m, r in results.items()},
        "leftovers": leftovers,
        "kept_snapshots": kept,
        **({"errors": errors} if errors else {}),
    }


def fit_proxies(lab: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Cluster name -> the first of its proxy VMs (lab.json's `proxies`) with VirtIO-SCSI on;
    the others refuse to serve. A cluster without one is absent."""
    chosen: dict[str, dict[str, Any]] = {}
    for proxy in lab["proxies"]:
        if proxy["virtio_scsi"]:
            chosen.setdefault(proxy["cluster"], proxy)
    return chosen


@contextmanager
def proxy_worker(
    redis_url: str, proxy: dict[str, Any], log_file: Path, env: dict[str, str] | None = None
) -> Iterator[procs.ManagedProcess]:
    """`drover worker --proxy` "inside" a lab proxy VM (its root as the node's /), returned
    once it serves its cluster's queue."""
    node = {**(env or {}), "DROVER_PROXY__ROOT": proxy["root"]}
    queue = proxy_queue(proxy["cluster"])
    with worker_process(redis_url, log_file, queue, 1, node, proxy=True) as process:
        yield process


def _estate(connection: sdk.Connection) -> dict[str, str]:
    """The estate's VMs (name -> cluster name), the proxy VMs left out (policies never back
    them up)."""
    system = connection.system_service()
    clusters = {c.id: c.name for c in system.clusters_service().list()}
    vms = system.vms_service().list()
    return {
        vm.name: clusters.get(vm.cluster.id, "")
        for vm in vms
        if not vm.name.startswith(PROXY_PREFIX)
    }


def _settled_leftovers(connection: sdk.Connection, anchors: dict[str, str]) -> dict[str, int]:
    """Leftovers, given the engine a moment to finish merging away removed snapshots."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        leftovers = count_leftovers(connection, kept=anchors)
        if not any(leftovers.values()) or time.monotonic() > deadline:
            return leftovers
        time.sleep(1.0)


def _public(result: dict[str, Any]) -> dict[str, Any]:
    proxies = {"proxy_workers": result["proxy_workers"]} if "proxy_workers" in result else {}
    return {
        "backups": result["backups"],
        "restores": result["restores"],
        **proxies,
        **({"errors": result["errors"]} if result["errors"] else {}),
    }


def _connect(engine: dict[str, Any]) -> sdk.Connection:
    return sdk.Connection(
        url=engine["url"],
        username=engine["username"],
        password=engine["password"],
        ca_file=engine["ca_file"],
    )


def _sayer(quiet: bool) -> Any:
    def say(message: str) -> None:
        if not quiet:
            click.echo(message, err=True)

    return say


def _print(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for mode, result in report["modes"].items():
        click.echo(f"== {mode}")
        for b in result["backups"]:
            click.echo(
                f"  {b['vm']:<10} {b['kind']:<12} {b['bytes_read'] / 2**20:8.1f} MiB "
                f"{b['seconds']:6.2f} s  {b['backup_id']}"
            )
            for disk in b["disks"]:
                if "proxy_vm" in disk:
                    click.echo(
                        f"    disk {disk['disk_id']} moved by {disk['worker']} "
                        f"(proxy VM {disk['proxy_vm'] or 'unknown'})"
                    )
        for r in result["restores"]:
            click.echo(
                f"  restored {r['vm']} from {r['backup_id']}: "
                f"{'verified' if r['verified'] else 'NOT VERIFIED'}"
            )
        for error in result.get("errors", []):
            click.echo(f"  error: {error}")
    click.echo(f"leftovers on the engine: {report['leftovers']}")
    kept = ", ".join(f"{vm} {snapshot}" for vm, snapshot in report["kept_snapshots"].items())
    click.echo(f"snapshots kept for the next incremental: {kept or 'none'}")
    for error in report.get("errors", []):
        click.echo(f"error: {error}")
    click.echo("demo " + ("succeeded" if report["ok"] else "FAILED"))
