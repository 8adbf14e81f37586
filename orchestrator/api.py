"""The HTTP API (FastAPI): managers, policies, runs, jobs, backups, restores.

Every endpoint but `/health` needs a bearer token (see `orchestrator.auth`). Errors come back
as `{"detail": "..."}` with 400 (bad input), 401, 404, 409 (conflict) or 502 (the engine or
another service failed); a stack trace never reaches a client.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from orchestrator.auth import TOKEN_HINT, TokenAuth, is_loopback
from orchestrator.managers import Manager
from orchestrator.policies import Policy, describe_error_items
from orchestrator.service import Conflict, NotFound, RestoreIn, Service, build_service
from shared.errors import ConfigError, DroverError, ServiceError
from shared.logging import get_logger
from shared.settings import Settings
from shared.state import VmLocked

log = get_logger(__name__)
DEFAULT_PORT = 8400


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
    return app


def _health_router(service: Service) -> APIRouter:
    router = APIRouter()

    @router.get("/health", tags=["health"])
    def health() -> dict[str, str]:
        try:
            service.state.redis.ping()
        except Exception:
            return {"status": "degraded", "redis": "unreachable"}
        return {"status": "ok", "redis": "ok"}

    return router


def _router(service: Service) -> APIRouter:
    router = APIRouter()
    _manager_routes(router, service)
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
        service.remove_manager(name)


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

    @router.get("/backups", tags=["backups"])
    def list_backups(repository: str = "") -> list[dict[str, Any]]:
        """Backups in a repository (default: the settings' repository), oldest first."""
        return service.backups(repository)

    @router.get("/backups/{backup_id}", tags=["backups"])
    def get_backup(backup_id: str, repository: str = "") -> dict[str, Any]:
        return service.backup(backup_id, repository)

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
    return JSONResponse({"detail": str(error)}, status_code=status_for(error))


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    detail = describe_error_items(list(error.errors()), _body_model(request))
    return JSONResponse({"detail": detail}, status_code=status.HTTP_400_BAD_REQUEST)


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
