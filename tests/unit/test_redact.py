"""Transfer tickets never reach job errors or logs."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from shared.logging import configure_logging, get_logger
from shared.redact import redact
from shared.settings import LogSettings
from shared.sources.imageio_http import ImageioError
from workers.failures import describe

TICKET = "0b4c7a3e-52f9-4c69-bf4e-3b5c2d1e9f00"
URL = f"https://host1:54322/images/{TICKET}"


def test_the_ticket_of_a_transfer_url_is_masked() -> None:
    assert redact(f"reading at 0 at {URL} failed") == (
        "reading at 0 at https://host1:54322/images/*** failed"
    )
    assert redact("https://engine:54323/images/abc?x=1") == "https://engine:54323/images/***?x=1"
    assert redact("no url here") == "no url here"


def test_imageio_errors_and_job_errors_carry_no_ticket() -> None:
    error = ImageioError(f"cannot reach imageio at {URL}", hint=f"retry {URL}")
    assert TICKET not in str(error)
    assert TICKET not in describe(error)
    assert TICKET not in describe(OSError(f"connection reset by {URL}"))


def test_log_lines_carry_no_ticket(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LogSettings(format="json"), force=True)
    try:
        get_logger("t").warning("using the proxy", transfer_url=URL, error=f"refused {URL}")
        try:
            raise OSError(f"reset by {URL}")
        except OSError:
            get_logger("t").exception("failed")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    out = capsys.readouterr()
    lines = (out.err + out.out).strip().splitlines()
    assert lines and all(TICKET not in line for line in lines)
    assert json.loads(lines[0])["transfer_url"] == "https://host1:54322/images/***"
