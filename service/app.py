"""`create_app(settings)`: the storefront service as a FastAPI app. Its state (store, encoders, model, search
backend, metrics) is built in the lifespan and owned by the app object: no globals, so tests can run many."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import Depends, FastAPI

from shoptag.core.settings import Settings

from .behaviour import router as behaviour_router
from .errors import BodyLimit, install_error_handlers
from .metrics import RequestTimer, ServiceMetrics
from .parameters import known_query_parameters
from .review import router as review_router
from .routes import router
from .ui.pages import mount_static
from .ui.pages import router as ui_router
from .state import ServiceState

DESCRIPTION = """Similar products, real-time tagging with explained tags, corrections, hybrid search and metrics
for a shoptag workspace. Write endpoints need `X-API-Key` when the service has an API key. Errors are JSON
`{"error": ..., "detail": ...}`."""


def _version() -> str:
    try:
        return version("shoptag")
    except PackageNotFoundError:
        return "dev"


def create_app(settings: Settings, on_ready: Callable[[dict], None] | None = None) -> FastAPI:
    """The app for `settings`; nothing is opened until the server starts it (lifespan). `on_ready` is given the
    startup summary (`ServiceState.summary`) once the service can answer."""
    metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = ServiceState.open(settings, metrics)
        app.state.service = state
        if on_ready is not None:
            on_ready(state.summary())
        try:
            yield
        finally:
            state.close()

    # no Swagger UI or ReDoc pages: FastAPI loads their scripts from a CDN, which a shop's offline or locked-down
    # host cannot reach (a blank page); the schema itself, /openapi.json, is served from here
    app = FastAPI(title="shoptag", version=_version(), description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None, dependencies=[Depends(known_query_parameters)])
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(review_router)
    app.include_router(ui_router)
    mount_static(app)
    app.include_router(behaviour_router)
    app.add_middleware(BodyLimit, max_bytes=settings.service.max_body_bytes)
    app.add_middleware(RequestTimer, metrics=metrics)  # added last: outermost, so it times 413s too
    return app
