"""The HTTP API (FastAPI): managers and their hosts, policies, runs, jobs, backups, restores.

Every endpoint but `/health` and the API's own documentation needs a bearer token (see
`orchestrator.auth`), checked by `RequestGate` before any of the body is read; bodies are
capped at MAX_BODY_BYTES. Errors come back as `{"detail": "..."}` with 400 (bad input), 401,
404, 409 (conflict), 413 (body too large) or 502 (the engine or another service failed); a
stack trace never reaches a client, and input is quoted in errors only in part.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.auth import TOKEN_HINT, UNAUTHORIZED, TokenAuth, is_loopback
from orchestrator.hosts import HostIn
from orchestrator.managers import Manager
from orchestrator.policies import Policy, describe_error_items
from orchestrator.service import (
    MAX_LOCATION_CHARS,
    Conflict,
    NotFound,
    RestoreIn,
    Service,
    build_service,
)
from shared.errors import ConfigError, DroverError, ServiceError
from shared.logging import get_logger
from shared.settings import Settings
from shared.state import VmLocked
from shared.units import format_size

log = get_logger(__name__)
DEFAULT_PORT = 8400
MAX_BODY_BYTES = 1 << 20  # policies and managers are a few KiB
MAX_DETAIL_CHARS = 2000  # an error's detail, whatever input it describes
MAX_QUOTED_CHARS = 64  # of one input value quoted in an error
MAX_PROBLEMS = 10  # validation problems described in one error
PUBLIC_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
REPOSITORY_DOC = "an absolute path or a file:// URL; empty: the settings' repository"
RepositoryQuery = Annotated[str, Query(max_length=MAX_LOCATION_CHARS, description=REPOSITORY_DOC)]


def create_app(service: Service, auth: TokenAuth) -> FastAPI:
    app = FastAPI(
        title="Drover",
        description="Backups of oVirt / OLVM / RHV VMs by a fleet of Celery workers.",
        version="0.1.0",
    )
    app.add_exception_handler(DroverError, _drover_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)
    app.include_router(_health_router(service))
    app.include_router(_router(service), dependencies=[Depends(auth)])
    app.add_middleware(RequestGate, auth=auth)
    return app


class RequestGate:
    """ASGI middleware: the token is checked before anything of the body is read, and a body
    is read only up to `max_body` bytes (413 beyond), so no request makes the API buffer more
    than that, and none without a token makes it buffer anything."""

    def __init__(self, app: ASGIApp, auth: TokenAuth, max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.auth = auth
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        token = headers.get("authorization")
        if scope["path"] not in PUBLIC_PATHS and not self.auth.accepts(token):
            challenge = {"WWW-Authenticate": "Bearer"}
            await JSONResponse({"detail": UNAUTHORIZED}, 401, challenge)(scope, receive, send)
            return
        try:
            body = await self._body(headers, receive)
        except _Disconnected:
            return
        if body is None:
            detail = (
                f"the request body is larger than {format_size(self.max_body)}, "
                "the most the Drover API accepts"
            )
            await JSONResponse({"detail": detail}, 413)(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _body(self, headers: Headers, receive: Receive) -> bytes | None:
        """The whole body, or None once it is (or is declared) larger than `max_body`."""
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            return None
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                raise _Disconnected
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body:
                return None
            more = message.get("more_body", False)
        return b"".join(chunks)


class _Disconnected(Exception):
    """The client went away before it sent the whole body."""


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the body read already, then whatever comes next (a disconnect)."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


def _health_router(service: Service) -> APIRouter:
    router = APIRouter()

    @router.get("/health", tags=["health"])
    def health() -> dict[str, Any]:
        """Redis, the queues live workers consume and how many workers announce themselves;
        `degraded` when Redis does not answer or no live worker consumes drover.default;
        `unserved`: the central queues without a live consumer, `problems` what to start."""
        return service.health()

    return router


def _router(service: Service) -> APIRouter:
    router = APIRouter()
    _manager_routes(router, service)
    _host_routes(router, service)
    _policy_routes(router, service)
    _job_routes(router, service)
    return router


def _manager_routes(router: APIRouter, service: Service) -> None:
    tags: Any = ["managers"]

    @router.post("/managers", status_code=status.HTTP_201_CREATED, tags=tags)
    def add_manager(manager: Manager) -> dict[str, Any]:
        """Register an engine after a connection test; the password is never returned."""
        return service.add_manager(manager.document())

    @router.put("/managers/{name}", tags=tags)
    def replace_manager(name: str, manager: Manager) -> dict[str, Any]:
        _same_name(name, manager.name, "manager")
        return service.add_manager(manager.document(), replace=True)

    @router.get("/managers", tags=tags)
    def list_managers() -> list[dict[str, Any]]:
        return service.managers()

    @router.get("/managers/{name}", tags=tags)
    def get_manager(name: str) -> dict[str, Any]:
        return service.manager(name)

    @router.delete("/managers/{name}", status_code=status.HTTP_204_NO_CONTENT, tags=tags)
    def remove_manager(name: str) -> None:
        """Forget an engine and the SSH credentials of its hosts."""
        service.remove_manager(name)

    @router.post("/managers/{name}/sync", tags=tags)
    def sync_manager(name: str) -> dict[str, Any]:
        """Test the connection again; list the engine's hosts, those without SSH credentials
        (`hosts_without_ssh`) and credentials of hosts the engine no longer has."""
        return service.sync_manager(name)


def _host_routes(router: APIRouter, service: Service) -> None:
    tags: Any = ["hosts"]

    @router.put("/managers/{name}/hosts/{host}", tags=tags)
    def put_host(name: str, host: str, access: HostIn) -> dict[str, Any]:
        """Register (or replace) the SSH credentials of one of the engine's hosts, for mode
        ssh: a private key's text or a password; neither is ever returned."""
        return service.put_host(name, host, access.document())

    @router.get("/managers/{name}/hosts", tags=tags)
    def list_hosts(name: str) -> list[dict[str, Any]]:
        """Every host of the engine, with `credentials` true or false (no secrets)."""
        return service.hosts(name)

    @router.delete(
        "/managers/{name}/hosts/{host}", status_code=status.HTTP_204_NO_CONTENT, tags=tags
    )
    def remove_host(name: str, host: str) -> None:
        service.remove_host(name, host)


