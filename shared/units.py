"""Byte sizes as operators write them: 4096, 64K, 512MiB, 2G (binary multiples)."""

from __future__ import annotations

import re

from shared.errors import ConfigError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

_MULTIPLIERS = {"": 1, "k": KiB, "m": MiB, "g": GiB, "t": TiB}
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    match = _SIZE.match(text)
    if not match:
        raise ConfigError(
            f"{text!r} is not a size", hint="write bytes or a size like 64K, 512MiB, 2G"
        )
    number, unit = match.groups()
    return int(number) * _MULTIPLIERS[unit.lower()]


def format_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
