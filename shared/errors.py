"""Errors that reach an operator: each says what failed and what to do next.

`DroverError` is the base; the CLI and the API print its message without a stack trace.
`retryable` tells a worker whether the same call may succeed later (a dropped connection,
a locked object) or will fail again until someone changes something (bad input).
"""

from __future__ import annotations


class DroverError(Exception):
    """A failure with a message written for the operator."""

    retryable = False

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(DroverError):
    """Settings or input that can never work until the operator changes them."""


class ServiceError(DroverError):
    """A service (Redis, the engine, a host) that could not be reached or answered badly."""

    retryable = True
