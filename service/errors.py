"""What a client sees when a request fails: JSON `{"error": ..., "detail": ...}` with a 4xx that says what to
fix, 413 for a body over the size limit, and for anything unexpected a generic 500 (the stack trace goes to
the server log, never to the client). A `ShoptagError` gets the HTTP status of its row in `core.errors.OUTCOMES`,
the same table the CLI's exit codes come from."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shoptag.core.errors import ShoptagError, outcome

log = logging.getLogger("shoptag.service")


class BodyTooLarge(HTTPException):
    """Raised while the body is read, so FastAPI's body parsing passes it through as the 413 it is."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over the limit of {limit:,} bytes (service.max_body_bytes)")


class BodyLimit:
    """ASGI middleware refusing bodies over `max_bytes`: at once from Content-Length, and while reading for
    chunked bodies that announce no length, so an oversize body is never buffered whole."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await error_response(400, "Content-Length is not a number")(scope, receive, send)
                return
            if int(declared) > self.max_bytes:
                await error_response(413, BodyTooLarge(self.max_bytes).detail)(scope, receive, send)
                return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge as exc:  # raised outside FastAPI's own handling (e.g. by middleware reading the body)
            if started:
                raise
            await error_response(413, exc.detail)(scope, receive, send)


def error_response(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": HTTPStatus(status).phrase, "detail": detail}, status, headers=headers)


def _validation_detail(exc: RequestValidationError) -> tuple[int, Any]:
    """400 for a body that is not JSON at all, else 422 listing each field at fault as `where: what`."""
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return 400, "request body is not valid JSON"
    return 422, [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {_message(e)}" for e in errors]


def _message(error: dict) -> str:
    """Pydantic's message, except a tag filter's pattern, which says what the pattern means."""
    if error.get("type") == "string_pattern_mismatch" and error.get("loc", ())[:2] == ("query", "tag"):
        return f"bad tag filter {str(error.get('input'))[:80]!r}: expected family=value"
    return error.get("msg", "")


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as the same JSON shape."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, exc.detail, getattr(exc, "headers", None))

    @app.exception_handler(ShoptagError)
    async def shoptag_error(request: Request, exc: ShoptagError) -> JSONResponse:
        status = outcome(exc).http_status
        if status >= 500:
            log.error("%s in %s %s: %s", type(exc).__name__, request.method, request.url.path, exc)
        return error_response(status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(*_validation_detail(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return error_response(500, "internal error; the server log has the details")
