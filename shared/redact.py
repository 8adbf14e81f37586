"""Secrets inside text: an imageio transfer URL carries the transfer's ticket in its path
(`https://host:54322/images/<ticket>`), and whoever has the URL can read or write the disk
while the transfer lasts. Every job error and log line passes through `redact`."""

from __future__ import annotations

import re

REDACTED = "***"
_TICKET = re.compile(r"(/images/)[^/\s?#'\"]+")


def redact(text: str) -> str:
    return _TICKET.sub(rf"\g<1>{REDACTED}", text)
