"""Small helpers shared by the resource modules: answers, refs, list filtering."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from ovirtsdk4 import types

from lab.engine import search
from lab.engine.router import Request, Response
from lab.engine.xml import href, make, render, render_action, render_list

T = TypeVar("T")


def ok(obj: Any, status: int = 200) -> Response:
    return Response(status, render(obj))


def created(obj: Any) -> Response:
    return Response(201, render(obj))


def listing(objs: list[Any], root: str) -> Response:
    return Response(200, render_list(objs, root))


def done(**members: Any) -> Response:
    return Response(200, render_action(**members))


def removed() -> Response:
    return Response(200, "")


def limited(req: Request, items: list[T]) -> list[T]:
    """Apply `max=` to a listing."""
    try:
        limit = int(req.query.get("max", "-1"))
    except ValueError:
        limit = -1
    return items if limit < 0 else items[:limit]


def filter_by_name(req: Request, items: Iterable[T], name: Callable[[T], str]) -> list[T]:
    """`search=name=...` for collections other than VMs."""
    query = req.query.get("search")
    if not query:
        return list(items)
    predicate = search.compile_query(
        query, {"name": lambda item, value: search.match(name(item), value)}
    )
    return [item for item in items if predicate(item)]


def ref(kind: type[T], collection: str, object_id: str) -> T:
    """A link to an object: what the engine writes where one object names another."""
    return make(kind, href(collection, object_id), id=object_id)


def vm_ref(vm_id: str) -> types.Vm:
    return ref(types.Vm, "vms", vm_id)


def disk_ref(disk_id: str) -> types.Disk:
    return ref(types.Disk, "disks", disk_id)


def host_ref(host_id: str) -> types.Host:
    return ref(types.Host, "hosts", host_id)


def cluster_ref(cluster_id: str) -> types.Cluster:
    return ref(types.Cluster, "clusters", cluster_id)


def dc_ref(dc_id: str) -> types.DataCenter:
    return ref(types.DataCenter, "datacenters", dc_id)


def sd_ref(sd_id: str) -> types.StorageDomain:
    return ref(types.StorageDomain, "storagedomains", sd_id)


def ref_id(obj: Any) -> str | None:
    return getattr(obj, "id", None) if obj is not None else None
