"""An `Elasticsearch` client built from `ESSettings`, and one clear error when the cluster cannot be reached.

Credentials travel only as client options (API key or basic auth headers), never inside the URL the client,
its logs or our errors show: a ``user:password@`` in the configured URL is moved into basic auth.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from elastic_transport import TlsError
from elasticsearch import ApiError, AuthenticationException, AuthorizationException, ConnectionTimeout, Elasticsearch
from elasticsearch import ConnectionError as ESConnectionError

from shoptag.core.errors import BackendRefused, BackendUnavailable, BadInput
from shoptag.core.settings import ESSettings

from .server import PinnedTransport, Server, UnsupportedServer, probe


def public_url(url: str) -> str:
    """`url` without any ``user:password@`` part."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def make_client(settings: ESSettings, **transport: Any) -> Elasticsearch:
    """A client for `settings.url` with its auth, TLS, timeout and retry options; `transport` adds client
    options (e.g. a `node_class`). Connects lazily: see `connect` for a checked one."""
    if not settings.url:
        raise BadInput("no Elasticsearch URL is set (SHOPTAG_ES__URL)")
    parts = urlsplit(settings.url)
    options: dict[str, Any] = {
        "request_timeout": settings.request_timeout,
        "retry_on_timeout": True,
        "max_retries": settings.max_retries,
    }
    if settings.api_key is not None:
        options["api_key"] = settings.api_key.get_secret_value()
    elif settings.username and settings.password is not None:
        options["basic_auth"] = (settings.username, settings.password.get_secret_value())
    elif parts.username:
        options["basic_auth"] = (unquote(parts.username), unquote(parts.password or ""))
    if parts.scheme == "https":
        options["verify_certs"] = settings.verify_certs
        if settings.ca_certs is not None:
            options["ca_certs"] = str(settings.ca_certs)
    return Elasticsearch(public_url(settings.url), transport_class=PinnedTransport, **options, **transport)


def connect(settings: ESSettings) -> Elasticsearch:
    """A client pinned to the server's version (see `identify_server`)."""
    client = make_client(settings)
    identify_server(client, settings.url or "")
    return client


def identify_server(client: Elasticsearch, url: str) -> Server:
    """The server's version (one request), pinning the client to it; `BackendUnavailable` if it cannot be
    reached or is not a supported Elasticsearch."""
    with unavailable_as_error(url):
        try:
            return probe(client)
        except UnsupportedServer as error:
            raise BackendRefused(f"Elasticsearch at {public_url(url)}: {error}") from None


@contextmanager
def unavailable_as_error(url: str) -> Iterator[None]:
    """Turn what the client raises when the cluster cannot serve us into one line naming the cluster (never its
    credentials): `BackendUnavailable` when it cannot be reached or refuses the credentials, `BackendRefused`
    when it answers with an error (overloaded after the retries, a missing index, anything else)."""
    where = f"Elasticsearch at {public_url(url)}"
    try:
        yield
    except TlsError as error:
        reason = re.search(r"\[SSL[^\]]*\] ([^(]+)", str(error))
        raise BackendUnavailable(f"{where}: the TLS connection failed ({reason[1].strip() if reason else 'handshake'}); "
                                 "check es.ca_certs and es.verify_certs, and that the URL's scheme is the server's") from error
    except (ESConnectionError, ConnectionTimeout) as error:
        raise BackendUnavailable(f"{where} is unreachable ({type(error).__name__})") from error
    except AuthenticationException as error:
        raise BackendUnavailable(f"{where} rejected the credentials (401)") from error
    except AuthorizationException as error:
        raise BackendUnavailable(f"{where}: the credentials lack a privilege for this request (403 "
                                 f"{_error_reason(error)})") from error
    except ApiError as error:
        if error.status_code == 429:
            raise BackendRefused(f"{where} is overloaded (429 {_error_reason(error)}) after the client's retries; "
                                 "retry later") from error
        if error.status_code == 404 and error.message == "index_not_found_exception":
            raise BackendRefused(f"{where} has no such index ({_error_reason(error)}); run `shoptag reindex`") from error
        raise BackendRefused(f"{where} refused a request ({error.status_code} {_error_reason(error)})") from error


def _error_reason(error: ApiError) -> str:
    """`type: reason` of an Elasticsearch error body, on one line."""
    body = error.body if isinstance(error.body, dict) else {}
    cause = body.get("error") if isinstance(body.get("error"), dict) else {}
    kind = cause.get("type") or (error.message if error.message not in (None, "None", "") else "no details")
    return _first_line(f"{kind}: {cause['reason']}" if cause.get("reason") else kind)


def _first_line(value: object) -> str:
    return str(value).strip().splitlines()[0][:300] if str(value).strip() else type(value).__name__
