"""Pinned SSH host keys: a host is trusted only with the key it was registered with.

A pin is the host's public key as a known_hosts entry holds it ("ssh-ed25519 AAAA...") or
its SHA256 fingerprint as `ssh-keygen -lf` prints it ("SHA256:..."). An unknown or changed
key stops the connection with an error naming the host: never accept a key on first use.
"""

from __future__ import annotations

import base64
import hashlib

import paramiko

from shared.errors import ConfigError


class HostKeyRefused(ConfigError):
    """The host presented a key other than the pinned one."""


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def matches(key: paramiko.PKey, pin: str) -> bool:
    pin = pin.strip()
    if pin.startswith("SHA256:"):
        return fingerprint(key) == pin.rstrip("=")
    parts = pin.split()
    return len(parts) >= 2 and parts[0] == key.get_name() and parts[1] == key.get_base64()


class PinnedHostKey(paramiko.MissingHostKeyPolicy):
    """paramiko calls this for every host it has no known_hosts entry for: all of them."""

    def __init__(self, pin: str, where: str) -> None:
        self._pin = pin
        self._where = where

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        if not self._pin:
            raise HostKeyRefused(
                f"no host key is pinned for {self._where}; it presented {fingerprint(key)}",
                hint="add the host key (its public key or SHA256 fingerprint) to the settings",
            )
        if not matches(key, self._pin):
            raise HostKeyRefused(
                f"the host key of {self._where} has changed: it presented {fingerprint(key)}, "
                "which is not the pinned key",
                hint="if the host was reinstalled, pin its new key; otherwise do not connect",
            )
