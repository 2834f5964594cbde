"""Errors → the `{"error": {"code", "message", ...}}` envelope, registered once for every route."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from plivo_tracker.db.engine import DatabaseUnavailable, database_lost
from plivo_tracker.web.envelope import error_envelope
from plivo_tracker.web.hygiene import SafeJSONResponse

log = structlog.get_logger(__name__)

DATABASE_RETRY_AFTER = 1  # seconds: a restarting database is usually back within a few


class AppError(Exception):
    """A domain error that carries its HTTP status and a stable code."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(AppError):
    status = 404
    code = "not_found"


class InvalidParameter(AppError):
    status = 422
    code = "invalid_parameter"


def error_response(status: int, code: str, message: str, **details: Any) -> JSONResponse:
    return SafeJSONResponse(error_envelope(code, message, **details), status_code=status)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    422: "validation_error",
}


def _public_loc(loc: Any) -> list[str | int]:
    """Where a problem is, without pydantic's internal union tags ("function-after[...]")."""
    return [p for p in loc if isinstance(p, int) or ("[" not in p and "(" not in p)]


def register(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_request: Request, exc: AppError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, **exc.details)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"loc": _public_loc(e.get("loc", ())), "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        return error_response(422, "validation_error", "request is not valid", problems=problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    # Handled here (not by the catch-all below, which re-raises into the server's log).
    @app.exception_handler(DatabaseUnavailable)
    @app.exception_handler(SQLAlchemyError)
    @app.exception_handler(ConnectionError)
    async def _database_error(request: Request, exc: Exception) -> JSONResponse:
        if database_lost(exc):
            return _database_unavailable(request, exc)
        return await _unexpected(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Logged with its traceback; the client never sees internals.
        log.error("http.unhandled", path=request.url.path, exc_info=exc)
        return error_response(500, "internal_error", "internal error")


def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """The database is unreachable or restarting: 503 with Retry-After, so that a client
    retries, instead of a 500 that reads as a bug. A connection lost during a commit leaves
    its outcome open: a send retried with the same Idempotency-Key gets the one answer."""
    log.warning("http.database_unavailable", path=request.url.path, error=repr(exc))
    response = error_response(
        503, "database_unavailable", "the database cannot be reached now; retry later"
    )
    response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER)
    return response
