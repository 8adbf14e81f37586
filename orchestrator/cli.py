"""The `drover` command line.

Sub-commands that live outside the product (the lab, the demo, benchmarks) plug in
through the `drover.commands` entry-point group, so product code never imports them.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points
from typing import Any

import click

from orchestrator.commands import register as register_orchestrator_commands
from shared.errors import DroverError
from shared.logging import configure_logging
from shared.settings import get_settings

EXIT_FAILURE = 1
EXIT_USAGE = 2


class DroverGroup(click.Group):
    """Turns DroverError into a one-line message instead of a stack trace."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DroverError as e:
            click.echo(f"drover: error: {e}", err=True)
            sys.exit(EXIT_FAILURE)
        except KeyboardInterrupt:
            click.echo("drover: interrupted", err=True)
            sys.exit(130)


@click.group(cls=DroverGroup)
@click.version_option(package_name="drover")
def cli() -> None:
    """Drover: backups of oVirt / OLVM / RHV virtual machines by a fleet of Celery workers."""
    configure_logging(get_settings().log)


@cli.command()
@click.option("--queues", default="", help="Comma-separated queues (default: all central ones).")
@click.option("--concurrency", type=int, default=None, help="Worker processes (default: settings).")
@click.option(
    "--proxy",
    is_flag=True,
    help="Run as the proxy worker of the VM this node is (its cluster's proxy.<cluster> queue, "
    "named proxy-<vm name>@<host>).",
)
def worker(queues: str, concurrency: int | None, proxy: bool) -> None:
    """Run a Celery worker of the fleet."""
    from workers.start import run_proxy_worker, run_worker

    settings = get_settings()
    if proxy and queues:
        raise click.UsageError("--proxy chooses its own queue: leave out --queues")
    if proxy:
        run_proxy_worker(settings, concurrency)
    else:
        run_worker(settings, [q for q in queues.split(",") if q], concurrency)


register_orchestrator_commands(cli)


def _load_plugins() -> None:
    for entry in entry_points(group="drover.commands"):
        cli.add_command(entry.load(), entry.name)


def main() -> None:
    _load_plugins()
    cli(prog_name="drover")


if __name__ == "__main__":
    main()
