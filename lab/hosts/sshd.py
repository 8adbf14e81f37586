"""A real OpenSSH server per lab host, accepting the lab client key only."""

from __future__ import annotations

import getpass
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lab import procs

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def keygen(path: Path, comment: str) -> Path:
    """Create an ed25519 key pair without passphrase at `path` unless it exists."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True,
            capture_output=True,
        )
    return path


@dataclass(frozen=True)
class ClientKey:
    """The lab's one ssh identity and the authorized_keys file every sshd trusts."""

    private_key: Path
    authorized_keys: Path

    @classmethod
    def create(cls, ssh_dir: Path) -> ClientKey:
        key = keygen(ssh_dir / "id_ed25519", "drover-lab")
        authorized = ssh_dir / "authorized_keys"
        authorized.write_text(key.with_suffix(".pub").read_text())
        authorized.chmod(0o600)
        return cls(key, authorized)


def ssh_user() -> str:
    return getpass.getuser()


class SshServer:
    def __init__(
        self,
        name: str,
        directory: Path,
        port: int,
        client: ClientKey,
        bin_dir: Path,
        registry: procs.ProcessRegistry,
    ) -> None:
        self.name = name
        self.directory = directory
        self.port = port
        self.client = client
        self.bin_dir = bin_dir
        self._registry = registry
        self._proc: procs.ManagedProcess | None = None

    @property
    def config_file(self) -> Path:
        return self.directory / "sshd_config"

    def _config(self, host_key: Path) -> str:
        lines = [
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {host_key}",
            f"PidFile {self.directory / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.client.authorized_keys}",
            "AuthenticationMethods publickey",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            "StrictModes no",
            "UseDNS no",
            "PrintMotd no",
            "LogLevel VERBOSE",
            f"SetEnv PATH={self.bin_dir}:{SYSTEM_PATH}",
            "Subsystem sftp internal-sftp",
        ]
        return "\n".join(lines) + "\n"

    def spawn(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        host_key = keygen(self.directory / "ssh_host_ed25519_key", f"{self.name}-host")
        self.config_file.write_text(self._config(host_key))
        argv = [SSHD, "-D", "-e", "-f", str(self.config_file)]
        self._proc = self._registry.start(f"sshd-{self.name}", argv, self.directory / "sshd.log")

    def host_public_key(self) -> str:
        """ "type base64" of the host key, as a known_hosts entry holds it."""
        text = (self.directory / "ssh_host_ed25519_key.pub").read_text().split()
        return " ".join(text[:2])

    def wait_ready(self, timeout_s: float = 10) -> None:
        assert self._proc is not None, "spawn() first"
        self._proc.wait_ready(lambda: procs.port_open(self.port), timeout_s)

    def stop(self) -> None:
        if self._proc is not None:
            self._registry.stop(self._proc)
            self._proc = None
