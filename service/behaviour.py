"""The behaviour endpoints: shopper events in, recommendations out (docs/BEHAVIOUR.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Query, Request

from shoptag.pipeline.events import append_events
from shoptag.pipeline.recommend import recommend

from .auth import require_api_key
from .routes import ERRORS
from .schemas import MAX_ID_CHARS, MAX_K, EventIn, EventsOut, RecommendationOut, RecommendationsOut
from .state import ServiceState
from .validate import checked_batch

router = APIRouter(tags=["behaviour"], responses=ERRORS)  # errors as documented (found by fuzzing)


def get_state(request: Request) -> ServiceState:
    return request.app.state.service


State = Annotated[ServiceState, Depends(get_state)]


@router.post("/events", response_model=EventsOut, dependencies=[Depends(require_api_key)])
def post_events(state: State, body: Annotated[list[EventIn], Body(
        description="A JSON array of events (up to `service.max_batch`).")]) -> EventsOut:
    """Store shopper events. Bad events (unknown item or type, bad time) are listed by their 1-based position
    and the rest are stored; a retried batch adds nothing. A user's new events count in their recommendations
    at once."""
    checked_batch(len(body), state.settings)
    report = append_events(state.settings, state.store, [e.model_dump(exclude_none=True) for e in body])
    state.metrics.events.inc(report.added)
    return EventsOut(received=report.read, added=report.added, duplicates=report.duplicates,
                     rejected=report.rejected, rejects=report.rejects)


@router.get("/recommendations/{user}", response_model=RecommendationsOut)
def recommendations(
    state: State,
    user: Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS, description="The shop's user id.")],
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    context: Annotated[str | None, Query(max_length=MAX_ID_CHARS,
                                         description="A product the user is looking at (for unknown users).")] = None,
) -> RecommendationsOut:
    """Personal recommendations from the user's history (own purchases, co-bought items, content like theirs,
    popularity); an unknown user gets what is popular, around `context` when given — never an error."""
    items, known = recommend(state.settings, state.recs.get(), state.recs.log, user, k, context)
    titles = {p.id: p.title for p in state.store.products([i.id for i in items])}
    return RecommendationsOut(user=user, known_user=known, items=[
        RecommendationOut(id=i.id, score=i.score, reason=i.reason, title=titles.get(i.id, "")) for i in items])
