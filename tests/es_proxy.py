"""A local HTTP proxy in front of noida-db that answers as a given server version and licence does, where
noida-db (which reports 8.15.3 and accepts anything) does not. Written from the Elasticsearch documentation:

- `info()` reports the persona's version (or OpenSearch's answer, without `X-Elastic-Product`);
- REST compatibility headers are checked as the server does: `compatible-with=N` must be the server's major or
  the one before, and Accept and Content-Type must agree; otherwise 400 `media_type_header_exception`;
- `GET _license` answers the persona's licence type; the `rrf` and `linear` retrievers need enterprise/trial,
  otherwise 403 `security_exception` "current license is non-compliant for [...]";
- 9.2+ leaves `*_vector` fields out of returned `_source` unless `exclude_vectors: false` is asked for;
- 9.3+ takes vectors as base64 of big-endian float32 in bulk bodies (decoded here for noida-db);
- the first `reject_bulk` bulk requests and `reject_search` searches are answered 429 (a rejected execution).

Every request is recorded (method, path, headers, body) for the tests to inspect.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import numpy as np

COMPAT = re.compile(r"compatible-with=(\d+)")
LICENSED = {"rrf": "Reciprocal Rank Fusion (RRF)", "linear": "linear retriever"}


@dataclass
class Persona:
    version: str = "8.17.0"
    distribution: str = "elasticsearch"  # or "opensearch"
    licence: str = "enterprise"  # "basic" (or any but enterprise/trial) refuses the rrf and linear retrievers
    licence_api: bool = True  # False: `GET _license` is not answered (the licence is unknown to a client)
    reject_bulk: int = 0
    reject_search: int = 0
    reject_all: bool = False  # every request after the version check is answered 429
    password: str | None = None  # when set, requests without this basic-auth password get 401
    # searches without `track_total_hits: true` count at most this many hits (10,000 on a real cluster)
    total_cap: int = 10_000

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def minor(self) -> tuple[int, int]:
        major, minor = self.version.split(".")[:2]
        return int(major), int(minor)


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class ESProxy:
    """Serve `persona` on a loopback port, forwarding what it does not answer itself to `upstream`."""

    upstream: str
    persona: Persona = field(default_factory=Persona)
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                proxy.received.append(Received(self.command, self.path, headers, body))
                status, payload, extra = proxy.answer(self.command, self.path, headers, body)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for key, value in extra.items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._client = httpx.Client(base_url=self.upstream, timeout=30)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()

    # ---- what the persona answers ---------------------------------------------------------------------------
    def answer(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, dict[str, str]]:
        persona = self.persona
        product = {} if persona.distribution == "opensearch" else {"x-elastic-product": "Elasticsearch"}
        refused = self._media_type_error(headers, bool(body))
        if refused is not None:
            return 400, refused, product
        path = urlsplit(target).path
        if persona.password is not None and headers.get("authorization") != _basic("shop", persona.password):
            cause = {"type": "security_exception", "reason": f"unable to authenticate user [shop] for REST request [{path}]",
                     "header": {"WWW-Authenticate": ['Basic realm="security" charset="UTF-8"']}}
            return 401, {"error": {"root_cause": [cause], **cause}, "status": 401}, {"www-authenticate": 'Basic realm="security"'}
        if persona.reject_all and path != "/":
            return 429, _rejected(), product
        if method == "GET" and path == "/":
            return 200, self._info(), product
        if method == "GET" and path == "/_license" and persona.licence_api:
            return 200, {"license": {"status": "active", "uid": "proxy", "type": persona.licence}}, product
        if path.endswith("/_bulk") and persona.reject_bulk > 0:
            persona.reject_bulk -= 1
            return 429, _rejected(), product
        if path.endswith("/_search"):
            if persona.reject_search > 0:
                persona.reject_search -= 1
                return 429, _rejected(), product
            request = json.loads(body or b"{}")
            feature = next((LICENSED[name] for name in LICENSED if name in request.get("retriever", {})), None)
            if feature and persona.licence not in ("enterprise", "trial"):
                return 403, _licence_error(feature), product
        if path.endswith("/_bulk") and persona.minor >= (9, 3):
            body = _decode_vectors(body)
        upstream = self._client.request(method, target, content=body or None, headers=_plain(headers))
        payload: Any = upstream.content
        if persona.minor >= (9, 2) and upstream.status_code == 200 and method in ("GET", "POST"):
            payload = self._without_vectors(path, target, body, upstream)
        if path.endswith("/_search") and upstream.status_code == 200:
            payload = self._capped_total(body, payload)
        return upstream.status_code, payload, product

    def _info(self) -> dict[str, Any]:
        persona = self.persona
        if persona.distribution == "opensearch":
            return {"name": "node", "cluster_name": "opensearch", "version": {
                "distribution": "opensearch", "number": persona.version, "build_type": "tar",
                "minimum_wire_compatibility_version": "7.10.0"}, "tagline": "The OpenSearch Project: https://opensearch.org/"}
        return {"name": "node", "cluster_name": "proxy", "cluster_uuid": "proxy", "tagline": "You Know, for Search",
                "version": {"number": persona.version, "build_flavor": "default", "build_type": "docker",
                            "build_snapshot": False, "lucene_version": "9.12.0",
                            "minimum_wire_compatibility_version": "7.17.0",
                            "minimum_index_compatibility_version": "7.0.0"}}

    def _media_type_error(self, headers: dict[str, str], has_body: bool) -> dict[str, Any] | None:
        """The server's check of `compatible-with` (RestCompatibleVersionHelper)."""
        major = self.persona.major
        allowed = {major, major - 1} if major >= 8 else {major}
        accept = COMPAT.search(headers.get("accept", ""))
        content = COMPAT.search(headers.get("content-type", "")) if has_body else None
        reason = None
        for name, found in (("Accept", accept), ("Content-Type", content)):
            if found and int(found[1]) not in allowed:
                versions = " or ".join(str(v) for v in sorted(allowed, reverse=True))
                reason = (f"{name} version must be either version {versions}, but found {found[1]}. "
                          f"{name}={headers.get(name.lower())}")
                break
        mismatch = (has_body and bool(accept) != bool(content)) or (accept and content and accept[1] != content[1])
        if reason is None and mismatch:
            reason = ("A compatible version is required on both Content-Type and Accept headers if either one has "
                      "requested a compatible version and the compatible versions must match. "
                      f"Accept={headers.get('accept')}, Content-Type={headers.get('content-type')}")
        if reason is None:
            return None
        cause = {"type": "media_type_header_exception", "reason": "Invalid media-type value on headers [Accept, Content-Type]"}
        return {"error": {"root_cause": [cause], **cause, "caused_by": {"type": "status_exception", "reason": reason}},
                "status": 400}

    def _capped_total(self, body: bytes, payload: bytes) -> bytes:
        """`hits.total` as a cluster counts it by default: up to the cap, then `relation: gte`."""
        request = json.loads(body or b"{}")
        answer = json.loads(payload)
        total = answer.get("hits", {}).get("total")
        if request.get("track_total_hits") is not True and isinstance(total, dict) and total["value"] > self.persona.total_cap:
            answer["hits"]["total"] = {"value": self.persona.total_cap, "relation": "gte"}
        return json.dumps(answer).encode()

    def _without_vectors(self, path: str, target: str, body: bytes, upstream: httpx.Response) -> bytes:
        """9.2+: dense vectors are left out of `_source` unless the request says `exclude_vectors: false`."""
        query = parse_qs(urlsplit(target).query)
        request = json.loads(body) if body else {}
        source = request.get("_source") if isinstance(request, dict) else None
        if query.get("_source_exclude_vectors") == ["false"] or (isinstance(source, dict) and source.get("exclude_vectors") is False):
            return upstream.content
        answer = upstream.json()
        documents = answer.get("hits", {}).get("hits", []) + answer.get("docs", []) + ([answer] if "_source" in answer else [])
        for document in documents:
            for key in [k for k in document.get("_source", {}) if k.endswith("_vector")]:
                del document["_source"][key]
        return json.dumps(answer).encode()


