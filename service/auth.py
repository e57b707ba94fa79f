"""Optional API-key auth: header `X-API-Key`, or the key the review page's login form put in a cookie;
compared in constant time."""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from shoptag.core.errors import BadInput
from shoptag.core.settings import ServiceSettings

KEY_COOKIE = "shoptag_key"  # set by the review page's login form: HttpOnly, SameSite=Strict

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="Needed by write endpoints when "
                              "the service is configured with `service.api_key`.")


def key_is_valid(request: Request, given: str | None) -> bool:
    """True when no key is configured or `given` is the key."""
    expected = request.app.state.settings.service.api_key
    if expected is None:
        return True
    return given is not None and hmac.compare_digest(given.encode(), expected.get_secret_value().encode())


def require_api_key(request: Request, given: str | None = Security(api_key_header)) -> None:
    """401 without a key, 403 with a wrong one; open when no key is configured (loopback development)."""
    given = given if given is not None else request.cookies.get(KEY_COOKIE)
    if request.app.state.settings.service.api_key is None:
        return
    if given is None:
        raise HTTPException(401, "this endpoint needs an API key in the X-API-Key header",
                            headers={"WWW-Authenticate": "ApiKey"})
    if not key_is_valid(request, given):
        raise HTTPException(403, "wrong API key")


def check_exposure(host: str, settings: ServiceSettings, *, insecure: bool) -> None:
    """Refuse to open the write endpoints beyond this machine without an API key, unless told `insecure`."""
    if settings.api_key is not None or insecure or _loopback(host):
        return
    raise BadInput(f"refusing to serve on {host} without an API key: set service.api_key "
                   "(SHOPTAG_SERVICE__API_KEY) or pass --insecure")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False
