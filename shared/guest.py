"""Pre/post snapshot commands, run inside the guest over SSH for application consistency."""

from __future__ import annotations

import paramiko

from shared.errors import DroverError
from shared.jobs import GuestCommand
from shared.ssh_trust import PinnedHostKey

COMMAND_TIMEOUT_S = 300


class GuestCommandFailed(DroverError):
    pass


def run_guest_command(command: GuestCommand, stage: str) -> str:
    """Run it; a non-zero exit or an SSH failure fails the job (before any snapshot)."""
    where = f"{command.user}@{command.host}:{command.port}"
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(PinnedHostKey(command.host_key, where))
    try:
        client.connect(
            command.host,
            port=command.port,
            username=command.user,
            key_filename=command.key_file or None,
            look_for_keys=False,
            allow_agent=False,
            timeout=30,
        )
        _, stdout, stderr = client.exec_command(command.command, timeout=COMMAND_TIMEOUT_S)
        status = stdout.channel.recv_exit_status()
        output = stdout.read().decode(errors="replace")
        errors = stderr.read().decode(errors="replace").strip()
    except (OSError, paramiko.SSHException) as e:
        raise GuestCommandFailed(
            f"{stage} command could not run on {where}: {e}",
            hint="check the guest address, user and key in the policy",
        ) from e
    finally:
        client.close()
    if status != 0:
        raise GuestCommandFailed(
            f"{stage} command exited with {status} on {command.host}: {errors[-300:]}",
            hint="fix the command in the policy; no snapshot was taken",
        )
    return output
