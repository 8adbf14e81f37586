"""Glue to the SDK's own readers and writers, so the wire format is the engine's."""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

from ovirtsdk4 import reader, types, writer

from lab.engine.faults import ApiError, syntax_error
from lab.engine.version import BACKUP_API

API = "/ovirt-engine/api"
T = TypeVar("T")

# Sub-collections the engine links from an object (`<link rel=... href=.../>`), limited to
# the ones this engine serves, so `connection.follow_link` works.
LINKS: dict[type, tuple[str, ...]] = {
    types.Api: (
        "clusters",
        "datacenters",
        "disks",
        "events",
        "hosts",
        "imagetransfers",
        "networks",
        "storagedomains",
        "tags",
        "templates",
        "vms",
    ),
    types.DataCenter: ("clusters", "storagedomains"),
    types.StorageDomain: ("disks", "disksnapshots"),
    types.Vm: (
        "backups",
        "checkpoints",
        "diskattachments",
        "nics",
        "permissions",
        "reporteddevices",
        "snapshots",
        "statistics",
        "tags",
    ),
    types.Disk: ("disksnapshots", "permissions", "statistics"),
    types.Snapshot: ("disks",),
    types.Backup: ("disks",),
    types.Checkpoint: ("disks",),
}
# Links to sub-collections that an older engine does not have: (major, minor) they came with.
LINKS_SINCE: dict[str, tuple[int, int]] = {"backups": BACKUP_API, "checkpoints": BACKUP_API}
# The (major, minor) the engine presents while it renders an answer (None: the newest).
_PRESENTED: ContextVar[tuple[int, int] | None] = ContextVar("presented_version", default=None)


@contextlib.contextmanager
def presenting(version: tuple[int, int]) -> Iterator[None]:
    """Render the objects of this request as an engine of `version` would."""
    token = _PRESENTED.set(version)
    try:
        yield
    finally:
        _PRESENTED.reset(token)


def href(*parts: str) -> str:
    return "/".join((API, *parts))


def make(cls: type[T], link: str, **fields: Any) -> T:
    """An SDK object with its `href` (not a constructor argument of the SDK types)."""
    obj = cls(**fields)
    obj.href = link  # type: ignore[attr-defined]
    return obj


def timestamp(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)


def render(obj: Any, tag: str | None = None) -> str:
    """One object as XML, with the engine's links to its sub-collections."""
    text = str(writer.Writer.write(obj, root=tag))
    rels = _rels(obj)
    if not rels:
        return text
    links = "".join(f'<link href="{obj.href}/{rel}" rel="{rel}"/>' for rel in rels)
    if text.endswith("/>"):
        start = text[1:].split(" ", 1)[0].split("/", 1)[0]
        return f"{text[:-2]}>{links}</{start}>"
    close = text.rindex("</")
    return text[:close] + links + text[close:]


def _rels(obj: Any) -> tuple[str, ...]:
    """The links of `obj`; a disk has them only at `disks/<id>` (not as a snapshot's)."""
    link = getattr(obj, "href", None)
    if link is None:
        return ()
    if isinstance(obj, types.Disk) and link != href("disks", obj.id):
        return ()
    rels = LINKS.get(type(obj), ())
    version = _PRESENTED.get()
    if version is None:
        return rels
    return tuple(rel for rel in rels if version >= LINKS_SINCE.get(rel, (0, 0)))


def render_list(objs: list[Any], root: str) -> str:
    return f"<{root}>" + "".join(render(o) for o in objs) + f"</{root}>"


def render_action(**members: Any) -> str:
    """The answer to an action: `<action><status>complete</status>...</action>`."""
    action = types.Action(status="complete", **members)
    return str(writer.Writer.write(action))


def parse(body: bytes, expected: type[Any]) -> Any:
    """Read a request body with the SDK's readers; 400 when it isn't the expected type."""
    if not body.strip():
        raise syntax_error("The request body is empty.")
    try:
        obj = reader.Reader.read(body.decode("utf-8"))
    except Exception as exc:
        raise syntax_error(f"Failed to parse the request body: {exc}") from None
    if not isinstance(obj, expected):
        name = expected.__name__
        raise ApiError(400, f"Expected a '{name}' element.", "Request syntactically incorrect.")
    return obj


def parse_action(body: bytes) -> types.Action:
    if not body.strip():
        return types.Action()
    action: types.Action = parse(body, types.Action)
    return action
