"""Real ovirt-imageio daemons: one per host (nbd backend) and one engine-side proxy.

Each daemon gets a conf dir with `conf.d/50-lab.conf`, TLS from the lab CA, a remote
port on 127.0.0.1 and a control service on a short UNIX socket. Tickets are managed
through the control API like vdsm and the engine do.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from lab import procs

_CONF_TEMPLATE = """\
[daemon]
drop_privileges = false
systemd_enable = false
run_dir = {run_dir}
poll_interval = 0.2

[tls]
enable = true
cert_file = {cert_file}
key_file = {key_file}
ca_file = {ca_file}

[backend_http]
ca_file = {ca_file}

[remote]
host = 127.0.0.1
port = {port}

[local]
enable = false

[control]
transport = unix
socket = {control_socket}
remove_timeout = 10

[handlers]
keys = logfile

[logger_root]
level = {log_level}
handlers = logfile
propagate = 0

[handler_logfile]
class = logging.FileHandler
args = ({log_file!r},)
kwargs = {{}}
level = DEBUG
formatter = long
"""


class ImageioError(RuntimeError):
    pass


def imageio_command() -> list[str]:
    """The daemon from this interpreter's environment (what `ovirt-imageio` runs)."""
    return [sys.executable, "-c", "from ovirt_imageio._internal import server; server.main()"]


@dataclass(frozen=True)
class DaemonConfig:
    name: str
    conf_dir: Path
    cert_file: Path
    key_file: Path
    ca_file: Path
    port: int
    control_socket: Path
    log_level: str = "INFO"

    @property
    def log_file(self) -> Path:
        return self.conf_dir / "daemon.log"

    def write(self) -> None:
        conf_d = self.conf_dir / "conf.d"
        conf_d.mkdir(parents=True, exist_ok=True)
        run_dir = self.conf_dir / "run"
        run_dir.mkdir(exist_ok=True)
        text = _CONF_TEMPLATE.format(
            run_dir=run_dir, cert_file=self.cert_file, key_file=self.key_file,
            ca_file=self.ca_file, port=self.port, control_socket=self.control_socket,
            log_level=self.log_level, log_file=str(self.log_file),
        )
        (conf_d / "50-lab.conf").write_text(text)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float = 30) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class ControlClient:
    """The imageio control API (/tickets/) over the daemon's UNIX socket."""

    def __init__(self, control_socket: Path) -> None:
        self._socket = control_socket

    def _request(self, method: str, path: str, body: dict[str, object] | None = None,
                 ok: tuple[int, ...] = (200,)) -> bytes:
        conn = _UnixHTTPConnection(self._socket)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if payload else {}
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        if resp.status not in ok:
            raise ImageioError(f"{method} {path}: {resp.status} {data.decode(errors='replace')}")
        return data

    def add_ticket(self, ticket: dict[str, object]) -> None:
        self._request("PUT", f"/tickets/{ticket['uuid']}", ticket)

    def get_ticket(self, ticket_id: str) -> dict[str, object]:
        result: dict[str, object] = json.loads(self._request("GET", f"/tickets/{ticket_id}"))
        return result

    def remove_ticket(self, ticket_id: str) -> None:
        # imageio answers 204 (or 200 on old versions); removing a missing ticket is OK.
        self._request("DELETE", f"/tickets/{ticket_id}", ok=(200, 204))

    def extend_ticket(self, ticket_id: str, timeout_s: int) -> None:
        self._request("PATCH", f"/tickets/{ticket_id}", {"timeout": timeout_s})


def make_ticket(ticket_id: str, url: str, size: int, ops: list[str], timeout_s: int,
                dirty: bool = False, transfer_id: str | None = None) -> dict[str, object]:
    return {
        "uuid": ticket_id,
        "size": size,
        "url": url,
        "timeout": timeout_s,
        "inactivity_timeout": max(60, timeout_s),
        "ops": list(ops),
        "sparse": True,
        "dirty": dirty,
        "transfer_id": transfer_id or ticket_id,
    }


class ImageioDaemon:
    """One running ovirt-imageio process."""

    def __init__(self, config: DaemonConfig, registry: procs.ProcessRegistry) -> None:
        self.config = config
        self.control = ControlClient(config.control_socket)
        self._registry = registry
        self._proc: procs.ManagedProcess | None = None

    @property
    def port(self) -> int:
        return self.config.port

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.config.port}"

    def transfer_url(self, ticket_id: str) -> str:
        return f"{self.base_url}/images/{ticket_id}"

    def spawn(self) -> None:
        """Start the process without waiting (so several daemons start in parallel)."""
        self.config.write()
        self.config.control_socket.unlink(missing_ok=True)
        argv = [*imageio_command(), "--conf-dir", str(self.config.conf_dir)]
        log = self.config.conf_dir / "stdout.log"
        self._proc = self._registry.start(f"imageio-{self.config.name}", argv, log)

    def wait_ready(self, timeout_s: float = 20) -> None:
        assert self._proc is not None, "spawn() first"
        self._proc.wait_ready(self._ready, timeout_s)

    def _ready(self) -> bool:
        return procs.unix_socket_ready(self.config.control_socket) and procs.port_open(self.port)

    def stop(self) -> None:
        if self._proc is not None:
            self._registry.stop(self._proc)
            self._proc = None
