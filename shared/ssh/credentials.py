"""Per-host SSH credentials of a manager's hypervisors, kept in Redis with secrets sealed.

A host is registered under its engine name (`drover host add MANAGER HOST ...`): address,
port, user, pinned host key, and a private key or a password (sealed, `shared.sealed`).
The workers pick, for a VM, a host that sees its storage and has credentials; a host without
them is named in the error, never guessed at.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

from shared.engine.client import EngineClient
from shared.engine.models import HostInfo, VmInfo
from shared.errors import ConfigError
from shared.sealed import seal, unseal
from shared.ssh.access import HostAccess
from shared.state import StateStore

KIND = "host"
SECRETS = ("private_key", "password")


def _name(manager: str, host: str) -> str:
    return f"{manager}:{host}"


def save_host(
    store: StateStore, manager: str, access: HostAccess, key: bytes | None = None
) -> None:
    """`key`: the fleet's sealing key (`shared.sealed.fleet_key`); None: this node's."""
    document: dict[str, Any] = asdict(access)
    for field in SECRETS:
        document[field] = seal(document[field], key)
    document["manager"] = manager
    store.put_document(KIND, _name(manager, access.name), document)


def remove_host(store: StateStore, manager: str, host: str) -> bool:
    return store.remove_document(KIND, _name(manager, host))


def host_access(store: StateStore, manager: str, host: str) -> HostAccess | None:
    document = store.document(KIND, _name(manager, host))
    if document is None:
        return None
    access = _access(document)
    return replace(access, private_key=unseal(access.private_key), password=unseal(access.password))


def registered_hosts(store: StateStore, manager: str) -> list[dict[str, object]]:
    """The manager's registered hosts, without their secrets."""
    return [_access(d).redacted() for d in store.documents(KIND) if d.get("manager") == manager]


def _access(document: dict[str, Any]) -> HostAccess:
    return HostAccess(**{k: v for k, v in document.items() if k != "manager"})


def pick_host(
    engine: EngineClient, store: StateStore, manager: str, vm: VmInfo | None
) -> HostAccess:
    """The VM's own host when it has credentials (its volumes are already active there),
    else an up host of the VM's cluster, else any up host; the first with credentials."""
    hosts = [h for h in engine.hosts() if h.status == "up"]
    for host in _preference(hosts, vm):
        access = host_access(store, manager, host.name)
        if access is not None:
            return access
    missing = ", ".join(sorted(h.name for h in hosts)) or "none is up"
    what = f"VM {vm.name}'s disks" if vm else "the storage"
    raise ConfigError(
        f"no host that can reach {what} has SSH credentials (hosts: {missing})",
        hint=f"register one with `drover host add {manager} HOST --address ... --key-file ...`",
    )


def _preference(hosts: list[HostInfo], vm: VmInfo | None) -> list[HostInfo]:
    if vm is None:
        return sorted(hosts, key=lambda h: h.name)
    own = [h for h in hosts if h.id == vm.host_id]
    cluster = sorted((h for h in hosts if h.cluster_id == vm.cluster_id), key=lambda h: h.name)
    rest = sorted(hosts, key=lambda h: h.name)
    seen: set[str] = set()
    ordered = []
    for host in [*own, *cluster, *rest]:
        if host.id not in seen:
            seen.add(host.id)
            ordered.append(host)
    return ordered
