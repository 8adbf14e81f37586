"""`drover host ...`: the SSH credentials of a manager's hosts (hypervisors), for mode ssh.

Through the API like the other client commands. `host add` reads the private key from a file
(or the password from an environment variable) and sends its text; the API checks it, stores
it sealed and never shows it again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from orchestrator import commands
from orchestrator.hosts import DEFAULTS
from shared.errors import ConfigError

CREDENTIALS_HINT = "give --key-file FILE (a private key) or --password-env VAR (a password)"


@click.group("host")
def host_group() -> None:
    """SSH credentials of a manager's hosts, on which mode ssh reads the disks."""


def hosts_path(manager: str, host: str = "") -> str:
    path = f"/managers/{quote(manager, safe='')}/hosts"
    return f"{path}/{quote(host, safe='')}" if host else path


@host_group.command("add")
@click.argument("manager")
@click.argument("host")
@click.option("--address", required=True, help="Where the workers reach the host over SSH.")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULTS.port, show_default=True)
@click.option("--user", default=DEFAULTS.user, show_default=True)
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False),
    help="Private key (OpenSSH or PEM, no passphrase): ed25519, ECDSA or RSA.",
)
@click.option("--password-env", metavar="VAR", help="Environment variable holding the password.")
@click.option(
    "--host-key",
    required=True,
    metavar="PIN",
    help="The host's public key ('ssh-ed25519 AAAA...') or its fingerprint ('SHA256:...').",
)
@click.option("--mount-root", default=DEFAULTS.mount_root, show_default=True)
@click.option("--dev-root", default=DEFAULTS.dev_root, show_default=True)
@commands.json_option
def host_add(
    manager: str,
    host: str,
    address: str,
    port: int,
    user: str,
    key_file: str | None,
    password_env: str | None,
    host_key: str,
    mount_root: str,
    dev_root: str,
    as_json: bool,
) -> None:
    """Register (or replace) the SSH credentials of HOST, as the engine of MANAGER names it."""
    body: dict[str, Any] = {
        "address": address,
        "port": port,
        "user": user,
        "host_key": host_key,
        "mount_root": mount_root,
        "dev_root": dev_root,
    }
    body |= read_credentials(key_file, password_env)
    result = commands.make_client().put(hosts_path(manager, host), body)
    if as_json:
        return commands.emit(result)
    what = "replaced" if result.get("replaced") else "registered"
    where = f"{result['user']}@{result['address']}:{result['port']}, {result['auth']}"
    click.echo(f"host {host} of manager {manager}: SSH credentials {what} ({where})")


def read_credentials(key_file: str | None, password_env: str | None) -> dict[str, str]:
    """{"private_key": text} or {"password": ...}: exactly one of them."""
    if key_file is not None and password_env is not None:
        raise ConfigError("give the host's credentials one way, not both", hint=CREDENTIALS_HINT)
    if key_file is not None:
        return {"private_key": _key_text(Path(key_file))}
    if password_env is not None:
        return {"password": commands.password_from_env(password_env)}
    raise ConfigError("no SSH credentials given", hint=CREDENTIALS_HINT)


def _key_text(path: Path) -> str:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "it is not a text file"
        raise ConfigError(f"cannot read the key file {path}: {reason}") from None
    if not text.strip():
        raise ConfigError(f"the key file {path} is empty")
    if text.lstrip().startswith(("ssh-", "ecdsa-")):
        raise ConfigError(
            f"the key file {path} holds a public key",
            hint="give the private key file (without .pub), e.g. ~/.ssh/id_ed25519",
        )
    return text


@host_group.command("list")
@click.argument("manager")
@commands.json_option
def host_list(manager: str, as_json: bool) -> None:
    """Every host of the manager's engine, and whether it has SSH credentials."""
    hosts = commands.make_client().get(hosts_path(manager))
    if as_json:
        return commands.emit(hosts)
    for host in hosts:
        click.echo(host_line(host))


def host_line(host: dict[str, Any]) -> str:
    status = host.get("status") or "not on the engine"
    if host.get("credentials"):
        access = f"{host['user']}@{host['address']}:{host['port']} ({host['auth']})"
    else:
        access = "no SSH credentials"
    return f"{host['name']:<24} {status:<18} {access}"


@host_group.command("remove")
@click.argument("manager")
@click.argument("host")
@commands.json_option
def host_remove(manager: str, host: str, as_json: bool) -> None:
    """Forget the SSH credentials of a host."""
    commands.make_client().delete(hosts_path(manager, host))
    document = {"removed": host, "manager": manager}
    commands.done(document, f"SSH credentials of host {host} of manager {manager} removed", as_json)
