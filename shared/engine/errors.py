"""Engine failures, translated from `ovirtsdk4.Error` in one place.

`translate(error)` maps an SDK error (HTTP status in `.code`, the engine's fault in `.fault`)
to a `DroverError` that says what happened and what to do; `translated()` applies it to a
block or a function. Errors that are already `DroverError`s pass through unchanged.

The tree, grouped by what the caller can do (`retryable` is True under ServiceError):

    DroverError
    * ConfigError ................ fix the settings; retrying never helps
      + EngineAuthError .......... 401/403: wrong credentials, missing permissions
      + EngineTlsError ........... the engine's certificate is not trusted
    * ServiceError ............... retry later (the same call may pass)
      + EngineTransient .......... the engine or the way to it failed, not the request
      | - EngineUnreachable ...... no answer: refused, DNS, TLS handshake, timeout, reset
      | - EngineUnavailable ...... 5xx: the engine's own fault, or a proxy answering for it
      + EngineConflict ........... 409: the object is locked or busy
      + EngineTimeout ............ an object did not reach the awaited state in time
      + EngineOperationFailed .... a backup or image transfer ended failed
    * EngineError (the others) ... change the request, or accept the answer
      + EngineNotFound ........... 404: the object does not exist (any more)
      + EngineRejected ........... 400: refused; `reason` is the engine's own words
      | - EngineNameInUse ........ 409/400: the name (or id) is taken
      + NoGuestAgent ............. quiescing needs qemu-guest-agent in the VM
      + CheckpointInvalid ........ an incremental backup's checkpoint is unknown

Every `Engine*` class derives from `EngineError` (with `code`, the HTTP status when there
was one); the indentation shows what else it derives from. An `EngineTransient` has `reached`:
False only when the request demonstrably never reached the engine (connection refused, name
not resolved, TLS handshake failed, a 503 without the engine's fault, i.e. from the proxy in
front of it, or logging in failed before the request was sent).

What `EngineClient` retries by itself (`shared.engine.retry`): only `EngineTransient`, with
backoff (0.5 s doubling to 10 s, jittered) for up to `RETRY.budget_s` (300 s) per call,
logging each retry; the engine's own 500 fault at most `RETRY.fault_attempts` (3) times.

    kind        EngineClient methods                                  retried on
    LOGIN       connect (logging in to the SSO)                       any EngineTransient
    READ        test, version, find_vms, vm, vm_ovf, disk, clusters,  any EngineTransient
                storage_domains, checkpoints, backup, open_backups,
                transfer, open_transfers; and the wait for a new
                object to be ready that follows each CREATE
    IDEMPOTENT  finalize_backup, finalize_transfer, cancel_transfer,  any EngineTransient
                cleanup_vm, remove_vm, remove_disk, remove_checkpoint,
                thaw (each looks at the object's state before it acts);
                start_backup with a backup_id (a backup with that id
                found on the engine is the one an earlier attempt made)
    CREATE      start_backup without a backup_id, start_transfer,     EngineTransient with
                add_disk, add_vm_from_ovf, attach_disk, freeze        reached=False only

A CREATE that fails after it may have reached the engine is not repeated (that could make a
duplicate); its error is still a `ServiceError`, so the job step is retried, and the step
knows which objects it recorded. Everything else (409, 404, 400, 401/403, a wait that timed
out, a failed operation) is never retried by the client.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ovirtsdk4 as sdk

from shared.errors import ConfigError, DroverError, ServiceError

_GUEST_AGENT = re.compile(r"guest[\s_-]*agent", re.IGNORECASE)
_CURL_CODE = re.compile(r"\((?:<[^>]*>,\s*)?(\d+),\s*['\"]")  # "(7, '..." or "(<Curl ...>, 7, '..."
_CURL_LIST = re.compile(r"\[\(<[^>]*>,\s*(\d+),\s*['\"](.*)['\"]\)\]")  # the SDK's multi errors
_TLS_CURL_CODES = {51, 58, 59, 60, 77, 80, 82, 83, 90, 91}  # certificate/CA/pinning problems
_NOT_SENT_CURL_CODES = {6, 7, 35}  # name not resolved, connection refused, TLS handshake failed
_IN_USE = re.compile(r"already (?:in use|exists|used)|name is (?:already )?(?:in use|taken)", re.I)
_BUSY = re.compile(
    r"locked|in progress|being \w+|during a|try again|busy|not ready|currently", re.IGNORECASE
)
RETRY_LATER = "retry later"


class EngineError(DroverError):
    """Something the engine refused or failed; `code` is the HTTP status when there was one."""

    def __init__(self, message: str, *, hint: str = "", code: int | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code


class EngineAuthError(EngineError, ConfigError):
    """Wrong credentials (401) or missing permissions (403)."""


class EngineTlsError(EngineError, ConfigError):
    """The engine's certificate could not be verified."""


