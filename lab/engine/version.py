"""Which oVirt engine version the lab presents (a runtime setting, 4.5.5 by default).

`EngineVersion.parse("4.3")` gives a 4.3 engine: product_info 4.3.10.4-1.el7, cluster
compatibility level 4.3, no VM backup / checkpoint API (added in 4.4), and image transfers
that serve a volume's file as it is (ovirt-imageio served files before 4.4; there was no
transfer `format`, so a qcow2 volume is always read and written as its qcow2 bytes).

Set at start (`drover lab up --engine-version 4.3`, `EngineServer(version=...)`) or at
runtime with `POST /ovirt-engine/lab/version {"version": "4.3"}` (see `version_control`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ovirtsdk4 import types

from lab.engine.router import Response

# The API before this version has no VM backups or checkpoints (ovirt-engine 4.4).
BACKUP_API = (4, 4)
_SUPPORTED_MINORS = range(0, 6)  # 4.0 .. 4.5

_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-(\S+))?$")


@dataclass(frozen=True)
class EngineVersion:
    major: int
    minor: int
    build: int
    revision: int
    full_version: str

    @classmethod
    def parse(cls, text: str) -> EngineVersion:
        """Parse "4.3", "4.3.10", "4.3.10.4" or "4.3.10.4-1.el7"; a known minor release without
        build gets the last release of that line (4.3 -> 4.3.10.4-1.el7)."""
        match = _VERSION.match(str(text).strip())
        if match is None:
            raise ValueError(f"{text!r} is not an engine version (like 4.3 or 4.5.5)")
        major, minor = int(match[1]), int(match[2])
        if major != 4 or minor not in _SUPPORTED_MINORS:
            raise ValueError(f"the lab presents engine versions 4.0 to 4.5, not {text!r}")
        preset = _RELEASES.get((major, minor))
        if preset is not None and match[3] is None:
            return preset
        build = int(match[3] or 0)
        revision = int(match[4] or 0)
        numbers = f"{major}.{minor}.{build}" + (f".{revision}" if match[4] is not None else "")
        release = match[5] or ("1.el7" if (major, minor) < BACKUP_API else "1.el8")
        parsed = cls(major, minor, build, revision, f"{numbers}-{release}")
        exact = match[4] is None and match[5] is None
        if preset is not None and (
            parsed.full_version == preset.full_version or (exact and build == preset.build)
        ):
            return preset
        return parsed

    @property
    def short(self) -> str:
        return f"{self.major}.{self.minor}"

    @property
    def backup_api(self) -> bool:
        """VM backups, checkpoints, image transfer formats and NBD exports (4.4+)."""
        return (self.major, self.minor) >= BACKUP_API

    @property
    def cluster_level(self) -> tuple[int, int]:
        """The newest cluster / data center compatibility level the engine offers."""
        return _CLUSTER_LEVELS.get((self.major, self.minor), (self.major, self.minor))

    def product_version(self) -> types.Version:
        return types.Version(
            major=self.major,
            minor=self.minor,
            build=self.build,
            revision=self.revision,
            full_version=self.full_version,
        )

    def compatibility_version(self) -> types.Version:
        major, minor = self.cluster_level
        return types.Version(major=major, minor=minor)

    def describe(self) -> dict[str, Any]:
        major, minor = self.cluster_level
        return {
            "version": self.short,
            "full_version": self.full_version,
            "cluster_version": f"{major}.{minor}",
            "backup_api": self.backup_api,
        }


_RELEASES = {
    (4, 3): EngineVersion(4, 3, 10, 4, "4.3.10.4-1.el7"),
    (4, 4): EngineVersion(4, 4, 10, 7, "4.4.10.7-1.el8"),
    (4, 5): EngineVersion(4, 5, 5, 1, "4.5.5-1.el8"),
}
_CLUSTER_LEVELS = {(4, 4): (4, 6), (4, 5): (4, 7)}
DEFAULT_VERSION = _RELEASES[(4, 5)]


def as_version(value: str | EngineVersion | None) -> EngineVersion:
    if value is None:
        return DEFAULT_VERSION
    if isinstance(value, EngineVersion):
        return value
    return EngineVersion.parse(value)


def version_control(
    method: str,
    body: bytes,
    current: Callable[[], EngineVersion],
    change: Callable[[EngineVersion], object],
) -> Response:
    """`/ovirt-engine/lab/version`: GET tells the version, POST {"version": "4.3"} sets it."""
    if method == "GET":
        return _json(200, current().describe())
    if method != "POST":
        return _json(405, {"error": f"{method} is not allowed on the version endpoint"})
    try:
        request = json.loads(body or b"{}")
        if not isinstance(request, dict):
            raise TypeError("expected a JSON object")
        unknown = set(request) - {"version"}
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}")
        if "version" not in request:
            raise ValueError("missing field 'version'")
        version = EngineVersion.parse(str(request["version"]))
    except (ValueError, TypeError) as exc:
        return _json(400, {"error": f"bad version request: {exc}"})
    change(version)
    return _json(200, version.describe())


def _json(status: int, payload: Any) -> Response:
    return Response(status, json.dumps(payload), "application/json")
