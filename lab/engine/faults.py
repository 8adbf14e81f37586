"""API errors and how they are rendered: `<fault><reason/><detail/></fault>`."""

from __future__ import annotations

from ovirtsdk4 import types, writer

OPERATION_FAILED = "Operation Failed"


class ApiError(Exception):
    """Raised by handlers; the server turns it into a fault with `status`."""

    def __init__(self, status: int, detail: str, reason: str = OPERATION_FAILED) -> None:
        super().__init__(f"{status} {reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail

    def to_xml(self) -> str:
        fault = types.Fault(reason=self.reason, detail=self.detail)
        return str(writer.Writer.write(fault))


def not_found(entity_id: str) -> ApiError:
    return ApiError(404, f"Entity not found: {entity_id}")


def conflict(detail: str) -> ApiError:
    """Validation failures about locks and states; the engine answers 409 for these."""
    return ApiError(409, f"[{detail}]")


def bad_request(detail: str) -> ApiError:
    return ApiError(400, f"[{detail}]")


def incomplete(entity: str, fields: str, action: str = "add") -> ApiError:
    """The engine's answer when a required parameter is missing."""
    return ApiError(400, f"{entity} [{fields}] required for {action}", "Incomplete parameters")


def syntax_error(detail: str) -> ApiError:
    return ApiError(400, detail, "Request syntactically incorrect.")


def unauthorized() -> ApiError:
    return ApiError(401, "The request requires a valid SSO access token.", "Unauthorized")