class EngineTransient(EngineError, ServiceError):
    """The engine, or the way to it, failed; the request itself may well be fine.

    `reached` is False only when the request demonstrably did not reach the engine, so even
    a call that creates something may be sent again."""

    def __init__(
        self, message: str, *, hint: str = "", code: int | None = None, reached: bool = True
    ) -> None:
        super().__init__(message, hint=hint, code=code)
        self.reached = reached


class EngineUnreachable(EngineTransient):
    """No answer from the engine (down, network, TLS handshake, timeout)."""


class EngineUnavailable(EngineTransient):
    """5xx: the engine failed (`from_engine`: with its own fault) or a proxy answered for it."""

    def __init__(
        self,
        message: str,
        *,
        hint: str = "",
        code: int | None = None,
        reached: bool = True,
        from_engine: bool = False,
    ) -> None:
        super().__init__(message, hint=hint, code=code, reached=reached)
        self.from_engine = from_engine


class EngineNotFound(EngineError):
    """The object does not exist (any more)."""


class EngineConflict(EngineError, ServiceError):
    """409: the object is locked or busy (snapshot, backup, transfer); worth retrying."""


class EngineRejected(EngineError):
    """400: the engine refused the request; `reason` is the engine's own explanation."""

    def __init__(self, message: str, *, reason: str, hint: str = "", code: int | None = None):
        super().__init__(message, hint=hint, code=code)
        self.reason = reason


class EngineNameInUse(EngineRejected):
    """409 (or 400): an object with that name (or id) already exists; no retry changes that."""


class NoGuestAgent(EngineError):
    """The guest agent is not running in the VM: quiescing is impossible."""


class CheckpointInvalid(EngineError):
    """An incremental backup was refused because its `from_checkpoint_id` is unknown/invalid."""


class EngineTimeout(EngineError, ServiceError):
    """An engine object did not reach the expected state in time."""


class EngineOperationFailed(EngineError, ServiceError):
    """A backup or image transfer ended in a failed phase."""


class SsoUnavailable(sdk.Error):  # type: ignore[misc]  # ovirtsdk4 has no type hints
    """Raised by our connection when the engine's SSO answers without a token or an error of
    its own (a proxy's error page): logging in failed, so no API request was sent."""


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


def curl_code(error: BaseException) -> int | None:
    """libcurl's error number in an SDK transport error, e.g. 7 for "connection refused"."""
    match = _CURL_CODE.search(str(error))
    return int(match.group(1)) if match else None


