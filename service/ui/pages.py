"""The review console's pages: a login form that puts the API key in an HttpOnly cookie, the review page
(one product at a time or a grid, keyboard-first), and the products' photos. All catalog text goes through
Jinja2's autoescaping; the script only ever sets `textContent`. Decisions go through the review API."""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from shoptag.catalog.feedback import MAX_NAME_CHARS
from shoptag.core.errors import NotFound
from shoptag.pipeline.review import queue, stats, traffic
from shoptag.pipeline.workspace import Workspace

from ..auth import KEY_COOKIE, key_is_valid, require_api_key
from ..review import REVIEWER_COOKIE, reviewer_of
from ..routes import State

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")  # autoescape is on for .html templates
PAGE = 60  # queue items rendered per page load
COOKIE = {"httponly": True, "samesite": "strict", "path": "/"}

router = APIRouter(include_in_schema=False)


def mount_static(app: FastAPI) -> None:
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")


def signed_in(request: Request) -> bool:
    return key_is_valid(request, request.cookies.get(KEY_COOKIE) or request.headers.get("x-api-key"))


@router.get("/ui/login", response_class=HTMLResponse)
def login_page(request: Request, next: Annotated[str, Query(max_length=2000)] = "/ui/review") -> Response:
    return templates.TemplateResponse(request, "login.html", {"next": _local(next), "error": None})


@router.post("/ui/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    """Check the key and keep it in an HttpOnly, SameSite=Strict cookie (never readable by page scripts)."""
    form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
    key, name, target = form.get("key", ""), form.get("reviewer", "").strip()[:MAX_NAME_CHARS], _local(form.get("next", ""))
    if request.app.state.settings.service.api_key is None or not key_is_valid(request, key):
        return templates.TemplateResponse(request, "login.html", {"next": target, "error": "Wrong API key."},
                                          status_code=403)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(KEY_COOKIE, key, **COOKIE)
    response.set_cookie(REVIEWER_COOKIE, name or "reviewer", **COOKIE)
    return response


@router.post("/ui/logout")
def logout() -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(KEY_COOKIE, path="/")
    response.delete_cookie(REVIEWER_COOKIE, path="/")
    return response


@router.get("/ui/review", response_class=HTMLResponse)
def review_page(
    request: Request, state: State,
    family: Annotated[str | None, Query(max_length=MAX_NAME_CHARS)] = None,
    tag: Annotated[str | None, Query(max_length=MAX_NAME_CHARS)] = None,
    view: Annotated[str, Query(pattern="^(one|grid)$")] = "one",
) -> Response:
    """The queue, one product at a time (or a grid), with the reviewer metrics beside it. Without a valid key
    it refuses: browsers are sent to the login form."""
    if not signed_in(request):
        return RedirectResponse(f"/ui/login?next={quote(str(request.url.path) + '?' + request.url.query)}",
                                status_code=303)
    items, total = queue(state.store, state.review, family=family or None, tag=tag or None, limit=PAGE,
                         traffic=traffic(Workspace(state.settings.workspace)))
    summary = stats(state.store, state.review)
    return templates.TemplateResponse(request, "review.html", {
        "items": items, "total": total, "stats": summary, "families": sorted(summary["queue"]),
        "family": family or "", "tag": tag or "", "view": view, "reviewer": reviewer_of(request),
    })


@router.get("/ui/image", dependencies=[Depends(require_api_key)])
def product_image(state: State, id: Annotated[str, Query(min_length=1, max_length=256)]) -> Response:
    """The product's photo: only ever the file the store names for that product."""
    found = state.store.products([id])
    if not found or not found[0].image or "://" in found[0].image or not Path(found[0].image).is_file():
        raise NotFound(f"no photo for product {id!r}")
    path = Path(found[0].image)
    return FileResponse(path, media_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream")


def _local(target: str) -> str:
    """Only same-site paths to go back to after login (no open redirects)."""
    return target if target.startswith("/ui/") and not target.startswith("//") else "/ui/review"
