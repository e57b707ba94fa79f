"""Optional API-key auth for the write endpoints: header `X-API-Key`, compared in constant time."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="Needed by write endpoints when "
                              "the service is configured with `service.api_key`.")


def require_api_key(request: Request, given: str | None = Security(api_key_header)) -> None:
    """401 without a key, 403 with a wrong one; open when no key is configured (loopback development)."""
    expected = request.app.state.settings.service.api_key
    if expected is None:
        return
    if given is None:
        raise HTTPException(401, "this endpoint needs an API key in the X-API-Key header",
                            headers={"WWW-Authenticate": "ApiKey"})
    if not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise HTTPException(403, "wrong API key")
