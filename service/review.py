"""The review API: the queue, decisions, undo, bulk accept and reviewer metrics. The web page (`service/ui`) uses
exactly these endpoints. Everything here needs the API key (header or the page's cookie) when one is set."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from shoptag.catalog.feedback import MAX_NAME_CHARS, MAX_VALUES, Name, ProductId
from shoptag.core.errors import Conflict
from shoptag.pipeline.review import (
    ACTIONS, DecisionIn, bulk_accept, bulk_targets, decide, queue, stats, traffic, undo,
)
from shoptag.pipeline.tag_system import check_families
from shoptag.pipeline.workspace import Workspace

from .auth import require_api_key
from .routes import ERRORS, State
from .state import ServiceState

REVIEWER_COOKIE = "shoptag_reviewer"
MAX_PAGE = 500

router = APIRouter(tags=["review"], dependencies=[Depends(require_api_key)], responses=ERRORS)  # errors as documented


def reviewer_of(request: Request, named: str | None = None) -> str:
    """Who decides: the body's `reviewer`, else the `X-Reviewer` header, else the page's login name, else "api"."""
    name = named or request.headers.get("x-reviewer") or request.cookies.get(REVIEWER_COOKIE) or "api"
    return name.strip()[:MAX_NAME_CHARS] or "api"


class DecisionBody(BaseModel):
    id: ProductId
    family: Name
    action: str = Field(description=f"One of {', '.join(ACTIONS)}.")
    values: list[Name] = Field(default_factory=list, max_length=MAX_VALUES,
                               description="For `correct`: the right values.")


class DecisionsIn(BaseModel):
    decisions: list[DecisionBody] = Field(min_length=1)
    reviewer: Name | None = None


class UndoIn(BaseModel):
    # ids are SQLite rowids: a bigger number is a 422, not a failed query (a 500, found by fuzzing)
    decision: int | None = Field(None, ge=1, le=2**63 - 1,
                                 description="Decision id; default: the reviewer's latest that stands.")
    reviewer: Name | None = None


class BulkIn(BaseModel):
    family: Name
    min_score: float = Field(ge=0.0, le=1.0)
    tag: Name | None = None
    reviewer: Name | None = None


class DecidedOut(BaseModel):
    decisions: list[int]
    products: list[str]


class QueueOut(BaseModel):
    total: int
    items: list[dict[str, Any]]


def apply(state: ServiceState, ids: list[str], write) -> Any:
    """Run one review write inside the service's write discipline, then bring search up to date for `ids`."""
    with state.writing(ids):
        result = write()
        state.sync_search(ids)
        state.learn(ids)
    return result


@router.get("/review", response_model=QueueOut)
def get_queue(
    state: State,
    family: Annotated[str | None, Query(max_length=MAX_NAME_CHARS)] = None,
    tag: Annotated[str | None, Query(max_length=MAX_NAME_CHARS, description="Top candidate value.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> QueueOut:
    """The review queue: audit draws first, then by expected value of a decision; each item with its top
    candidates, scores, evidence (per-source scores, the neighbours that voted) and the product's title."""
    check_families(state.settings, state.store.families(), [family] if family else [])
    items, total = queue(state.store, state.review, family=family or None, tag=tag or None, limit=limit, offset=offset,
                         traffic=traffic(Workspace(state.settings.workspace)))
    return QueueOut(total=total, items=[asdict(i) for i in items])


@router.post("/review/decisions", response_model=DecidedOut)
def post_decisions(state: State, request: Request, body: DecisionsIn) -> DecidedOut:
    """Accept the top candidate, correct (pick other values) or reject (none applies): written as feedback, so
    search, `explain` and the next training see it at once. All or nothing."""
    ids = sorted({d.id for d in body.decisions})
    who = reviewer_of(request, body.reviewer)
    decided = apply(state, ids, lambda: decide(
        state.store, state.review, [DecisionIn(d.id, d.family, d.action, list(d.values)) for d in body.decisions], who))
    state.metrics.feedback.inc(len(decided))
    state.decided(len(decided))
    return DecidedOut(decisions=decided, products=ids)


@router.post("/review/undo")
def post_undo(state: State, request: Request, body: UndoIn) -> dict[str, Any]:
    """Undo a decision: the family's tags before it come back (and the item returns to the queue)."""
    who = reviewer_of(request, body.reviewer)
    target = body.decision if body.decision is not None else state.review.last_decision(who)
    if target is None:
        raise Conflict(f"{who} has no decision to undo")
    product = state.review.decision(target).product_id
    return asdict(apply(state, [product], lambda: undo(state.review, who, target)))


@router.post("/review/bulk", response_model=DecidedOut)
def post_bulk(state: State, request: Request, body: BulkIn) -> DecidedOut:
    """Accept the top candidate of every queued item of a family scoring at least `min_score`."""
    who = reviewer_of(request, body.reviewer)
    targets = bulk_targets(state.review, body.family, body.min_score, body.tag)
    ids = sorted({pid for pid, _ in targets})
    decided = apply(state, ids, lambda: bulk_accept(state.store, state.review, targets, who))
    state.metrics.feedback.inc(len(decided))
    state.decided(len(decided))
    return DecidedOut(decisions=decided, products=ids)


@router.get("/review/stats")
def get_stats(state: State) -> dict[str, Any]:
    """Reviewer metrics: decisions per hour, agreement of the model's top candidate with people, per family and
    reviewer; queue sizes; audits (measured precision beside the calibrated estimate)."""
    return stats(state.store, state.review)

