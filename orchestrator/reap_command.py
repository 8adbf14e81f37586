"""`drover reap [--dry-run]`: close what dead jobs left on the engine (see shared.reaper).

Runs where it is typed, against the settings' Redis and the registered managers; the
scheduler runs the same reaper as the task `drover.maintenance.reap`.
"""

from __future__ import annotations

import click

from orchestrator.commands import emit
from shared.reaper import ReapReport, reap
from shared.settings import get_settings
from shared.state import StateStore


@click.command("reap")
@click.option("--dry-run", is_flag=True, help="Say what would be cleaned; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def reap_command(dry_run: bool, as_json: bool) -> None:
    """Finalize or remove engine objects that belong to no live job."""
    from workers.resources import connect_engine

    store = StateStore.from_url(get_settings().redis_url)
    report = reap(store, connect_engine, dry_run=dry_run)
    if as_json:
        emit(report.to_dict())
    else:
        _print(report)


def _print(report: ReapReport) -> None:
    for job in report.jobs:
        objects = ", ".join(f"{name} {value}" for name, value in sorted(job.objects.items()))
        click.echo(f"{job.job_id[:12]}  {job.vm:<20} {job.action}: {job.why} [{objects}]")
    verb = "would be cleaned" if report.dry_run else "cleaned"
    done = sum(1 for j in report.jobs if j.action in ("cleaned", "would clean"))
    click.echo(f"{done} job(s) {verb}, {len(report.jobs) - done} left alone or failed")
