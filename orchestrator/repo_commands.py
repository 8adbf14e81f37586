"""`drover repo ...`: checks and exports that work on a repository directly (no API)."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.commands import emit, prune_repository
from shared.errors import ConfigError
from shared.repository.manifest import Manifest
from shared.repository.repository import Repository
from shared.settings import get_settings

REPOSITORY = click.option(
    "--repository", default="", help="Repository location (default: settings `repository`)."
)


@click.group("repo")
def repo_group() -> None:
    """Check, prune a backup repository or export a disk image from it."""


def _open(location: str) -> Repository:
    return Repository.open(location or get_settings().default_repository, create=False)


@repo_group.command("check")
@REPOSITORY
@click.option("--read-data", is_flag=True, help="Also read every chunk and verify its digest.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def repo_check(repository: str, read_data: bool, as_json: bool) -> None:
    """Every manifest's chunks exist (and, with --read-data, are intact)."""
    report = _open(repository).check(read_data=read_data)
    if as_json:
        emit(report.to_dict())
    else:
        click.echo(
            f"{report.backups} backups, {report.chunks_referenced} chunks referenced, "
            f"{report.chunks_stored} stored, {report.chunks_read} read"
        )
        for problem in report.problems:
            click.echo(f"problem: {problem}")
        click.echo("repository OK" if report.ok else "repository has problems")
    if not report.ok:
        raise SystemExit(1)


@repo_group.command("prune")
@REPOSITORY
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def repo_prune(repository: str, dry_run: bool, as_json: bool) -> None:
    """Apply every policy's retention, then free chunks no backup uses (safe while backups
    run). Goes through the API, which knows the policies and the running jobs."""
    prune_repository(repository, dry_run, as_json)


@repo_group.command("export")
@click.argument("backup_id")
@click.option("--disk", "disk", required=True, help="Disk index (0-based), id or name.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format", "fmt", type=click.Choice(["raw", "qcow2"]), default="raw", show_default=True
)
@REPOSITORY
def repo_export(backup_id: str, disk: str, output: Path, fmt: str, repository: str) -> None:
    """Write one disk of a backup as a full image file."""
    repo = _open(repository)
    disk_id = disk_of(repo.manifest(backup_id), disk)
    repo.export_disk(backup_id, disk_id, output, fmt=fmt)
    click.echo(f"{output}: disk {disk_id} of backup {backup_id} ({fmt})")


def disk_of(manifest: Manifest, wanted: str) -> str:
    """A disk named by its index in the backup, its id or its name."""
    disks = manifest.disks
    if wanted.isdigit() and int(wanted) < len(disks):
        return disks[int(wanted)].disk_id
    for disk in disks:
        if wanted in (disk.disk_id, disk.name):
            return disk.disk_id
    known = ", ".join(f"{i}: {d.name or d.disk_id}" for i, d in enumerate(disks))
    raise ConfigError(
        f"backup {manifest.backup_id} has no disk {wanted!r}", hint=f"its disks are {known}"
    )
