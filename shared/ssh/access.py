"""How a worker reaches one hypervisor over SSH: address, pinned host key, credentials."""

from __future__ import annotations

import io
from dataclasses import dataclass

import paramiko

from shared.errors import ConfigError

KEY_CLASSES: tuple[type[paramiko.PKey], ...] = (
    paramiko.Ed25519Key,
    paramiko.ECDSAKey,
    paramiko.RSAKey,
)


@dataclass(frozen=True)
class HostAccess:
    name: str  # the engine's host name, used in every error message
    address: str
    port: int = 22
    user: str = "root"
    host_key: str = ""  # pin: "ssh-ed25519 AAAA..." or "SHA256:..."; empty: refused
    private_key: str = ""  # the private key text (OpenSSH or PEM), not a path
    password: str = ""  # used when there is no key
    mount_root: str = "/rhev/data-center/mnt"
    dev_root: str = "/dev"

    @property
    def where(self) -> str:
        return f"host {self.name} ({self.user}@{self.address}:{self.port})"

    def redacted(self) -> dict[str, object]:
        """For logs: everything but the key and the password."""
        return {
            "name": self.name,
            "address": self.address,
            "port": self.port,
            "user": self.user,
            "host_key": self.host_key,
            "private_key": "***" if self.private_key else "",
            "password": "***" if self.password else "",
            "mount_root": self.mount_root,
            "dev_root": self.dev_root,
        }

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.redacted().items())
        return f"HostAccess({fields})"

    def pkey(self) -> paramiko.PKey | None:
        """The private key, parsed; None when there is none (password authentication)."""
        if not self.private_key.strip():
            return None
        for key_class in KEY_CLASSES:
            try:
                return key_class.from_private_key(io.StringIO(self.private_key))
            except paramiko.PasswordRequiredException as e:
                raise ConfigError(
                    f"the private key for {self.where} is encrypted",
                    hint="give a key without a passphrase",
                ) from e
            except (paramiko.SSHException, ValueError, TypeError, IndexError):
                continue
        raise ConfigError(
            f"the private key for {self.where} is not an ed25519, ECDSA or RSA key "
            "in OpenSSH or PEM form",
            hint="paste the whole private key file, BEGIN and END lines included",
        )
