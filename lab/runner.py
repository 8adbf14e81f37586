"""`drover lab up`: bring the whole stand-in estate up, publish lab.json, run until stopped."""

from __future__ import annotations

import secrets
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import proxy_nodes
from lab.engine.server import EngineServer
from lab.engine.version import EngineVersion
from lab.estate import EstateConfig, build_estate, host_specs
from lab.hosts.dataplane import LabDataPlane
from lab.labfile import lab_json_path, write_lab_json
from lab.pki import CertificateAuthority

ADMIN_USER = "admin@internal"


@dataclass
class RunningLab:
    state_dir: Path
    document: dict[str, Any]
    engine: EngineServer
    dataplane: LabDataPlane


@contextmanager
def running_lab(state_dir: Path, config: EstateConfig) -> Iterator[RunningLab]:
    """The lab, up for the duration of the block; everything it started is stopped after."""
    state_dir = Path(state_dir).resolve()
    _reset_state_dir(state_dir)
    ca = CertificateAuthority.create(state_dir / "pki")
    publisher = _Publisher(state_dir)
    with ExitStack() as stack:
        dataplane = LabDataPlane(state_dir, host_specs(config), ca)
        stack.callback(dataplane.stop)
        dataplane.start()
        inventory = build_estate(config, dataplane)
        password = secrets.token_urlsafe(16)
        cert, key = ca.issue("engine", ["localhost", "127.0.0.1"])
        engine = EngineServer(
            inventory,
            dataplane,
            cert,
            key,
            username=ADMIN_USER,
            password=password,
            version=config.engine_version,
            on_version_change=publisher.version_changed,
        )
        stack.callback(engine.stop)
        engine.start()
        document = _lab_document(state_dir, ca, engine, dataplane, password)
        document["proxies"] = proxy_nodes.provision(state_dir / "proxies", inventory)
        publisher.publish(document)
        stack.callback(publisher.withdraw)
        yield RunningLab(state_dir, document, engine, dataplane)


class _Publisher:
    """Writes lab.json, again when the engine's version changes, and removes it at the end."""

    def __init__(self, state_dir: Path) -> None:
        self._state_dir = state_dir
        self._lock = threading.Lock()
        self._document: dict[str, Any] | None = None

    def publish(self, document: dict[str, Any]) -> None:
        with self._lock:
            self._document = document
            write_lab_json(self._state_dir, document)

    def version_changed(self, version: EngineVersion) -> None:
        with self._lock:
            if self._document is None:  # not published yet, or withdrawn
                return
            self._document["engine"].update(_version_fields(version))
            write_lab_json(self._state_dir, self._document)

    def withdraw(self) -> None:
        with self._lock:
            self._document = None
            lab_json_path(self._state_dir).unlink(missing_ok=True)


def run_lab_foreground(state_dir: Path, config: EstateConfig) -> None:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    with running_lab(state_dir, config):
        stop.wait()


def _reset_state_dir(state_dir: Path) -> None:
    """A lab starts from a clean estate; a stale lab.json would mislead clients."""
    if state_dir.exists():
        lab_json_path(state_dir).unlink(missing_ok=True)
        for child in ("storage", "hosts", "proxies", "run", "pki", "ssh"):
            shutil.rmtree(state_dir / child, ignore_errors=True)
    state_dir.mkdir(parents=True, exist_ok=True)


def _lab_document(
    state_dir: Path,
    ca: CertificateAuthority,
    engine: EngineServer,
    dataplane: LabDataPlane,
    password: str,
) -> dict[str, Any]:
    return {
        "state_dir": str(state_dir),
        "engine": {
            "url": engine.url,
            "ca_file": str(ca.ca_file),
            "username": ADMIN_USER,
            "password": password,
            **_version_fields(engine.version),
        },
        "hosts": [vars(h) | {"ssh_key": str(h.ssh_key)} for h in dataplane.host_endpoints()],
        "imageio_proxy_url": dataplane.proxy_imageio_url(),
        "proxies_root": str(state_dir / "proxies"),
    }


def _version_fields(version: EngineVersion) -> dict[str, str]:
    return {"version": version.short, "full_version": version.full_version}
