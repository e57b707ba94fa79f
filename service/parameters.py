"""Unknown query parameters are refused, as unknown settings keys are: `GET /search?page=2` would otherwise
answer page 1 without a word, and the shop would never learn that the parameter is `from` (or `cursor`)."""

from __future__ import annotations

from difflib import get_close_matches

from fastapi import Request

from shoptag.core.errors import BadInput


def known_query_parameters(request: Request) -> None:
    """A 422 naming each query parameter the route does not take, with the closest one it does."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = _query_names(dependant)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise BadInput("; ".join(_unknown(name, known) for name in unknown))


def _query_names(dependant) -> set[str]:
    """The query parameters of a route and of the dependencies it runs (FastAPI's `Dependant` tree)."""
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


# names shops reach for that mean a parameter of another name
MEANT = {"page": "from", "offset": "from", "limit": "size", "query": "q"}


def _unknown(name: str, known: set[str]) -> str:
    close = [MEANT[name]] if MEANT.get(name) in known else get_close_matches(name, sorted(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    takes = f"; it takes {', '.join(sorted(known))}" if known else "; it takes none"
    return f"unknown query parameter {name[:40]!r}{hint}{takes}"
