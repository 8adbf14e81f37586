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


def max_results(req: Request) -> int | None:
    """`max=`, when given (negative: no limit)."""
    try:
        limit = int(req.query.get("max", "-1"))
    except ValueError:
        limit = -1
    return None if limit < 0 else limit


def limited(req: Request, items: list[T]) -> list[T]:
    """Apply `max=` to a listing."""
    limit = max_results(req)
    return items if limit is None else items[:limit]


def case_sensitive(req: Request) -> bool:
    """`case_sensitive`: false when absent, true when given without a value (ParametersHelper)."""
    value = req.query.get("case_sensitive")
    return value is not None and value.lower() in ("", "true")


def searched(
    req: Request, items: Iterable[T], fields: dict[str, search.Field], key: Callable[[T], Any]
) -> list[T]:
    """`search=` (with `case_sensitive` and `page N`) and `max=` over `items`, in the
    engine's default order (`key`, e.g. the name)."""
    ordered = sorted(items, key=key)
    query = req.query.get("search")
    if not query:
        return limited(req, ordered)
    parsed = search.parse(query, fields, case_sensitive(req))
    hits = [item for item in ordered if parsed.predicate(item)]
    return limited(req, search.paged(hits, parsed.page, max_results(req)))


def filter_by_name(req: Request, items: Iterable[T], name: Callable[[T], str]) -> list[T]:
    """`search=name=...` (and `max=`) for collections other than VMs and disks."""
    return searched(req, items, {"name": lambda item, value: search.match(name(item), value)}, name)


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