def _policy_routes(router: APIRouter, service: Service) -> None:
    tags: Any = ["policies"]

    @router.post("/policies", status_code=status.HTTP_201_CREATED, tags=tags)
    def create_policy(policy: Policy) -> dict[str, Any]:
        return service.put_policy(policy.model_dump(mode="json"), create=True)

    @router.put("/policies/{name}", tags=tags)
    def put_policy(name: str, policy: Policy) -> dict[str, Any]:
        _same_name(name, policy.name, "policy")
        return service.put_policy(policy.model_dump(mode="json"))

    @router.get("/policies", tags=tags)
    def list_policies() -> list[dict[str, Any]]:
        return service.policies()

    @router.get("/policies/{name}", tags=tags)
    def get_policy(name: str) -> dict[str, Any]:
        return service.policy(name)

    @router.delete("/policies/{name}", status_code=status.HTTP_204_NO_CONTENT, tags=tags)
    def remove_policy(name: str) -> None:
        service.remove_policy(name)

    @router.post("/policies/{name}/run", status_code=status.HTTP_202_ACCEPTED, tags=tags)
    def run_policy(name: str) -> dict[str, Any]:
        """Queue one backup job per selected VM; busy VMs are listed under `refused`."""
        return service.run_policy(name)


def _job_routes(router: APIRouter, service: Service) -> None:
    @router.get("/jobs", tags=["jobs"])
    def list_jobs(limit: int = Query(100, ge=1, le=10000)) -> list[dict[str, Any]]:
        """Jobs, latest first, with per-disk progress."""
        return service.jobs(limit)

    @router.get("/jobs/{job_id}", tags=["jobs"])
    def get_job(job_id: str) -> dict[str, Any]:
        return service.job(job_id)

    @router.post("/jobs/{job_id}/cancel", tags=["jobs"])
    def cancel_job(job_id: str) -> dict[str, Any]:
        """Stop a job that has not finished: its tasks are revoked (the running one
        terminated), what it made on the engine is cleaned up through its mode, and it fails
        "cancelled by the operator"; 409 for a job that has finished."""
        return service.cancel_job(job_id)

    @router.get("/backups", tags=["backups"])
    def list_backups(repository: RepositoryQuery = "") -> list[dict[str, Any]]:
        """Backups in a repository (default: the settings' repository), oldest first."""
        return service.backups(repository)

    @router.get("/backups/{backup_id}", tags=["backups"])
    def get_backup(backup_id: str, repository: RepositoryQuery = "") -> dict[str, Any]:
        return service.backup(backup_id, repository)

    @router.delete("/backups/{backup_id}", tags=["backups"])
    def remove_backup(backup_id: str, repository: RepositoryQuery = "") -> dict[str, Any]:
        """Forget one backup and collect the chunks only it used; 409 while another backup
        (an incremental child) or a running job depends on it."""
        return service.remove_backup(backup_id, repository)

    @router.post("/repository/prune", tags=["backups"])
    def prune_repository(
        repository: RepositoryQuery = "", dry_run: bool = Query(False)
    ) -> dict[str, Any]:
        """Apply every policy's retention to a repository's backups, then collect unused
        chunks (safe while backups run); `dry_run` only reports what would go."""
        return service.prune(repository, dry_run)

    @router.post("/restores", status_code=status.HTTP_202_ACCEPTED, tags=["restores"])
    def restore(spec: RestoreIn) -> dict[str, Any]:
        return service.restore(spec.model_dump())


