"""Injected engine outages, for testing how clients ride them out (lab control, not oVirt).

`POST /ovirt-engine/lab/outage` with a JSON object (every field optional):

    status   HTTP status to answer with (default 503; 0 = answer normally, e.g. with stall)
    seconds  how long the outage lasts from now (default: until ended, or `count` is used up)
    count    how many matching requests it answers, then it ends
    paths    regex searched in "METHOD /path" (e.g. "POST .*/imagetransfers/.*/finalize$");
             default: every API and SSO request
    stall    hold each matching request this many seconds before answering

A 500 on an API path answers with the engine's own fault XML (as an engine failing inside
would); any other status, and every status on SSO paths, with a plain page, as the Apache
proxy in front of a down engine does. The lab's own control paths are never affected.
`GET` tells the current outage and how many requests it answered (`hits`); `DELETE` ends it.
One outage at a time: a POST replaces the previous one.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from lab.engine.faults import ApiError
from lab.engine.router import Response

API_PREFIX = "/ovirt-engine/api"
ENGINE_FAULT = "[Internal Engine Error]"


@dataclass
class _Spec:
    status: int = 503
    until: float | None = None  # time.monotonic() deadline
    count: int | None = None
    paths: re.Pattern[str] | None = None
    stall_s: float = 0.0
    hits: int = 0
    ended: threading.Event = field(default_factory=threading.Event)

    def matches(self, method: str, path: str) -> bool:
        return self.paths is None or bool(self.paths.search(f"{method} {path}"))

    def active(self) -> bool:
        if self.ended.is_set():
            return False
        over = self.until is not None and time.monotonic() >= self.until
        return not (over or (self.count is not None and self.hits >= self.count))

    def describe(self) -> dict[str, Any]:
        remaining = None if self.until is None else max(0.0, self.until - time.monotonic())
        return {
            "active": self.active(),
            "status": self.status,
            "seconds_left": remaining,
            "count": self.count,
            "paths": self.paths.pattern if self.paths else None,
            "stall": self.stall_s,
            "hits": self.hits,
        }


class Outage:
    """The engine's current outage, if any; thread safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spec: _Spec | None = None
        self._last: _Spec | None = None

    def intercept(self, method: str, path: str) -> Response | None:
        """The outage's answer to this request, or None to serve it normally."""
        with self._lock:
            spec = self._spec
            if spec is None or not spec.active() or not spec.matches(method, path):
                return None
            spec.hits += 1
        if spec.stall_s > 0:
            spec.ended.wait(spec.stall_s)
        return _answer(spec.status, path) if spec.status else None

    def control(self, method: str, body: bytes) -> Response:
        """The lab endpoint: POST starts an outage, GET describes it, DELETE ends it."""
        if method == "POST":
            try:
                spec = _parse(json.loads(body or b"{}"))
            except (ValueError, TypeError, re.error) as exc:
                return _json(400, {"error": f"bad outage request: {exc}"})
            self._replace(spec)
            return _json(200, spec.describe())
        if method == "DELETE":
            self._replace(None)
            return _json(200, self._last.describe() if self._last else {"active": False})
        if method == "GET":
            with self._lock:
                current = self._spec or self._last
            return _json(200, current.describe() if current else {"active": False, "hits": 0})
        return _json(405, {"error": f"{method} is not allowed on the outage endpoint"})

    def _replace(self, spec: _Spec | None) -> None:
        with self._lock:
            previous, self._spec = self._spec, spec
            if previous is not None:
                self._last = previous
                previous.ended.set()  # release requests it stalls
            if spec is not None:
                self._last = spec


def _parse(request: Any) -> _Spec:
    if not isinstance(request, dict):
        raise TypeError("expected a JSON object")
    unknown = set(request) - {"status", "seconds", "count", "paths", "stall"}
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")
    status = int(request.get("status", 503))
    if status and not 400 <= status <= 599:
        raise ValueError(f"status {status} is not an HTTP error status")
    seconds, count = request.get("seconds"), request.get("count")
    paths = request.get("paths")
    return _Spec(
        status=status,
        until=time.monotonic() + float(seconds) if seconds is not None else None,
        count=int(count) if count is not None else None,
        paths=re.compile(str(paths)) if paths else None,
        stall_s=float(request.get("stall", 0) or 0),
    )


def _answer(status: int, path: str) -> Response:
    if status == 500 and path.startswith(API_PREFIX):
        return Response(500, ApiError(500, ENGINE_FAULT).to_xml())
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    page = (
        f'<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head>\n'
        f"<title>{status} {phrase}</title>\n</head><body>\n<h1>{phrase}</h1>\n"
        "<p>The server is temporarily unable to service your request due to maintenance "
        "downtime or capacity problems. Please try again later.</p>\n</body></html>\n"
    )
    return Response(status, page, "text/html")


def _json(status: int, payload: Any) -> Response:
    return Response(status, json.dumps(payload), "application/json")
