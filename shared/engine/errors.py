"""Engine failures, translated from `ovirtsdk4.Error` in one place.

`translate(error)` maps an SDK error (HTTP status in `.code`, the engine's fault in `.fault`)
to a `DroverError` that says what failed and what to do; `translated()` applies it to a block
or a function. Errors that are already `DroverError`s pass through unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ovirtsdk4 as sdk

from shared.errors import ConfigError, DroverError, ServiceError

_GUEST_AGENT = re.compile(r"guest[\s_-]*agent", re.IGNORECASE)
_TLS = re.compile(r"ssl|certificate|tls", re.IGNORECASE)


class EngineError(DroverError):
    """Something the engine refused or failed; `code` is the HTTP status when there was one."""

    def __init__(self, message: str, *, hint: str = "", code: int | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code


class EngineAuthError(EngineError, ConfigError):
    """Wrong credentials (401) or missing permissions (403)."""


class EngineTlsError(EngineError, ConfigError):
    """The engine's certificate could not be verified."""


class EngineUnreachable(EngineError, ServiceError):
    """No answer from the engine (down, network, timeout); worth retrying."""


class EngineNotFound(EngineError):
    """The object does not exist (any more)."""


class EngineConflict(EngineError, ServiceError):
    """409: the object is locked or busy (snapshot, backup, transfer); worth retrying."""


class EngineRejected(EngineError):
    """400: the engine refused the request; `reason` is the engine's own explanation."""

    def __init__(self, message: str, *, reason: str, hint: str = "", code: int | None = None):
        super().__init__(message, hint=hint, code=code)
        self.reason = reason


class NoGuestAgent(EngineError):
    """The guest agent is not running in the VM: quiescing is impossible."""


class CheckpointInvalid(EngineError):
    """An incremental backup was refused because its `from_checkpoint_id` is unknown/invalid."""


class EngineTimeout(EngineError, ServiceError):
    """An engine object did not reach the expected state in time."""


class EngineOperationFailed(EngineError, ServiceError):
    """A backup or image transfer ended in a failed phase."""


def fault_text(error: Any) -> str:
    """The engine's own explanation: the fault's detail (without brackets) or reason."""
    fault = getattr(error, "fault", None)
    detail = str(getattr(fault, "detail", "") or "").strip()
    if detail.startswith("[") and detail.endswith("]"):
        detail = detail[1:-1].strip()
    reason = str(getattr(fault, "reason", "") or "").strip()
    return detail or reason or str(error)


def mentions_guest_agent(error: Any) -> bool:
    return bool(_GUEST_AGENT.search(fault_text(error)))


def translate(error: BaseException, action: str = "", *, user: str = "") -> DroverError:
    """The `DroverError` for `error` raised while doing `action` (e.g. "adding a backup")."""
    if isinstance(error, DroverError):
        return error
    doing = f" while {action}" if action else ""
    if not isinstance(error, sdk.Error):
        return EngineUnreachable(f"engine call failed{doing}: {error}", hint="retry later")
    code = getattr(error, "code", None)
    text = fault_text(error)
    if isinstance(error, sdk.AuthError) or code in (401, 403):
        return _auth_error(code, doing, user)
    if isinstance(error, sdk.ConnectionError | sdk.TimeoutError):
        return EngineUnreachable(
            f"the engine did not answer{doing}: {error}",
            hint="check the engine URL, the network and that the engine is up",
        )
    if isinstance(error, sdk.NotFoundError) or code == 404:
        return EngineNotFound(f"not found{doing}: {text}", code=code)
    if mentions_guest_agent(error):
        return NoGuestAgent(
            f"the guest agent is not available{doing}: {text}",
            hint="install and start qemu-guest-agent in the VM, or back up without quiescing",
            code=code,
        )
    if code == 409:
        return EngineConflict(f"the object is locked{doing}: {text}", hint="retry later", code=code)
    if code == 400:
        return EngineRejected(f"the engine refused{doing}: {text}", reason=text, code=code)
    if code is None and _TLS.search(str(error)):
        return EngineTlsError(
            f"the engine's certificate was not accepted{doing}: {error}",
            hint="set engine.ca_file to the engine CA (pki-resource?resource=ca-certificate)",
        )
    if code is None:
        return EngineUnreachable(f"engine call failed{doing}: {error}", hint="retry later")
    return EngineError(f"the engine failed{doing} (HTTP {code}): {text}", code=code)


def _auth_error(code: int | None, doing: str, user: str) -> EngineAuthError:
    who = f"user {user}" if user else "the user"
    if code == 403:
        return EngineAuthError(
            f"the engine denied {who} permission{doing}",
            hint="grant the user a role that manages VMs, disks, snapshots and backups",
            code=code,
        )
    return EngineAuthError(
        f"the engine refused {who}{doing}: check the user name (user@domain) and password",
        code=code,
    )


@contextmanager
def translated(action: str = "", *, user: str = "") -> Iterator[None]:
    """Raise SDK errors inside the block as `DroverError`s (usable as a decorator too)."""
    try:
        yield
    except DroverError:
        raise
    except (sdk.Error, OSError) as error:
        raise translate(error, action, user=user) from error
