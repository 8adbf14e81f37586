"""The engine's search language, the part products use: `field=value and field=value`,
optionally followed by `page N`.

Values may be quoted and contain `*` wildcards; `or` joins alternatives; `!=` negates.
Comparisons ignore case unless the request says `case_sensitive=true` (the REST API's
default is false). `page N` returns the N-th slice of `max` results (SyntaxChecker's
`RowNum BETWEEN (N-1)*max+1 AND N*max`; without `max` only page 1 has results).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from lab.engine.faults import bad_request

T = TypeVar("T")
Predicate = Callable[[Any], bool]

_CLAUSE = re.compile(r"^\s*([\w.]+)\s*(!=|=)\s*(.*?)\s*$")
_PAGE = re.compile(r"(?:^|\s+)page\s+(\S+)\s*$", re.IGNORECASE)


class Pattern(str):
    """A search value (a `str`); `match` heeds its case only when the request asked."""

    case_sensitive: bool = False

    @classmethod
    def of(cls, value: str, case_sensitive: bool) -> Pattern:
        pattern = cls(value)
        pattern.case_sensitive = case_sensitive
        return pattern


def match(actual: str | None, pattern: str) -> bool:
    """`pattern` (with `*` wildcards) matches `actual`; ignoring case unless asked not to."""
    if actual is None:
        return False
    if getattr(pattern, "case_sensitive", False):
        return fnmatch.fnmatchcase(actual, pattern)
    return fnmatch.fnmatchcase(actual.lower(), pattern.lower())


Field = Callable[[Any, str], bool]


@dataclass(frozen=True)
class Query:
    predicate: Predicate
    page: int | None = None


def compile_query(query: str, fields: dict[str, Field], case_sensitive: bool = False) -> Predicate:
    return parse(query, fields, case_sensitive).predicate


def parse(query: str, fields: dict[str, Field], case_sensitive: bool = False) -> Query:
    conditions, page = _split_page(query)
    if not conditions.strip():
        return Query(lambda item: True, page)
    alternatives = [
        _compile_and(part, fields, case_sensitive)
        for part in re.split(r"\s+or\s+", conditions, flags=re.I)
    ]
    return Query(lambda item: any(alt(item) for alt in alternatives), page)


def paged(items: list[T], page: int | None, limit: int | None) -> list[T]:
    """The page of `items` (all of them when the query named no page)."""
    if page is None:
        return items
    if limit is None:
        return items if page == 1 else []
    return items[(page - 1) * limit : page * limit]


def _split_page(query: str) -> tuple[str, int | None]:
    found = _PAGE.search(query)
    if found is None:
        return query, None
    try:
        page = int(found.group(1))
    except ValueError:
        raise bad_request(f"Search query '{query}' has an invalid page number") from None
    if page < 1:
        raise bad_request(f"Search query '{query}' has an invalid page number")
    return query[: found.start()], page


def _compile_and(query: str, fields: dict[str, Field], case_sensitive: bool) -> Predicate:
    clauses = [
        _compile_clause(c, fields, case_sensitive)
        for c in re.split(r"\s+and\s+", query, flags=re.I)
    ]
    return lambda item: all(clause(item) for clause in clauses)


def _compile_clause(clause: str, fields: dict[str, Field], case_sensitive: bool) -> Predicate:
    parsed = _CLAUSE.match(clause)
    if parsed is None:
        raise bad_request(f"Search query '{clause}' is not valid")
    name, op, value = parsed.group(1).lower(), parsed.group(2), parsed.group(3)
    pattern = Pattern.of(value.strip().strip("\"'"), case_sensitive)
    test = fields.get(name)
    if test is None:
        raise bad_request(f"Search field '{name}' is not supported")
    if op == "!=":
        return lambda item: not test(item, pattern)
    return lambda item: test(item, pattern)
