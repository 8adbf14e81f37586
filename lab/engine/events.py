"""The audit log (`events`): list (newest first, `from=<id>`, `search`, `max`), get, and
add an external event as AddExternalEventCommand does: `origin`, `severity`, `custom_id`
and `description` are required, the origin may not be oVirt's, and an origin's custom id
is used once."""

from __future__ import annotations

from ovirtsdk4 import types

from lab.engine import search
from lab.engine.common import created, host_ref, listing, ok, searched, vm_ref
from lab.engine.faults import bad_request, incomplete, not_found
from lab.engine.inventory import Event, Inventory
from lab.engine.router import Request, Response, Router
from lab.engine.xml import href, make, parse, timestamp

OVIRT_ORIGIN = "oVirt"
# AuditLogType.EXTERNAL_EVENT_NORMAL / _WARNING / _ERROR, EXTERNAL_ALERT
EXTERNAL_CODES = {"normal": 9801, "warning": 9802, "error": 9803, "alert": 9804}


def register(router: Router) -> None:
    router.add("GET", "events", list_events)
    router.add("POST", "events", add_event)
    router.add("GET", "events/{event}", get_event)


def event_type(event: Event) -> types.Event:
    obj = make(
        types.Event,
        href("events", str(event.id)),
        id=str(event.id),
        index=event.id,
        code=event.code,
        description=event.description,
        severity=types.LogSeverity(event.severity),
        time=timestamp(event.time),
        origin=event.origin,
        custom_id=event.custom_id,
        flood_rate=event.flood_rate,
    )
    if event.vm_id:
        obj.vm = vm_ref(event.vm_id)
    if event.host_id:
        obj.host = host_ref(event.host_id)
    return obj


def _next_id(inv: Inventory) -> int:
    return max((e.id for e in inv.events), default=0) + 1


def _fields() -> dict[str, search.Field]:
    return {
        "severity": lambda e, v: search.match(e.severity, v),
        "origin": lambda e, v: search.match(e.origin, v),
        "message": lambda e, v: search.match(e.description, v),
        "type": lambda e, v: search.match(str(e.code), v),
    }


def list_events(req: Request) -> Response:
    inv = req.engine.inventory
    with inv.lock:
        after = _from(req)
        items = [e for e in inv.events if e.id > after]
        events = searched(req, items, _fields(), lambda e: -e.id)
        return listing([event_type(e) for e in events], "events")


def _from(req: Request) -> int:
    try:
        return int(req.query.get("from", "-1"))
    except ValueError:
        raise bad_request("The 'from' parameter must be an event id.") from None


def get_event(req: Request) -> Response:
    inv = req.engine.inventory
    with inv.lock:
        event = next((e for e in inv.events if str(e.id) == req.params["event"]), None)
        if event is None:
            raise not_found(req.params["event"])
        return ok(event_type(event))


def add_event(req: Request) -> Response:
    spec = parse(req.body, types.Event)
    missing = [
        name
        for name, value in (
            ("origin", spec.origin),
            ("severity", spec.severity),
            ("customId", spec.custom_id),
            ("description", spec.description),
        )
        if value is None
    ]
    if missing:
        raise incomplete("Event", ", ".join(missing))
    inv = req.engine.inventory
    with inv.lock:
        event = _new_event(inv, spec)
        inv.events.append(event)
        return created(event_type(event))


def _new_event(inv: Inventory, spec: types.Event) -> Event:
    if spec.origin.lower() == OVIRT_ORIGIN.lower():
        raise bad_request(
            "Cannot add External Event. Illegal Origin for External Event : " + OVIRT_ORIGIN
        )
    if any(e.origin == spec.origin and e.custom_id == spec.custom_id for e in inv.events):
        raise bad_request(
            "Cannot add External Event. External Event with this custom id already exists."
        )
    severity = spec.severity.value
    return Event(
        id=_next_id(inv),
        description=spec.description,
        severity=severity,
        code=EXTERNAL_CODES[severity],
        origin=spec.origin,
        custom_id=spec.custom_id,
        flood_rate=spec.flood_rate if spec.flood_rate is not None else 30,
        vm_id=spec.vm.id if spec.vm is not None else None,
        host_id=spec.host.id if spec.host is not None else None,
    )
