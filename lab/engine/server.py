"""The engine's HTTPS front: SSO, the REST API under /ovirt-engine/api, the lab's own control.

`EngineServer(inventory, dataplane, cert_file, key_file, ...)`; `start()` serves on a
background thread, `stop()` stops serving and joins the engine's background jobs.

`version` is the engine version it presents (default 4.5.5, see lab.engine.version);
`set_version()` or `POST /ovirt-engine/lab/version {"version": "4.3"}` change it while it
runs, and `on_version_change` (if given) is told each new version.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from lab.dataplane import DataPlane
from lab.engine import labctl, monitor, routes
from lab.engine.context import Engine, Timings
from lab.engine.faults import ApiError, unauthorized
from lab.engine.inventory import Inventory
from lab.engine.outage import Outage
from lab.engine.router import Request, Response, Router
from lab.engine.sso import Sso, TokenStore
from lab.engine.tasks import Tasks
from lab.engine.version import EngineVersion, as_version, version_control
from lab.engine.xml import presenting

log = logging.getLogger(__name__)

API_PREFIX = "/ovirt-engine/api"
LAB_PREFIX = "/ovirt-engine/lab"
SSO_TOKEN = "/ovirt-engine/sso/oauth/token"
SSO_LOGOUT = "/ovirt-engine/services/sso-logout"
LAB_OUTAGE = LAB_PREFIX + "/outage"
LAB_VERSION = LAB_PREFIX + "/version"


class EngineServer:
    def __init__(
        self,
        inventory: Inventory,
        dataplane: DataPlane,
        cert_file: str | Path,
        key_file: str | Path,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str = "admin@internal",
        password: str = "password",
        timings: Timings | None = None,
        version: str | EngineVersion | None = None,
        on_version_change: Callable[[EngineVersion], None] | None = None,
    ) -> None:
        self.engine = Engine(
            inventory, dataplane, Tasks(), timings or Timings(), as_version(version)
        )
        self._on_version_change = on_version_change
        self._version_lock = threading.Lock()
        self.sso = Sso(username, password, TokenStore())
        self.router = Router()
        self.outage = Outage()  # injected failures, see lab.engine.outage
        routes.register(self.router)
        self._httpd = _HttpServer((host, port), _handler_class(self))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert_file), str(key_file))
        self._httpd.socket = context.wrap_socket(
            self._httpd.socket, server_side=True, do_handshake_on_connect=False
        )
        self._thread: threading.Thread | None = None

    @property
    def inventory(self) -> Inventory:
        return self.engine.inventory

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self._httpd.server_address[0]
        if isinstance(host, bytes):
            host = host.decode()
        return f"https://{host}:{self.port}{API_PREFIX}"

    @property
    def version(self) -> EngineVersion:
        return self.engine.version

    def set_version(self, value: str | EngineVersion) -> EngineVersion:
        """Present another engine version from now on (requests under way keep theirs)."""
        new = as_version(value)
        with self._version_lock:
            self.engine.version = new
            if self._on_version_change is not None:
                self._on_version_change(new)
        log.info("the lab engine now presents version %s", new.full_version)
        return new

    def start(self) -> None:
        monitor.start(self.engine)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="engine-http", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, then stop the background jobs. Idempotent."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._httpd.server_close()
        self.engine.tasks.stop()

    # request handling, called from the HTTP handler threads
    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Response:
        parts = urlsplit(raw_path)
        path = parts.path
        try:
            if path == LAB_OUTAGE:
                self._authenticate(headers)
                return self.outage.control(method, body)
            if path == LAB_VERSION:
                self._authenticate(headers)
                return version_control(method, body, lambda: self.version, self.set_version)
            if not path.startswith(LAB_PREFIX + "/"):
                failure = self.outage.intercept(method, path)
                if failure is not None:
                    return failure
            if path == SSO_TOKEN and method == "POST":
                return _json(*self.sso.token(_form(body)))
            if path == SSO_LOGOUT and method in ("POST", "GET"):
                return _json(*self.sso.logout(_form(body) or dict(parse_qsl(parts.query))))
            if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
                self._authenticate(headers)
                return self._api(method, path[len(API_PREFIX) :], parts.query, headers, body)
            if path.startswith(LAB_PREFIX + "/"):
                self._authenticate(headers)
                return labctl.handle(self.engine, method, path[len(LAB_PREFIX) :], body)
            return Response(404, "", "text/plain")
        except ApiError as error:
            return Response(error.status, error.to_xml())
        except Exception as exc:
            log.exception("engine request failed: %s %s", method, raw_path)
            return Response(500, ApiError(500, str(exc), "Internal Server Error").to_xml())

    def _authenticate(self, headers: dict[str, str]) -> None:
        value = headers.get("authorization", "")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not self.sso.tokens.valid(token.strip()):
            raise unauthorized()

    def _api(
        self, method: str, path: str, query: str, headers: dict[str, str], body: bytes
    ) -> Response:
        presented = self.engine.version
        api_version = (presented.major, presented.minor)
        handler, params = self.router.resolve(method, path, api_version)
        request = Request(method, path, params, dict(parse_qsl(query)), headers, body, self.engine)
        with presenting(api_version):
            return handler(request)


def _form(body: bytes) -> dict[str, str]:
    return dict(parse_qsl(body.decode("utf-8", "replace")))


def _json(status: int, payload: Any) -> Response:
    return Response(status, json.dumps(payload), "application/json")


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s failed", client_address, exc_info=True)


def _handler_class(server: EngineServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "Apache"
        sys_version = ""

        def setup(self) -> None:
            super().setup()
            self.connection.settimeout(300)
            if isinstance(self.connection, ssl.SSLSocket):
                try:
                    self.connection.do_handshake()
                except (TimeoutError, ssl.SSLError, OSError):
                    self.close_connection = True
                    raise

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            response = server.handle(self.command, self.path, headers, body)
            payload = response.body.encode("utf-8")
            self.send_response(response.status)
            self.send_header("Content-Type", f"{response.content_type};charset=UTF-8")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

    return Handler
