"""vdsm-like volume metadata: KEY=VALUE lines terminated by EOF."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

from lab.dataplane import VolumeFormat

from .layout import NULL_UUID

LEAF = "LEAF"
INTERNAL = "INTERNAL"


@dataclass(frozen=True)
class VolumeMeta:
    domain: str
    image: str
    fmt: VolumeFormat
    capacity: int
    parent: str = NULL_UUID
    voltype: str = LEAF
    ctime: int = 0

    @property
    def has_parent(self) -> bool:
        return self.parent != NULL_UUID

    def with_voltype(self, voltype: str) -> VolumeMeta:
        return replace(self, voltype=voltype)

    def with_parent(self, parent: str) -> VolumeMeta:
        return replace(self, parent=parent)

    def dumps(self) -> str:
        fields = {
            "CAP": str(self.capacity),
            "CTIME": str(self.ctime or int(time.time())),
            "DESCRIPTION": "",
            "DISKTYPE": "DATA",
            "DOMAIN": self.domain,
            "FORMAT": "COW" if self.fmt is VolumeFormat.COW else "RAW",
            "GEN": "0",
            "IMAGE": self.image,
            "LEGALITY": "LEGAL",
            "PUUID": self.parent,
            "TYPE": "SPARSE",
            "VOLTYPE": self.voltype,
        }
        return "".join(f"{k}={v}\n" for k, v in fields.items()) + "EOF\n"

    @classmethod
    def loads(cls, text: str) -> VolumeMeta:
        fields: dict[str, str] = {}
        for line in text.splitlines():
            if line == "EOF":
                break
            key, _, value = line.partition("=")
            fields[key] = value
        return cls(
            domain=fields["DOMAIN"],
            image=fields["IMAGE"],
            fmt=VolumeFormat.COW if fields["FORMAT"] == "COW" else VolumeFormat.RAW,
            capacity=int(fields["CAP"]),
            parent=fields.get("PUUID", NULL_UUID),
            voltype=fields.get("VOLTYPE", LEAF),
            ctime=int(fields.get("CTIME", "0")),
        )


def write(path: Path, meta: VolumeMeta) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(meta.dumps())
    os.replace(tmp, path)


def read(path: Path) -> VolumeMeta:
    return VolumeMeta.loads(path.read_text())
