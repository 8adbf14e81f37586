"""`drover bench ...`: benchmarks that print JSON with the reference measured in the same run."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import click

from bench import attach, ssh, transfer
from bench.fleet import fleet
from shared.units import parse_size


@click.group("bench")
def bench_group() -> None:
    """Measure Drover against the reference tools on the lab."""


@bench_group.command("transfer")
@click.option("--json", "as_json", is_flag=True, help="Print only the JSON document.")
@click.option("--rounds", type=click.IntRange(1, 10), default=3, show_default=True)
def bench_transfer(as_json: bool, rounds: int) -> None:
    """A full backup of a several-GiB disk vs ovirt-imageio's client.download."""
    with tempfile.TemporaryDirectory(prefix="drover-bench-") as root, _fleet(root) as f:
        _say(as_json, "filling the bench disk ...")
        vm, disk_id = transfer.prepare_disk(f)
        _say(as_json, f"{rounds} rounds of a full backup (ours) and a download (reference) ...")
        mine, ref, job = transfer.best_of_rounds(f, vm, disk_id, Path(root), rounds)
        report = transfer.result(
            "transfer",
            mine,
            ref,
            disk_size=parse_size(transfer.DISK_SIZE),
            rounds=rounds,
            job_seconds=round(job.finished_at - job.created_at, 3),
        )
    _print(report, as_json)


@bench_group.command("incremental")
@click.option("--json", "as_json", is_flag=True, help="Print only the JSON document.")
def bench_incremental(as_json: bool) -> None:
    """An incremental after 1% of the disk changed vs a full read by the reference."""
    with tempfile.TemporaryDirectory(prefix="drover-bench-") as root, _fleet(root) as f:
        _say(as_json, "filling the bench disk and taking the full backup ...")
        vm, disk_id = transfer.prepare_disk(f)
        transfer.ours(f, vm, disk_id)
        changed = transfer.change_one_percent(f, parse_size(transfer.DISK_SIZE))
        _say(as_json, "incremental (ours) and full read (reference) ...")
        mine, job = transfer.ours(f, vm, disk_id)
        ref = transfer.reference(f, vm, disk_id, Path(root) / "reference.raw")
        report = transfer.result(
            "incremental",
            mine,
            ref,
            changed_bytes=changed,
            kind=job.kind,
            speedup_seconds=round(ref.seconds / mine.seconds, 2),
        )
    _print(report, as_json)


@bench_group.command("ssh")
@click.option("--json", "as_json", is_flag=True, help="Print only the JSON document.")
@click.option("--rounds", type=click.IntRange(1, 10), default=3, show_default=True)
def bench_ssh(as_json: bool, rounds: int) -> None:
    """A full backup in mode ssh, with and without netcat, vs `ssh HOST cat VOLUME > file`."""
    with tempfile.TemporaryDirectory(prefix="drover-bench-") as root, _fleet(root) as f:
        _say(as_json, "filling the bench disk ...")
        vm, disk_id = transfer.prepare_disk(f)
        _say(as_json, f"{rounds} rounds of ssh cat (reference) and ours, plain and netcat ...")
        measured = ssh.best_of_rounds(f, vm, disk_id, Path(root), rounds)
        report = ssh.report(measured, parse_size(transfer.DISK_SIZE), rounds)
    _print(report, as_json)


@bench_group.command("attach")
@click.option("--json", "as_json", is_flag=True, help="Print only the JSON document.")
@click.option("--rounds", type=click.IntRange(1, 10), default=3, show_default=True)
def bench_attach(as_json: bool, rounds: int) -> None:
    """Mode disk_attachment's read of a disk attached to a proxy VM vs `dd` of the device."""
    with tempfile.TemporaryDirectory(prefix="drover-bench-") as root, _fleet(root) as f:
        _say(as_json, "filling the bench disk ...")
        vm, disk_id = transfer.prepare_disk(f)
        repository = Path(root) / "repository-attach"
        chunk_size = attach.repository_chunk_size(repository)
        _say(as_json, f"{rounds} rounds of ours and dd on the disk attached to a proxy VM ...")
        measured = attach.best_of_rounds(f, vm, disk_id, rounds, chunk_size)
        _say(as_json, "a full backup in mode disk_attachment by the cluster's proxy worker ...")
        job = attach.backup_job(f, vm, disk_id, repository)
        report = attach.report(measured, job, parse_size(transfer.DISK_SIZE), rounds)
    _print(report, as_json)


def _fleet(root: str) -> Any:
    return fleet(Path(root), "--disk-size", transfer.DISK_SIZE)


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        click.echo(message, err=True)


def _print(report: dict[str, Any], as_json: bool) -> None:
    click.echo(json.dumps(report, indent=None if as_json else 2))
