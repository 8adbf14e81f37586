"""A task every worker answers, used to check that the fleet is reachable."""

from __future__ import annotations

import os
import socket

from celery import shared_task


@shared_task(name="drover.health.ping")
def ping() -> dict[str, object]:
    return {"host": socket.gethostname(), "pid": os.getpid()}
