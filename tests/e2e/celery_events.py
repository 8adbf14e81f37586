"""Which worker ran which task, as Celery's own events tell it (what Flower shows), not as
Drover records it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery


class TaskEvents:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tasks: dict[str, dict[str, Any]] = {}  # uuid -> name, args, hostnames

    def on_event(self, event: dict[str, Any]) -> None:
        uuid = event.get("uuid")
        if not uuid:
            return
        with self.lock:
            task = self.tasks.setdefault(uuid, {"name": "", "args": "", "started_by": []})
            if event["type"] == "task-received":
                task["name"], task["args"] = event.get("name", ""), event.get("args", "")
            elif event["type"] == "task-started":
                task["started_by"].append(event["hostname"])
            elif event["type"] == "task-succeeded":
                task["succeeded_by"] = event["hostname"]

    def ran(self, name: str, *args_contain: str) -> list[dict[str, Any]]:
        """The tasks of `name` whose arguments mention every one of `args_contain`."""
        with self.lock:
            return [
                dict(t)
                for t in self.tasks.values()
                if t["name"] == name and all(a in t["args"] for a in args_contain)
            ]


@contextmanager
def task_events(app: Celery) -> Iterator[TaskEvents]:
    """Capture the fleet's task events while the block runs."""
    events = TaskEvents()
    listening = threading.Event()
    receivers: list[Any] = []

    def capture() -> None:
        with app.connection_for_read() as connection:
            receiver = app.events.Receiver(connection, handlers={"*": events.on_event})
            receiver.on_iteration = listening.set  # its queue is bound from the first one on
            receivers.append(receiver)
            receiver.capture(limit=None, timeout=None, wakeup=False)

    thread = threading.Thread(target=capture, name="task-events", daemon=True)
    thread.start()
    assert listening.wait(10), "no Celery event receiver"
    try:
        yield events
    finally:
        for receiver in receivers:
            receiver.should_stop = True
        thread.join(10)