def _same_name(path_name: str, body_name: str, what: str) -> None:
    if path_name != body_name:
        raise ConfigError(
            f"the {what} in the body is named {body_name!r} but the URL names {path_name!r}",
            hint="make them the same",
        )


# errors --------------------------------------------------------------------------------


def status_for(error: DroverError) -> int:
    from shared.repository.errors import BackupNotFound

    if isinstance(error, NotFound | BackupNotFound):
        return status.HTTP_404_NOT_FOUND
    if isinstance(error, Conflict | VmLocked):
        return status.HTTP_409_CONFLICT
    if isinstance(error, ConfigError):
        return status.HTTP_400_BAD_REQUEST
    if isinstance(error, ServiceError) or type(error).__module__.startswith("shared.engine"):
        return status.HTTP_502_BAD_GATEWAY
    return status.HTTP_400_BAD_REQUEST


async def _drover_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, DroverError)
    return JSONResponse({"detail": clipped(str(error))}, status_code=status_for(error))


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    items = list(error.errors())
    detail = describe_error_items(
        [_quoted_briefly(i) for i in items[:MAX_PROBLEMS]], _body_model(request)
    )
    if len(items) > MAX_PROBLEMS:
        detail += f"; and {len(items) - MAX_PROBLEMS} more problems"
    return JSONResponse({"detail": clipped(detail)}, status_code=status.HTTP_400_BAD_REQUEST)


def clipped(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """`text`, cut to `limit` characters with a note saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def _quoted_briefly(item: Any) -> dict[str, Any]:
    """A pydantic error item whose input (and its quotes in the message) is at most
    MAX_QUOTED_CHARS long; input that is no string is left out (the message says enough)."""
    shown = {k: v for k, v in item.items() if k not in ("input", "ctx", "url")}
    value = item.get("input")
    if isinstance(value, str):
        short = clipped(value, MAX_QUOTED_CHARS)
        shown["input"] = short
        if short != value:
            shown["msg"] = str(item.get("msg", "")).replace(repr(value), repr(short))
    return shown


async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    log.error("unexpected error", path=request.url.path, error=repr(error))
    return JSONResponse(
        {"detail": f"internal error ({type(error).__name__}): see the API's log"},
        status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


def _body_model(request: Request) -> type[BaseModel] | None:
    field = getattr(request.scope.get("route"), "body_field", None)
    model = getattr(field, "type_", None) or getattr(
        getattr(field, "field_info", None), "annotation", None
    )
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


# serving -------------------------------------------------------------------------------


def check_serving(settings: Settings, host: str, insecure_local: bool) -> None:
    """Refuse to serve without authentication, or without it on a non-loopback address."""
    if insecure_local and not is_loopback(host):
        raise ConfigError(
            f"--insecure-local serves without authentication, so it binds 127.0.0.1 only, "
            f"not {host}",
            hint="drop --host, or drop --insecure-local and set an API token",
        )
    if not insecure_local and not any(t.get_secret_value() for t in settings.api_tokens):
        raise ConfigError(
            "no API token is configured, so anyone could drive backups through the API",
            hint=f"{TOKEN_HINT}; or pass --insecure-local to serve on 127.0.0.1 without one",
        )


def run_api(settings: Settings, host: str, port: int, insecure_local: bool = False) -> None:
    import uvicorn

    check_serving(settings, host, insecure_local)
    auth = TokenAuth(settings.api_tokens, enabled=not insecure_local)
    app = create_app(build_service(settings), auth)
    log.info("serving the API", host=host, port=port, authentication=not insecure_local)
    uvicorn.run(app, host=host, port=port, server_header=False, log_level="info")