def _decode_vectors(body: bytes) -> bytes:
    """Bulk lines with base64 `*_vector` values turned into the float arrays noida-db takes."""
    lines = []
    for line in body.decode().splitlines():
        document = json.loads(line) if line.strip() else None
        if isinstance(document, dict):
            for key, value in document.items():
                if key.endswith("_vector") and isinstance(value, str):
                    document[key] = np.frombuffer(base64.b64decode(value), dtype=">f4").astype(float).tolist()
            line = json.dumps(document)
        lines.append(line)
    return ("\n".join(lines) + "\n").encode()


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _plain(headers: dict[str, str]) -> dict[str, str]:
    """Headers for noida-db: plain JSON media types."""
    out = {}
    for key in ("accept", "content-type", "authorization"):
        if key in headers:
            out[key] = re.sub(r"vnd\.elasticsearch\+|\s*;\s*compatible-with=\d+", "", headers[key])
    return out


def _rejected() -> dict[str, Any]:
    cause = {"type": "es_rejected_execution_exception",
             "reason": "rejected execution of coordinating operation [coordinating_and_primary_bytes=0, "
                       "replica_bytes=0, all_bytes=0, coordinating_operation_bytes=1024, "
                       "max_coordinating_and_primary_bytes=512]"}
    return {"error": {"root_cause": [cause], **cause}, "status": 429}


def _licence_error(feature: str) -> dict[str, Any]:
    cause = {"type": "security_exception", "reason": f"current license is non-compliant for [{feature}]",
             "license.expired.feature": feature}
    return {"error": {"root_cause": [cause], **cause}, "status": 403}
