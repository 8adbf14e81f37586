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
def up(state_dir: Path, clusters: int, vms: int, disk_size: int) -> None:
    """Start the lab in the foreground; writes STATE_DIR/lab.json when ready."""
    from lab.estate import EstateConfig
    from lab.runner import run_lab_foreground

    config = EstateConfig(clusters=clusters, vms=vms, disk_size=disk_size)
    run_lab_foreground(state_dir, config)


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
