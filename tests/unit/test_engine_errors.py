"""Translating ovirtsdk4 errors into Drover's errors, in one place."""

from __future__ import annotations

import ovirtsdk4 as sdk
import ovirtsdk4.types as types
import pytest

from shared.engine.errors import (
    EngineAuthError,
    EngineConflict,
    EngineNotFound,
    EngineRejected,
    EngineTlsError,
    EngineUnavailable,
    EngineUnreachable,
    NoGuestAgent,
    translate,
    translated,
)
from shared.errors import ConfigError, DroverError


def sdk_error(cls: type[sdk.Error], code: int | None, detail: str = "") -> sdk.Error:
    fault = types.Fault(reason="Operation Failed", detail=detail) if detail else None
    return cls(f"Fault detail is {detail!r}. HTTP response code is {code}.", code, fault)


def test_wrong_credentials_name_the_user() -> None:
    error = translate(sdk_error(sdk.AuthError, 401), "logging in", user="backup@internal")
    assert isinstance(error, EngineAuthError) and isinstance(error, ConfigError)
    assert not error.retryable
    assert "the engine refused user backup@internal" in str(error)
    assert "check the user name (user@domain) and password" in str(error)


def test_forbidden_is_about_permissions() -> None:
    error = translate(sdk_error(sdk.AuthError, 403), "adding a backup", user="ro@internal")
    assert isinstance(error, EngineAuthError)
    assert "permission" in str(error)


def test_unreachable_is_retryable() -> None:
    error = translate(sdk.ConnectionError("Error while sending HTTP request: (7, 'refused')"))
    assert isinstance(error, EngineUnreachable) and error.retryable
    timeout = translate(sdk.TimeoutError("Error while sending HTTP request: (28, 'timeout')"))
    assert isinstance(timeout, EngineUnreachable)


def test_not_found() -> None:
    error = translate(sdk_error(sdk.NotFoundError, 404, "Entity not found: x"), "reading VM x")
    assert isinstance(error, EngineNotFound) and not error.retryable
    assert "reading VM x" in str(error)


def test_locked_is_a_retryable_conflict() -> None:
    error = translate(sdk_error(sdk.Error, 409, "[Cannot backup VM. Disk d1 is locked.]"))
    assert isinstance(error, EngineConflict) and error.retryable
    assert error.code == 409
    assert "[" not in str(error) and "Disk d1 is locked" in str(error)


def test_bad_request_carries_the_engine_reason() -> None:
    error = translate(sdk_error(sdk.Error, 400, "[Cannot add VM. The given name is in use.]"))
    assert isinstance(error, EngineRejected)
    assert error.reason == "Cannot add VM. The given name is in use."


@pytest.mark.parametrize(
    "detail",
    [
        "[Guest agent is not responding: QEMU guest agent is not connected]",
        "VDSM command FreezeVDS failed: Guest Agent is non-responsive",
        "guest_agent not available",
    ],
)
def test_guest_agent_faults(detail: str) -> None:
    assert isinstance(translate(sdk_error(sdk.Error, 400, detail)), NoGuestAgent)
    assert isinstance(translate(sdk_error(sdk.Error, 409, detail)), NoGuestAgent)


def test_certificate_problem_is_a_config_error() -> None:
    error = translate(
        sdk.Error("Error while sending HTTP request: (60, 'SSL certificate problem')")
    )
    assert isinstance(error, EngineTlsError) and isinstance(error, ConfigError)
    assert "ca_file" in str(error)


def test_server_error_keeps_the_status() -> None:
    error = translate(sdk_error(sdk.Error, 500, "boom"))
    assert isinstance(error, EngineUnavailable) and error.from_engine and error.code == 500


def test_drover_errors_pass_through() -> None:
    original = ConfigError("nope")
    assert translate(original) is original


def test_translated_block_and_decorator() -> None:
    with pytest.raises(EngineNotFound), translated("reading"):
        raise sdk_error(sdk.NotFoundError, 404, "gone")

    @translated("adding")
    def add() -> None:
        raise sdk_error(sdk.Error, 409, "locked")

    with pytest.raises(EngineConflict) as info:
        add()
    assert isinstance(info.value.__cause__, sdk.Error)
    with pytest.raises(ValueError), translated("other"):
        raise ValueError("not an engine error")


def test_every_translation_is_a_drover_error() -> None:
    for error in (sdk.Error("x"), sdk.AuthError("x"), sdk.NotFoundError("x"), OSError("x")):
        assert isinstance(translate(error), DroverError)
