"""Engine search queries (`search=`) for selecting VMs."""

from __future__ import annotations

import re

MAX_TERMS = 40  # alternatives per query, to keep URLs short on large selections
_PLAIN = re.compile(r"^[\w.*\-]+$")


def quote(value: str) -> str:
    """A search value, quoted when it holds more than word characters and wildcards."""
    if _PLAIN.match(value):
        return value
    return '"' + value.replace('"', "") + '"'


def any_of(field: str, values: list[str]) -> list[str]:
    """`field=a or field=b ...`, split into queries of at most MAX_TERMS alternatives."""
    unique = list(dict.fromkeys(v for v in values if v))
    return [
        " or ".join(f"{field}={quote(v)}" for v in unique[i : i + MAX_TERMS])
        for i in range(0, len(unique), MAX_TERMS)
    ]
