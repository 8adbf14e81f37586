"""SSH credentials of a manager's hypervisors: what the API takes, its checks, what it shows.

Mode ssh reads a VM's volumes straight off a hypervisor that sees its storage. Each host it
may use is registered under its engine name (`drover host add MANAGER HOST`, `PUT
/managers/{name}/hosts/{host}`): the address to reach it at, the SSH port and user, its pinned
host key, and a private key or a password. They are stored by `shared.ssh.credentials`, the
secrets sealed (`shared.sealed`); no view shows a secret: it says `auth: private_key` or
`auth: password` instead.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

import paramiko
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from orchestrator.policies import describe_errors
from shared.engine.models import HostInfo
from shared.errors import ConfigError
from shared.ssh.access import HostAccess

DEFAULTS = HostAccess(name="", address="")
MAX_HOST_CHARS = 255  # of a host's name or address
MAX_PIN_CHARS = 16384  # of a pinned public key (an RSA key of 16384 bits fits)
KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
)
SHA256_BYTES = 32
PIN_HINT = (
    "give the host's public key as known_hosts holds it ('ssh-ed25519 AAAA...', e.g. from "
    "`ssh-keyscan -t ed25519 HOST`) or its fingerprint ('SHA256:...', from "
    "`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the host)"
)


class HostIn(BaseModel):
    """One host's SSH access as a client gives it: a private key (its text) or a password."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    address: str = Field(min_length=1, max_length=MAX_HOST_CHARS)
    port: int = Field(default=DEFAULTS.port, ge=1, le=65535)
    user: str = Field(default=DEFAULTS.user, min_length=1, max_length=64)
    host_key: str = Field(min_length=1, max_length=MAX_PIN_CHARS)  # the pin
    private_key: SecretStr = SecretStr("")  # no length limit: an error would carry it
    password: SecretStr = SecretStr("")
    mount_root: str = Field(default=DEFAULTS.mount_root, min_length=1, max_length=4096)
    dev_root: str = Field(default=DEFAULTS.dev_root, min_length=1, max_length=4096)

    def document(self) -> dict[str, Any]:
        """Everything, the secrets revealed: what the service takes."""
        return self.model_dump() | {
            "private_key": self.private_key.get_secret_value(),
            "password": self.password.get_secret_value(),
        }


def host_from(data: dict[str, Any], where: str) -> HostIn:
    try:
        return HostIn.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{where}: {describe_errors(e, HostIn)}") from None


def checked_access(name: str, spec: HostIn, where: str) -> HostAccess:
    """The host's access with its pin normalised, or a ConfigError saying what is wrong."""
    check_name(name, "host")
    for label, value in (("address", spec.address), ("user", spec.user)):
        if not value.isprintable() or any(c.isspace() for c in value) or value.startswith("-"):
            raise ConfigError(
                f"{where}: {label} {value[:64]!r} is not valid",
                hint=f"give the {label} without spaces or control characters",
            )
    for label, path in (("mount_root", spec.mount_root), ("dev_root", spec.dev_root)):
        if not (path.startswith("/") and path.isprintable()):
            raise ConfigError(
                f"{where}: {label} {path[:64]!r} is not an absolute path",
                hint=f"the default is {getattr(DEFAULTS, label)}",
            )
    key = spec.private_key.get_secret_value()
    password = spec.password.get_secret_value()
    if bool(key.strip()) == bool(password):
        raise ConfigError(
            f"{where}: give a private key or a password" + (", not both" if password else ""),
            hint="`drover host add` takes --key-file FILE (preferred) or --password-env VAR",
        )
    access = HostAccess(
        name=name,
        address=spec.address,
        port=spec.port,
        user=spec.user,
        host_key=checked_pin(spec.host_key, where),
        private_key=key,
        password=password,
        mount_root=spec.mount_root,
        dev_root=spec.dev_root,
    )
    access.pkey()  # a ConfigError naming the key types it takes unless the key parses
    return access


def quoted_name(value: str) -> str:
    """A name a client gave, quoted for a message and cut to 64 characters."""
    return repr(value[:64]) + (f"... ({len(value)} characters)" if len(value) > 64 else "")


