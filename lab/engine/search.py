"""The engine's search language, the part products use: `field=value and field=value`.

Values may be quoted and contain `*` wildcards; comparisons are case-insensitive;
`or` joins alternatives; `!=` negates.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from typing import Any

from lab.engine.faults import bad_request

Field = Callable[[Any, str], bool]
Predicate = Callable[[Any], bool]

_CLAUSE = re.compile(r"^\s*([\w.]+)\s*(!=|=)\s*(.*?)\s*$")


def match(actual: str | None, pattern: str) -> bool:
    if actual is None:
        return False
    return fnmatch.fnmatchcase(actual.lower(), pattern.lower())


def compile_query(query: str, fields: dict[str, Field]) -> Predicate:
    alternatives = [_compile_and(part, fields) for part in re.split(r"\s+or\s+", query, flags=re.I)]
    return lambda item: any(alt(item) for alt in alternatives)


def _compile_and(query: str, fields: dict[str, Field]) -> Predicate:
    clauses = [_compile_clause(c, fields) for c in re.split(r"\s+and\s+", query, flags=re.I)]
    return lambda item: all(clause(item) for clause in clauses)


def _compile_clause(clause: str, fields: dict[str, Field]) -> Predicate:
    parsed = _CLAUSE.match(clause)
    if parsed is None:
        raise bad_request(f"Search query '{clause}' is not valid")
    name, op, value = parsed.group(1).lower(), parsed.group(2), parsed.group(3)
    value = value.strip().strip("\"'")
    test = fields.get(name)
    if test is None:
        raise bad_request(f"Search field '{name}' is not supported")
    if op == "!=":
        return lambda item: not test(item, value)
    return lambda item: test(item, value)
