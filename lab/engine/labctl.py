"""The lab's own control endpoint (not part of the oVirt API), same bearer token:

`POST /ovirt-engine/lab/vms/<vm name>/disks/<n>/write` `{"offset": int, "length": int}`
writes as the guest would to the n-th (0-based) disk of the VM.
"""

from __future__ import annotations

import json
import re
from typing import Any

from lab.dataplane import VolumeRef
from lab.engine.context import Engine
from lab.engine.faults import ApiError
from lab.engine.inventory import Disk, DiskState
from lab.engine.router import Response

_WRITE = re.compile(r"^/vms/(?P<vm>[^/]+)/disks/(?P<index>\d+)/write/?$")
_SNAPSHOT_WAIT_S = 60.0


def handle(engine: Engine, method: str, path: str, body: bytes) -> Response:
    match = _WRITE.match(path)
    if method != "POST" or match is None:
        return _json(404, {"error": f"no lab endpoint {method} {path}"})
    try:
        request = json.loads(body or b"{}")
        offset, length = int(request["offset"]), int(request["length"])
    except (ValueError, KeyError, TypeError) as exc:
        return _json(400, {"error": f"bad request: {exc}"})
    try:
        ref = _target(engine, match.group("vm"), int(match.group("index")))
    except ApiError as error:
        return _json(error.status, {"error": error.detail})
    engine.dataplane.guest_write(ref, offset, length)
    return _json(200, {"disk_id": ref.disk_id, "volume_id": ref.volume_id})


def _target(engine: Engine, vm_name: str, index: int) -> VolumeRef:
    """The disk's active volume, once any snapshot in progress has settled."""
    inv = engine.inventory
    with inv.lock:
        vm = inv.vm_by_name(vm_name)
        disk_ids = vm.own_disk_ids()
        if index >= len(disk_ids):
            raise ApiError(404, f"VM {vm_name} has no disk {index}")
        disk = inv.disk(disk_ids[index])
        inv.changed.wait_for(lambda: not _in_snapshot(disk), timeout=_SNAPSHOT_WAIT_S)
        return disk.ref()


def _in_snapshot(disk: Disk) -> bool:
    return disk.status == DiskState.LOCKED and disk.lock_reason == "snapshot"


def _json(status: int, payload: Any) -> Response:
    return Response(status, json.dumps(payload), "application/json")