def translate(error: BaseException, action: str = "", *, user: str = "") -> DroverError:
    """The `DroverError` for `error` raised while doing `action` (e.g. "adding a backup")."""
    if isinstance(error, DroverError):
        return error
    doing = f" while {action}" if action else ""
    if not isinstance(error, sdk.Error):
        return EngineUnreachable(f"engine call failed{doing}: {error}", hint=RETRY_LATER)
    if isinstance(error, SsoUnavailable):
        return EngineUnavailable(
            f"the engine's SSO is unavailable{doing} (it answered without a token: {error})",
            hint="the engine may be restarting; retry later",
            reached=False,
        )
    code = getattr(error, "code", None)
    if isinstance(error, sdk.AuthError) or code in (401, 403):
        return _auth_error(code, doing, user)
    if code is None and "isn't the expected" in str(error):  # e.g. a 404 page, not the API
        return EngineError(
            f"the answer was not the engine API's{doing}: {error}",
            hint="check engine.url (https://ENGINE_HOST/ovirt-engine/api)",
        )
    if code is None or isinstance(error, sdk.ConnectionError | sdk.TimeoutError):
        return _transport_error(error, doing)
    text = fault_text(error)
    if isinstance(error, sdk.NotFoundError) or code == 404:
        return EngineNotFound(f"not found{doing}: {text}", code=code)
    if mentions_guest_agent(error):
        return NoGuestAgent(
            f"the guest agent is not available{doing}: {text}",
            hint="install and start qemu-guest-agent in the VM, or back up without quiescing",
            code=code,
        )
    if code >= 500:
        return _server_error(error, code, text, doing)
    if code in (400, 409) and _IN_USE.search(text):
        what = "the name is already in use" if "name" in text.lower() else "it already exists"
        return EngineNameInUse(
            f"{what}{doing}: {text}",
            reason=text,
            hint="choose another name (e.g. restore --name), or remove the existing object",
            code=code,
        )
    if code == 409:
        if _BUSY.search(text):
            return EngineConflict(f"the object is busy{doing}: {text}", hint=RETRY_LATER, code=code)
        return EngineConflict(
            f"the engine refused{doing} in the object's current state: {text}",
            hint="retry once that state has changed",
            code=code,
        )
    if code == 400:
        return EngineRejected(f"the engine refused{doing}: {text}", reason=text, code=code)
    return EngineError(f"the engine failed{doing} (HTTP {code}): {text}", code=code)


def _transport_error(error: Any, doing: str) -> EngineError:
    """No HTTP answer from the engine: a TLS configuration problem or an unreachable engine."""
    curl = curl_code(error)
    message = str(error)
    if listed := _CURL_LIST.search(message):  # drop the "<pycurl.Curl object at 0x...>"
        message = f"{listed.group(2)} (curl error {listed.group(1)})"
    if curl in _TLS_CURL_CODES or (curl in (None, 35) and "certificate" in message.lower()):
        return EngineTlsError(
            f"the engine's certificate was not accepted{doing}: {message}",
            hint="set engine.ca_file to the engine CA (pki-resource?resource=ca-certificate)",
        )
    not_sent = isinstance(error, sdk.ConnectionError) or curl in _NOT_SENT_CURL_CODES
    if isinstance(error, sdk.TimeoutError) or curl == 28:
        what = "the engine did not answer in time"
    elif not_sent:
        what = "the engine did not answer"
    else:
        what = "the engine call failed"
    return EngineUnreachable(
        f"{what}{doing}: {message}",
        hint="check the engine URL, the network and that the engine is up",
        reached=not not_sent,
    )


def _server_error(error: Any, code: int, text: str, doing: str) -> EngineUnavailable:
    """5xx. With the engine's fault it failed itself; without one, whatever sits in front of
    it answered: a 503 then means the request never reached it."""
    if getattr(error, "fault", None) is not None:
        return EngineUnavailable(
            f"the engine failed{doing} (HTTP {code}): {text}",
            hint="retry later; if it persists, see engine.log on the engine",
            code=code,
            from_engine=True,
        )
    return EngineUnavailable(
        f"the engine is unavailable{doing} (HTTP {code}, not answered by the engine API)",
        hint="the engine may be down or restarting; retry later",
        code=code,
        reached=code != 503,
    )


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
