"""What every handler and job needs: the model, the data plane, timings, background tasks."""

from __future__ import annotations

from dataclasses import dataclass, field

from lab.dataplane import DataPlane
from lab.engine.inventory import Inventory
from lab.engine.tasks import Tasks
from lab.engine.version import DEFAULT_VERSION, EngineVersion


@dataclass
class Timings:
    """How long the engine's asynchronous commands take (seconds)."""

    disk_op: float = 0.3  # disk add / move steps
    snapshot: float = 0.6  # snapshot creation and removal
    transfer_init: float = 0.3  # INITIALIZING -> TRANSFERRING
    transfer_final: float = 0.2  # FINALIZING_* -> FINISHED_*
    backup_step: float = 0.2  # INITIALIZING -> STARTING -> READY, FINALIZING -> SUCCEEDED
    vm_power: float = 0.3  # POWERING_UP/DOWN -> UP/DOWN
    finished_ttl: float = 60.0  # finished transfers are removed after this long
    backup_ttl: float = 900.0  # finished backups are removed after this long
    monitor_interval: float = 0.5  # inactivity / cleanup monitor period
    ticket_timeout: int = 24 * 3600  # imageio ticket lifetime
    # TransferImageClientInactivityTimeoutInSeconds: a transfer's inactivity_timeout when
    # the request names none (0 disables the check)
    inactivity_timeout: int = 60
    guest_report: float = 3.0  # a hot-plugged disk's logical_name appears after this long


@dataclass
class Engine:
    inventory: Inventory
    dataplane: DataPlane
    tasks: Tasks
    timings: Timings
    # the version the engine presents; replaced whole (never mutated) when changed at runtime
    version: EngineVersion = field(default=DEFAULT_VERSION)
