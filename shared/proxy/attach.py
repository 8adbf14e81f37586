"""Disks plugged into the proxy VM this worker runs in, journalled so nothing stays attached.

An attachment is recorded (`attach:<disk id>` = the proxy VM's id) before it is asked for and
cleared once the disk is detached. Whatever process dies in between, the next attempt of the
step (on this proxy or another one of the cluster), the job's cleanup or a restore's undo
detaches what is recorded, before the snapshot or the disk is removed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from shared.backup.journal import Recorder
from shared.engine.client import EngineClient
from shared.logging import get_logger
from shared.proxy.devices import wait_device, wait_gone
from shared.proxy.node import own_vm_id
from shared.settings import get_settings

ATTACH = "attach:"
log = get_logger(__name__)


@dataclass(frozen=True)
class ThisNode:
    """The proxy VM this worker runs in, and where its /dev is."""

    vm_id: str
    root: Path

    @classmethod
    def find(cls) -> ThisNode:
        root = get_settings().proxy.root
        return cls(own_vm_id(root), root)


@contextmanager
def plugged(
    engine: EngineClient, journal: Recorder, node: ThisNode, disk_id: str, snapshot_id: str | None
) -> Iterator[Path]:
    """The disk (as of `snapshot_id`, read-only, when given) as a device of this node,
    detached when the block ends, and its device gone."""
    name = ATTACH + disk_id
    stale = journal.objects().get(name, "")
    if stale:  # an earlier attempt's, here or on another proxy of the cluster
        log.info("detaching a disk left attached by an earlier attempt", vm_id=stale)
        _unplug(engine, journal, stale, disk_id)
    journal.record(name, node.vm_id)
    engine.plug_disk(node.vm_id, disk_id, snapshot_id)
    try:
        yield wait_device(node.root, disk_id)
    except BaseException:
        _unplug_quietly(engine, journal, node.vm_id, disk_id)
        raise
    _unplug(engine, journal, node.vm_id, disk_id)
    wait_gone(node.root, disk_id)


def unplug_recorded(engine: EngineClient, recorded: Mapping[str, str]) -> None:
    """Detach every disk a job recorded as attached (cleanup and undo)."""
    for name, vm_id in recorded.items():
        if name.startswith(ATTACH) and vm_id:
            disk_id = name[len(ATTACH) :]
            log.info("detaching a disk a failed job left attached", disk_id=disk_id, vm_id=vm_id)
            engine.unplug_disk(vm_id, disk_id)


def _unplug(engine: EngineClient, journal: Recorder, vm_id: str, disk_id: str) -> None:
    engine.unplug_disk(vm_id, disk_id)
    journal.record(ATTACH + disk_id, "")


def _unplug_quietly(engine: EngineClient, journal: Recorder, vm_id: str, disk_id: str) -> None:
    """On a failure: the failure is what is reported; the journal keeps the attachment for
    the job's cleanup when the detach fails too."""
    try:
        _unplug(engine, journal, vm_id, disk_id)
    except Exception as error:
        log.warning("could not detach a disk", disk_id=disk_id, error=str(error))
