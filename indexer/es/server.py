"""What the cluster at the other end is, read once at connect, and the REST compatibility version we speak to it.

The official client stamps every request with ``compatible-with=<client major>``; an 8.x server refuses
``compatible-with=9`` (400 ``media_type_header_exception``), so the 9.x client cannot talk to it as shipped.
Rather than tie the installed client to one server major, `PinnedTransport` rewrites that version to the
server's own major on every request (every server accepts its own major): one install of either client major
works with 8.15+ and 9.x clusters, and a cluster upgraded under a running shop keeps working after reconnect.
The version probe itself goes out as plain ``application/json``, which every version (and OpenSearch) accepts,
so that an unsupported server is named instead of failing on a header.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from elastic_transport import HttpHeaders, Transport
from elasticsearch import ApiError, Elasticsearch, UnsupportedProductError

SUPPORTED = "Elasticsearch 8.15 or later (8.x) or 9.x"
OLDEST = (8, 15)
NEWEST_MAJOR = 9
RRF_LICENCES = {"enterprise", "trial"}
_MEDIA = re.compile(r"application/(?:vnd\.elasticsearch\+)?(json|x-ndjson)(?:\s*;\s*compatible-with=\d+)?")


class UnsupportedServer(RuntimeError):
    """The URL answers, but not as a supported Elasticsearch; the message names what it is and what is supported."""


class PinnedTransport(Transport):
    """A transport that sends ``compatible-with=<server major>`` (or plain JSON before the server is known)."""

    compatible_with: int | None = None

    def perform_request(self, method: str, target: str, **kwargs: Any) -> Any:  # type: ignore[override]
        headers = kwargs.get("headers")
        if isinstance(headers, (HttpHeaders, dict)):
            pinned = HttpHeaders(headers)
            for name in ("accept", "content-type"):
                if name in pinned:
                    pinned[name] = _MEDIA.sub(self._media, pinned[name])
            kwargs["headers"] = pinned
        return super().perform_request(method, target, **kwargs)

    def _media(self, match: re.Match[str]) -> str:
        kind = match.group(1)
        if self.compatible_with is None:
            return f"application/{kind}"
        return f"application/vnd.elasticsearch+{kind}; compatible-with={self.compatible_with}"


@dataclass(frozen=True)
class Server:
    """A supported cluster's version and the features that depend on it."""

    version: tuple[int, int, int]
    serverless: bool = False
    licence: str | None = None  # `GET _license` type; None where that API does not answer

    @property
    def rrf(self) -> bool | None:
        """Whether the licence has the `rrf` retriever (enterprise or trial); None when the licence is unknown,
        so that only the cluster's answer to a first hybrid search can tell."""
        if self.serverless:
            return True
        return None if self.licence is None else self.licence in RRF_LICENCES

    @property
    def major(self) -> int:
        return self.version[0]

    def at_least(self, major: int, minor: int) -> bool:
        return self.serverless or self.version[:2] >= (major, minor)

    @property
    def bbq(self) -> bool:
        """`bbq_hnsw` / `bbq_flat` dense_vector index options (8.16)."""
        return self.at_least(8, 16)

    @property
    def linear_retriever(self) -> bool:
        """The `linear` retriever (8.18)."""
        return self.at_least(8, 18)

    @property
    def excludes_vectors(self) -> bool:
        """New indices leave dense vectors out of `_source` unless asked (9.2); `exclude_vectors` exists (9.1)."""
        return self.at_least(9, 2)

    @property
    def base64_vectors(self) -> bool:
        """dense_vector values may be sent as base64 of big-endian float32 (9.3)."""
        return self.at_least(9, 3)

    def __str__(self) -> str:
        return "Elasticsearch serverless" if self.serverless else "Elasticsearch " + ".".join(map(str, self.version))


def identify(info: dict[str, Any], product_header: bool = True) -> Server:
    """The `Server` behind an `info()` answer; `UnsupportedServer` for anything but Elasticsearch 8.15+/9.x."""
    version = info.get("version") or {}
    number = str(version.get("number", ""))
    distribution = str(version.get("distribution", "elasticsearch")).lower()
    if distribution == "opensearch":
        raise UnsupportedServer(f"the server is OpenSearch {number}; shoptag supports {SUPPORTED}")
    if distribution != "elasticsearch" or not product_header:  # no X-Elastic-Product: pre-7.14 or another product
        raise UnsupportedServer(f"the server is not a supported Elasticsearch ({distribution} {number or '?'}); "
                                f"shoptag supports {SUPPORTED}")
    if version.get("build_flavor") == "serverless":
        return Server((NEWEST_MAJOR, 0, 0), serverless=True)
    parts = re.match(r"(\d+)\.(\d+)\.(\d+)", number)
    if parts is None:
        raise UnsupportedServer(f"the server reports no Elasticsearch version ({number!r}); shoptag supports {SUPPORTED}")
    found = (int(parts[1]), int(parts[2]), int(parts[3]))
    if found[:2] < OLDEST or found[0] > NEWEST_MAJOR:
        raise UnsupportedServer(f"the server is Elasticsearch {number}; shoptag supports {SUPPORTED}")
    return Server(found)


def probe(client: Elasticsearch) -> Server:
    """Ask the server what it is (plain JSON), then pin the client's compatibility version to its major."""
    transport = client.transport
    if isinstance(transport, PinnedTransport):
        transport.compatible_with = None
    try:
        info = client.info().body
        product = True
    except UnsupportedProductError as error:  # 2xx without X-Elastic-Product: OpenSearch or a pre-7.14 server
        info, product = (error.body if isinstance(error.body, dict) else {}), False
    except ApiError as error:
        if error.status_code in (401, 403, 429) or error.status_code >= 500:
            raise  # credentials, privileges, load: said as such by the caller
        raise UnsupportedServer(f"the server answered {error.status_code} to a version check; "
                                f"shoptag supports {SUPPORTED}") from error
    server = identify(info, product)
    if isinstance(transport, PinnedTransport):
        transport.compatible_with = server.major
    if server.serverless:
        return server
    try:
        licence = str(client.license.get()["license"]["type"]).lower()
    except (ApiError, KeyError, TypeError):  # no licence API (an emulator, a restricted user): unknown
        return server
    return dataclasses.replace(server, licence=licence)
