"""`mode: auto`: which mode backs up a VM, chosen from facts, with the reason written down.

The facts are the engine's version (the backup API needs 4.4), the VM's disk formats and
storage types, and whether a proxy worker serves the VM's cluster. Auto chooses image
transfer, which makes incrementals; disk_attachment (full backups only, through a proxy VM)
is never chosen by auto, only named by a policy. The reason names what was considered, so
`drover jobs ID` tells an operator why a VM went the way it did.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.engine.models import EngineVersion
from shared.modes import mode_for
from shared.modes.image_transfer import BACKUP_API


@dataclass(frozen=True)
class VmFacts:
    engine_version: EngineVersion
    disk_formats: tuple[str, ...]  # raw | cow, one per disk backed up
    storage_types: tuple[str, ...]  # nfs, glusterfs, iscsi, fcp, ... of those disks
    proxy_worker: bool  # a live worker consumes the cluster's proxy queue


@dataclass(frozen=True)
class ModeChoice:
    mode: str
    reason: str
    snapshot_chain: bool = False  # image_transfer through snapshot chains, not the backup API


def choose_mode(requested: str, facts: VmFacts, *, snapshot_chain: bool = False) -> ModeChoice:
    """`snapshot_chain`: the policy asks image transfer to use snapshot chains; an engine
    without the backup API (before 4.4) gets them anyway."""
    if requested == "image_transfer":
        return _image_transfer(f"mode {requested} set by the policy", facts, snapshot_chain)
    if requested != "auto":
        mode_for(requested)  # refuses what this version cannot do
        return ModeChoice(requested, f"mode {requested} set by the policy")
    return _image_transfer(_image_transfer_reason(facts), facts, snapshot_chain)


def _image_transfer(reason: str, facts: VmFacts, snapshot_chain: bool) -> ModeChoice:
    if snapshot_chain:
        return ModeChoice("image_transfer", f"{reason}; snapshot chains by policy", True)
    if facts.engine_version < BACKUP_API:
        why = f"snapshot chains: engine {facts.engine_version} has no backup API (4.4+)"
        return ModeChoice("image_transfer", f"{reason}; {why}", True)
    return ModeChoice("image_transfer", reason)


def _image_transfer_reason(facts: VmFacts) -> str:
    api = "has the backup API" if facts.engine_version >= BACKUP_API else "has no backup API"
    parts = [f"auto chose image_transfer: engine {facts.engine_version} {api}"]
    raw = facts.disk_formats.count("raw")
    if raw:
        parts.append(f"{raw} raw disk(s) have no incremental tracking and are read in full")
    if facts.storage_types:
        parts.append(f"storage: {', '.join(sorted(set(facts.storage_types)))}")
    if facts.proxy_worker:
        parts.append(
            "a proxy worker serves the cluster; disk_attachment (full only) is not chosen by auto"
        )
    else:
        parts.append("no proxy worker serves the cluster")
    return "; ".join(parts)
