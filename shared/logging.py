"""structlog set up once: a console on a terminal, JSON lines otherwise.

Context (job, VM, disk ids) is bound with `bind_ids`, carried by contextvars.
Values under secret-looking keys are replaced before anything is rendered, and transfer
tickets inside any text (tracebacks included) are masked (shared.redact).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from shared.redact import redact
from shared.settings import LogSettings

SECRET_WORDS = ("password", "secret", "token", "key", "authorization", "credential")
REDACTED = "***"
_configured = False


def redact_secrets(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for name in list(event):
        if is_secret_name(name):
            event[name] = REDACTED
    return event


def redact_text(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for name, value in event.items():
        if isinstance(value, str):
            event[name] = redact(value)
    return event


def is_secret_name(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in SECRET_WORDS) and not lowered.endswith("_file")


def configure_logging(settings: LogSettings | None = None, *, force: bool = False) -> None:
    global _configured
    if _configured and not force:
        return
    settings = settings or LogSettings()
    level = logging.getLevelNamesMapping().get(settings.level.upper(), logging.INFO)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(message)s", force=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info,
            redact_text,
            _renderer(settings),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_StderrLogger,
        cache_logger_on_first_use=True,
    )
    _configured = True


class _StderrLogger:
    """Writes to whatever sys.stderr is at the time (it may be replaced after set-up)."""

    def __init__(self, *_args: Any) -> None:
        pass

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def _renderer(settings: LogSettings) -> Any:
    console = settings.format == "console" or (settings.format == "auto" and sys.stderr.isatty())
    if console:
        return structlog.dev.ConsoleRenderer()
    return structlog.processors.JSONRenderer()


def bind_ids(**ids: str) -> None:
    """Bind job_id / vm_id / disk_id (or any id) to every later log line of this context."""
    structlog.contextvars.bind_contextvars(**ids)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
