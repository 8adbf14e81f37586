"""The engine client: a typed, error-translating layer over ovirtsdk4."""

from shared.engine.client import EngineClient
from shared.engine.errors import (
    CheckpointInvalid,
    EngineAuthError,
    EngineConflict,
    EngineError,
    EngineNotFound,
    EngineOperationFailed,
    EngineRejected,
    EngineTimeout,
    EngineTlsError,
    EngineUnreachable,
    NoGuestAgent,
    translate,
    translated,
)
from shared.engine.models import (
    BackupInfo,
    CleanupReport,
    ClusterInfo,
    DiskInfo,
    StorageDomainInfo,
    TransferInfo,
    VmInfo,
)
from shared.engine.validation import validate_engine_url, validate_username

__all__ = [
    "BackupInfo",
    "CheckpointInvalid",
    "CleanupReport",
    "ClusterInfo",
    "DiskInfo",
    "EngineAuthError",
    "EngineClient",
    "EngineConflict",
    "EngineError",
    "EngineNotFound",
    "EngineOperationFailed",
    "EngineRejected",
    "EngineTimeout",
    "EngineTlsError",
    "EngineUnreachable",
    "NoGuestAgent",
    "StorageDomainInfo",
    "TransferInfo",
    "VmInfo",
    "translate",
    "translated",
    "validate_engine_url",
    "validate_username",
]