def check_name(value: str, what: str) -> None:
    if not value or len(value) > MAX_HOST_CHARS or not value.isprintable():
        raise ConfigError(
            f"{what} name {quoted_name(value)} is not valid",
            hint=f"give the name the engine shows (printable, at most {MAX_HOST_CHARS} characters)",
        )


def checked_pin(pin: str, where: str) -> str:
    """A pin `shared.ssh_trust` understands: 'TYPE BASE64' (a known_hosts line's host names
    and comment are dropped) or 'SHA256:...', or a ConfigError."""
    pin = pin.strip()
    if pin.startswith("SHA256:"):
        digest = pin.removeprefix("SHA256:").rstrip("=")
        if len(_b64(digest)) == SHA256_BYTES:
            return f"SHA256:{digest}"
        raise ConfigError(
            f"{where}: host_key {pin[:64]!r} is not a SHA256 fingerprint "
            f"(43 base64 characters after 'SHA256:')",
            hint=PIN_HINT,
        )
    parts = pin.split()
    if len(parts) >= 3 and parts[0] not in KEY_TYPES and parts[1] in KEY_TYPES:
        parts = parts[1:]  # a known_hosts line: host names first
    if len(parts) >= 2 and parts[0] in KEY_TYPES and _public_key(parts[0], parts[1]):
        return f"{parts[0]} {parts[1]}"
    given = parts[0] if parts else ""
    what = (
        f"a {given} key that does not parse"
        if given in KEY_TYPES
        else "neither a public key nor a SHA256 fingerprint"
    )
    raise ConfigError(
        f"{where}: host_key {pin[:64]!r} is {what} (key types: {', '.join(KEY_TYPES)})",
        hint=PIN_HINT,
    )


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return b""


def _public_key(key_type: str, blob: str) -> bool:
    raw = _b64(blob)
    try:
        key = paramiko.PKey.from_type_string(key_type, raw)
    except Exception:  # paramiko's errors for a malformed key are of many types
        return False
    return bool(raw) and key.get_name() == key_type


# views -----------------------------------------------------------------------------------


def registered_view(redacted: dict[str, object]) -> dict[str, object]:
    """`HostAccess.redacted()` as the API shows it: `auth` instead of the secrets' marks."""
    view = {k: v for k, v in redacted.items() if k not in ("private_key", "password")}
    view["auth"] = "private_key" if redacted.get("private_key") else "password"
    return view


def hosts_view(
    engine_hosts: Sequence[HostInfo], registered: Sequence[dict[str, object]]
) -> list[dict[str, object]]:
    """Every host of the engine, with `credentials` true or false and, when true, what is
    registered (without secrets); then credentials of hosts the engine no longer has."""
    by_name = {str(r["name"]): registered_view(r) for r in registered}
    views: list[dict[str, object]] = []
    for host in sorted(engine_hosts, key=lambda h: h.name):
        view: dict[str, object] = {
            "name": host.name,
            "id": host.id,
            "cluster_id": host.cluster_id,
            "status": host.status,
            "engine_address": host.address,
            "on_engine": True,
            "credentials": host.name in by_name,
        }
        views.append(view | {k: v for k, v in by_name.get(host.name, {}).items() if k != "name"})
    known = {h.name for h in engine_hosts}
    for name in sorted(set(by_name) - known):
        views.append({"name": name, "on_engine": False, "credentials": True} | by_name[name])
    return views


def host_report(
    engine_hosts: Sequence[HostInfo], registered: Sequence[dict[str, object]]
) -> dict[str, list[str]]:
    """The engine's hosts, those without SSH credentials, and credentials of hosts the engine
    no longer has: what `drover manager add` and `drover manager sync` report."""
    names = sorted(h.name for h in engine_hosts)
    with_credentials = {str(r["name"]) for r in registered}
    return {
        "hosts": names,
        "hosts_without_ssh": [n for n in names if n not in with_credentials],
        "credentials_without_host": sorted(with_credentials - set(names)),
    }
