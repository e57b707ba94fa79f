"""An `Elasticsearch` client built from `ESSettings`, and one clear error when the cluster cannot be reached.

Credentials travel only as client options (API key or basic auth headers), never inside the URL the client,
its logs or our errors show: a ``user:password@`` in the configured URL is moved into basic auth.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from elasticsearch import AuthenticationException, ConnectionTimeout, Elasticsearch
from elasticsearch import ConnectionError as ESConnectionError

from shoptag.core.settings import ESSettings

from .server import PinnedTransport, Server, UnsupportedServer, probe


class BackendUnavailable(RuntimeError):
    """The search cluster cannot be reached (or refuses our credentials); the message names it without secrets."""


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
        raise ValueError("no Elasticsearch URL is set (SHOPTAG_ES__URL)")
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
            raise BackendUnavailable(f"Elasticsearch at {public_url(url)}: {error}") from None


@contextmanager
def unavailable_as_error(url: str) -> Iterator[None]:
    """Turn the client's connection and authentication failures into `BackendUnavailable`."""
    try:
        yield
    except (ESConnectionError, ConnectionTimeout) as error:
        raise BackendUnavailable(f"Elasticsearch at {public_url(url)} is unreachable ({type(error).__name__})") from error
    except AuthenticationException as error:
        raise BackendUnavailable(f"Elasticsearch at {public_url(url)} rejected the credentials") from error
