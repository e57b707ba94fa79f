"""The errors shoptag raises on purpose, and what each means to a shell and to an HTTP client.

Code anywhere raises a subclass of `ShoptagError` whose message says what to fix; the CLI (one error callback)
and the service (one exception handler) both read `OUTCOMES`, so an error has the same meaning everywhere.
Exit code 3 is not an error: the run finished and some input records were rejected (see the rejects file).
"""

from __future__ import annotations

import difflib
from collections.abc import Collection
from dataclasses import dataclass


class ShoptagError(Exception):
    """Something shoptag could not do; the class says what kind of failure, the message what to do about it."""


class BadInput(ShoptagError):
    """The input is wrong: arguments, settings, a catalog or corrections file, a request body."""


class UnknownFamily(BadInput):
    """A tag family the workspace does not know (most often a typo): the message names the closest one."""

    def __init__(self, name: str, known: Collection[str]) -> None:
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.5) or difflib.get_close_matches(
            name.lower(), sorted(known, key=str.lower), n=1, cutoff=0.5)
        base, mark, _ = name.rpartition("@")  # a level of a path-valued family: `category@2`
        levels = sorted(k for k in known if mark and k.startswith(f"{base}@"))
        if levels:
            hint = f" ({base} has the levels {', '.join(levels)})"
        elif mark and base in known:
            hint = f" ({base} has no levels: its values are not paths such as 'A > B > C')"
        elif close:
            hint = f" (did you mean {close[0]}?)"
        else:
            shown = sorted(known)[:20]
            hint = f" (known: {', '.join(shown)}{', ...' if len(known) > 20 else ''})" if known else " (none are known yet)"
        super().__init__(f"unknown family {name!r}{hint}")
        self.family = name


class NotFound(ShoptagError):
    """A named thing does not exist: a product id, a data folder, a checkpoint."""


class Conflict(ShoptagError):
    """The current state does not allow it yet: no model trained, a model trained for other encoders."""


class BackendUnavailable(ShoptagError):
    """A service shoptag depends on cannot be reached or refuses us (Elasticsearch down, bad credentials)."""


class BackendRefused(BackendUnavailable):
    """A backend answered, but with an error for this request (overloaded after retries, a missing index, an
    unsupported server); the message names the backend and its answer."""


class Corrupt(ShoptagError):
    """Data shoptag wrote earlier cannot be read back (a damaged index or model file)."""


@dataclass(frozen=True)
class Outcome:
    """What an error becomes: the CLI's exit code and the service's HTTP status."""

    exit_code: int
    http_status: int


# The one table (docs/DESIGN.md shows it); the most specific class of an error that is listed decides.
OUTCOMES: dict[type[ShoptagError], Outcome] = {
    BadInput: Outcome(2, 422),
    NotFound: Outcome(4, 404),
    Conflict: Outcome(5, 409),
    BackendUnavailable: Outcome(6, 503),
    BackendRefused: Outcome(6, 502),
    Corrupt: Outcome(7, 500),
    ShoptagError: Outcome(1, 500),
}


def outcome(error: ShoptagError) -> Outcome:
    """The table row of `error`: its own class's, else its nearest listed ancestor's (`ShoptagError` at last)."""
    return next(OUTCOMES[cls] for cls in type(error).__mro__ if cls in OUTCOMES)
