"""The API's errors: one JSON shape, stable codes, behaviour on the class.

Every error response is ``{"error": {"code": ..., "message": ..., "request_id": ..., "details": {...}}}``.
`code` is stable (clients branch on it); `message` is for people and may change. `outcome` is what the
access audit records for the refusal (`pipeline.api.security.gate` writes that row for every error).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pipeline.errors import RoomlogsError


class ApiError(RoomlogsError):
    """Root of the errors the API answers with. Subclasses fix `status` and `code`."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    #: Label for roomlogs_api_denials_total when the error is a refusal of access (None otherwise).
    denial: ClassVar[str | None] = None
    #: access_audit.outcome of the refusal: denied (who is asking, or a legal hold), rejected (what was
    #: asked), rate_limited, error (the server failed).
    outcome: ClassVar[str] = "rejected"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def headers(self) -> dict[str, str]:
        return {}

    def body(self, request_id: str) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message, "request_id": request_id}
        if self.details:
            err["details"] = self.details
        return {"error": err}


# --- 400 ------------------------------------------------------------------------------------------------
class InvalidParameter(ApiError):
    code = "invalid_parameter"


class InvalidBody(ApiError):
    code = "invalid_body"


class RangeTooLarge(ApiError):
    code = "range_too_large"


class InvalidCursor(ApiError):
    """A cursor this API did not issue, or issued for another query or caller: a refused access."""

    code = "invalid_cursor"
    denial = "invalid_cursor"
    outcome = "denied"


# --- 401 / 403 ------------------------------------------------------------------------------------------
class Unauthenticated(ApiError):
    status = 401
    code = "unauthenticated"
    denial = "unauthenticated"
    outcome = "denied"
    #: The `sub` claim of a token that failed verification, when it has one: audited as unverified.
    unverified_subject: str | None = None

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="roomlogs"'}


class InvalidToken(Unauthenticated):
    code = "invalid_token"
    denial = "invalid_token"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="roomlogs", error="invalid_token"'}


class TokenExpired(InvalidToken):
    code = "token_expired"
    denial = "token_expired"


class SessionExpired(Unauthenticated):
    """The console session is unknown, signed out or expired: sign in again."""

    code = "session_expired"
    denial = "session_expired"


class Forbidden(ApiError):
    """The caller has no right to this room or user (deliberately the same whether it exists or not)."""

    status = 403
    code = "forbidden"
    denial = "not_permitted"
    outcome = "denied"


class ReasonRequired(Forbidden):
    code = "reason_required"
    denial = "reason_required"


class CsrfFailed(Forbidden):
    """A state change on a console session without the session's CSRF token, or from another origin."""

    code = "csrf_failed"
    denial = "csrf_failed"


class InsufficientScope(Forbidden):
    code = "insufficient_scope"
    denial = "insufficient_scope"


# --- other 4xx ------------------------------------------------------------------------------------------
class NotFound(ApiError):
    status = 404
    code = "not_found"


class NotSealed(NotFound):
    """The room-day has no seal yet (it is still open, or sealing has not run since it closed)."""

    code = "not_sealed"


class MethodNotAllowed(ApiError):
    status = 405
    code = "method_not_allowed"


class ExportTooLarge(ApiError):
    status = 413
    code = "export_too_large"


class LegalHold(ApiError):
    """The room is under legal hold: its logs cannot be deleted until the hold is released."""

    status = 409
    code = "legal_hold"
    outcome = "denied"


class NotProvable(ApiError):
    """The stored rows of a sealed day no longer give its sealed tree head (retention dropped some, an
    audited deletion removed some, or they changed), and what would prove the rest is not kept."""

    status = 409
    code = "not_provable"


class Conflict(ApiError):
    """A concurrent change held the rows this request needed (a lock wait or a serialization failure)."""

    status = 409
    code = "conflict"
    retriable = True

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class QueryTimeout(ApiError):
    """The query ran past its statement timeout: a narrower range or filter will do."""

    status = 422
    code = "query_timeout"


class RateLimited(ApiError):
    status = 429
    code = "rate_limited"
    denial = "rate_limited"
    outcome = "rate_limited"
    retriable = True

    def __init__(self, message: str, *, retry_after_seconds: float) -> None:
        super().__init__(message, details={"retry_after_seconds": round(retry_after_seconds, 3)})
        self.retry_after_seconds = retry_after_seconds

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, round(self.retry_after_seconds + 0.5)))}


class TooManyStreams(RateLimited):
    code = "too_many_streams"
    denial = "too_many_streams"


# --- 5xx ------------------------------------------------------------------------------------------------
class Unavailable(ApiError):
    status = 503
    code = "unavailable"
    outcome = "error"
    retriable = True

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "5"}


class InternalError(ApiError):
    status = 500
    code = "internal"
    outcome = "error"


#: Every code the API answers with, for the OpenAPI document and the README.
ERROR_CODES: tuple[str, ...] = tuple(
    sorted(
        {
            cls.code
            for cls in (
                InvalidParameter,
                InvalidBody,
                RangeTooLarge,
                InvalidCursor,
                Unauthenticated,
                InvalidToken,
                TokenExpired,
                SessionExpired,
                CsrfFailed,
                Forbidden,
                ReasonRequired,
                InsufficientScope,
                NotFound,
                NotSealed,
                MethodNotAllowed,
                ExportTooLarge,
                LegalHold,
                NotProvable,
                Conflict,
                QueryTimeout,
                RateLimited,
                TooManyStreams,
                Unavailable,
                InternalError,
            )
        }
    )
)
