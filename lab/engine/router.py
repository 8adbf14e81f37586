"""Maps `METHOD path` under /ovirt-engine/api to handlers; `{name}` segments become params.

A route added with `since=(4, 4)` exists only while the engine presents 4.4 or later: for
an older engine its path is unknown (404, as any path the engine does not serve).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lab.engine.faults import ApiError

if TYPE_CHECKING:
    from lab.engine.context import Engine


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    engine: Engine

    def flag(self, name: str) -> bool:
        """A boolean query parameter (or the matching header, e.g. All-Content)."""
        value = self.query.get(name)
        if value is None:
            value = self.headers.get(name.replace("_", "-").lower())
        return (value or "").lower() == "true"


@dataclass
class Response:
    status: int
    body: str = ""
    content_type: str = "application/xml"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Response]


@dataclass
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    since: tuple[int, int] | None = None


class Router:
    def __init__(self) -> None:
        self._routes: list[_Route] = []

    def add(
        self, method: str, template: str, handler: Handler, since: tuple[int, int] | None = None
    ) -> None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template.strip("/"))
        self._routes.append(_Route(method, re.compile(f"^{regex}$"), handler, since))

    def resolve(
        self, method: str, path: str, version: tuple[int, int] | None = None
    ) -> tuple[Handler, dict[str, str]]:
        """The handler of `METHOD path` on an engine of `version` (None: every route)."""
        path = path.strip("/")
        path_matched = False
        for route in self._routes:
            if version is not None and route.since is not None and version < route.since:
                continue
            match = route.pattern.match(path)
            if match is None:
                continue
            path_matched = True
            if route.method == method:
                return route.handler, match.groupdict()
        if path_matched:
            raise ApiError(405, f"Method {method} is not allowed on '{path}'.", "Not Allowed")
        raise ApiError(404, f"No resource at '{path}'.", "Not Found")
