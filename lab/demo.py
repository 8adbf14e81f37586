"""`drover demo`: the lab, a private Redis and a worker fleet, driven end to end.

Backup modes are added to `MODES` as they land; until then the demo checks the fleet
and the estate (a snapshot taken and removed on every VM, nothing left behind).
"""

from __future__ import annotations

import json
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click
import ovirtsdk4 as sdk
import ovirtsdk4.types as types

from lab.leftovers import count_leftovers
from lab.processes import lab_process, worker_process
from lab.redis_server import redis_server
from shared.errors import DroverError

MODES: tuple[str, ...] = ()  # backup modes the demo can run; filled as they are built
SNAPSHOT_TIMEOUT_S = 120.0


@click.command("demo")
@click.option("--modes", default="", help="Comma-separated backup modes to run.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def demo_command(modes: str, as_json: bool, state_dir: Path | None) -> None:
    """Run Drover end to end against the lab on embedded defaults."""
    wanted = [m for m in modes.split(",") if m]
    unknown = sorted(set(wanted) - set(MODES))
    if unknown:
        raise DroverError(
            f"mode(s) {', '.join(unknown)} are not available in this build",
            hint=f"choose from: {', '.join(MODES) or 'none yet'}",
        )
    with ExitStack() as stack:
        root = state_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="drover-demo-"))
        )
        report = _run(root, stack, as_json)
    _print(report, as_json)
    if not report["ok"]:
        raise SystemExit(1)


def _run(root: Path, stack: ExitStack, quiet: bool) -> dict[str, Any]:
    def say(message: str) -> None:
        if not quiet:
            click.echo(message, err=True)

    say("starting a private Redis, the lab and a worker ...")
    url = stack.enter_context(redis_server(root / "redis"))
    lab = stack.enter_context(lab_process(root / "lab"))
    stack.enter_context(worker_process(url, root / "worker.log"))
    connection = stack.enter_context(_connect(lab["engine"]))
    vms = connection.system_service().vms_service().list()
    say(f"lab up: {len(vms)} VMs; taking and removing a snapshot of each ...")
    checked = [_snapshot_round_trip(connection, vm) for vm in vms]
    leftovers = count_leftovers(connection)
    ok = all(c["ok"] for c in checked) and not any(leftovers.values())
    return {"ok": ok, "modes": {}, "vms": checked, "leftovers": leftovers}


def _connect(engine: dict[str, Any]) -> sdk.Connection:
    return sdk.Connection(
        url=engine["url"],
        username=engine["username"],
        password=engine["password"],
        ca_file=engine["ca_file"],
    )


def _snapshot_round_trip(connection: sdk.Connection, vm: types.Vm) -> dict[str, Any]:
    snapshots = connection.system_service().vms_service().vm_service(vm.id).snapshots_service()
    started = time.monotonic()
    snapshot = snapshots.add(types.Snapshot(description="drover demo", persist_memorystate=False))
    service = snapshots.snapshot_service(snapshot.id)
    ok = _wait(lambda: service.get().snapshot_status == types.SnapshotStatus.OK)
    service.remove()
    ok = ok and _wait(lambda: all(s.id != snapshot.id for s in snapshots.list()))
    return {"vm": vm.name, "ok": ok, "seconds": round(time.monotonic() - started, 2)}


def _wait(condition: Any) -> bool:
    deadline = time.monotonic() + SNAPSHOT_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if condition():
                return True
        except sdk.Error:
            pass
        time.sleep(0.2)
    return False


def _print(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for vm in report["vms"]:
        click.echo(
            f"{vm['vm']:<28} snapshot round trip {'ok' if vm['ok'] else 'FAILED'} "
            f"({vm['seconds']} s)"
        )
    click.echo(f"leftovers on the engine: {report['leftovers']}")
    click.echo("demo " + ("succeeded" if report["ok"] else "FAILED"))
