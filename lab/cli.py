"""`drover lab ...`: the stand-in OLVM estate used by tests, benchmarks and the demo."""

from __future__ import annotations

import json
from pathlib import Path

import click

from shared.errors import ConfigError
from shared.units import parse_size


class SizeParam(click.ParamType):  # type: ignore[type-arg]
    name = "size"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ConfigError as e:
            self.fail(str(e), param, ctx)


SIZE = SizeParam()


class EngineVersionParam(click.ParamType):  # type: ignore[type-arg]
    name = "version"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> str:
        from lab.engine.version import EngineVersion

        try:
            EngineVersion.parse(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)
        return str(value)


ENGINE_VERSION = EngineVersionParam()
STATE_DIR = click.option(
    "--state-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory holding the lab's files and lab.json.",
)


@click.group("lab")
def lab_group() -> None:
    """Run the stand-in OLVM estate (engine, hosts, storage, proxy VMs)."""


@lab_group.command("up")
@STATE_DIR
@click.option("--clusters", type=click.IntRange(1, 8), default=2, show_default=True)
@click.option("--vms", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--disk-size", type=SIZE, default="256MiB", show_default=True)
@click.option(
    "--engine-version",
    type=ENGINE_VERSION,
    default="4.5.5",
    show_default=True,
    help="Engine version to present, e.g. 4.3 (no backup API, file-based image transfers).",
)
def up(state_dir: Path, clusters: int, vms: int, disk_size: int, engine_version: str) -> None:
    """Start the lab in the foreground; writes STATE_DIR/lab.json when ready."""
    from lab.estate import EstateConfig
    from lab.runner import run_lab_foreground

    config = EstateConfig(
        clusters=clusters, vms=vms, disk_size=disk_size, engine_version=engine_version
    )
    run_lab_foreground(state_dir, config)


@lab_group.command("engine-version")
@STATE_DIR
@click.argument("version", type=ENGINE_VERSION, required=False)
def engine_version_command(state_dir: Path, version: str | None) -> None:
    """Show the version the running lab's engine presents, or switch it to VERSION."""
    from lab.guest_client import engine_version, set_engine_version

    if version is None:
        result = engine_version(state_dir)
    else:
        result = set_engine_version(state_dir, version)
    click.echo(json.dumps(result))


@lab_group.command("write")
@STATE_DIR
@click.option("--vm", required=True, help="VM name.")
@click.option("--disk", type=click.IntRange(0), default=0, show_default=True, help="Disk index.")
@click.option("--offset", type=SIZE, required=True)
@click.option("--length", type=SIZE, required=True)
def write(state_dir: Path, vm: str, disk: int, offset: int, length: int) -> None:
    """Write fresh random data into a VM's disk, as its guest would."""
    from lab.guest_client import guest_write

    result = guest_write(state_dir, vm, disk, offset, length)
    click.echo(json.dumps(result))
