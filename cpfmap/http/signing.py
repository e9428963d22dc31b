"""Request signing: AWS Signature Version 4 (header form), standard library only.

Checked against AWS's published SigV4 test suite (tests/data/aws4_testsuite, run by
tests/test_signing.py). The signature covers the method, the path, the sorted query, the
headers present when it is made (Host from the URL) and a SHA-256 of the body; the caller signs
the request exactly as it will go out, last, so nothing changes it afterwards.
"""
from __future__ import annotations

import hashlib
import hmac
import posixpath
import urllib.parse
from dataclasses import dataclass
from typing import Iterable

ALGORITHM = "AWS4-HMAC-SHA256"
# Headers a client or proxy may add or change on the way: never signed.
UNSIGNED = frozenset({"authorization", "user-agent", "expect", "x-amzn-trace-id", "content-length",
                      "connection", "accept-encoding", "transfer-encoding"})


@dataclass(frozen=True)
class AwsCredentials:
    access_key: str
    secret_key: str
    region: str
    service: str
    session_token: str = ""


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def canonical_path(path: str) -> str:
    """Dot segments and repeated slashes removed, each segment percent-encoded (again: the AWS
    rule for every service but S3)."""
    normal = posixpath.normpath(path or "/")
    normal = "/" + normal.lstrip("/")
    if path.endswith("/") and normal != "/":
        normal += "/"
    return urllib.parse.quote(normal, safe="/~")


def canonical_query(query: str) -> str:
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    quoted = sorted((urllib.parse.quote(k, safe="-_.~"), urllib.parse.quote(v, safe="-_.~")) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in quoted)


def canonical_headers(headers: Iterable[tuple[str, str]]) -> tuple[str, str]:
    """(canonical header block, signed header names): names lower-cased and sorted, values with
    runs of whitespace folded, repeated names joined with commas in order."""
    merged: dict[str, list[str]] = {}
    for name, value in headers:
        lower = name.strip().lower()
        if lower not in UNSIGNED:
            merged.setdefault(lower, []).append(" ".join(str(value).split()))
    names = sorted(merged)
    return "".join(f"{n}:{','.join(merged[n])}\n" for n in names), ";".join(names)


def canonical_request(method: str, url: str, headers: Iterable[tuple[str, str]], body: bytes | None) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    block, signed = canonical_headers(headers)
    payload = hashlib.sha256(body or b"").hexdigest()
    return "\n".join([method, canonical_path(parts.path), canonical_query(parts.query), block, signed, payload]), signed


def string_to_sign(amz_date: str, scope: str, creq: str) -> str:
    return "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(creq.encode("utf-8")).hexdigest()])


def signing_key(secret: str, day: str, region: str, service: str) -> bytes:
    key = _hmac(("AWS4" + secret).encode("utf-8"), day)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    return key


def sigv4_headers(method: str, url: str, headers: Iterable[tuple[str, str]], body: bytes | None,
                  creds: AwsCredentials, amz_date: str) -> list[tuple[str, str]]:
    """The headers to add: X-Amz-Date, X-Amz-Security-Token (temporary credentials) and
    Authorization. `headers` must hold Host (the caller adds it from the URL if absent)."""
    added = [("X-Amz-Date", amz_date)] + ([("X-Amz-Security-Token", creds.session_token)] if creds.session_token else [])
    creq, signed = canonical_request(method, url, list(headers) + added, body)
    scope = f"{amz_date[:8]}/{creds.region}/{creds.service}/aws4_request"
    key = signing_key(creds.secret_key, amz_date[:8], creds.region, creds.service)
    signature = hmac.new(key, string_to_sign(amz_date, scope, creq).encode("utf-8"), hashlib.sha256).hexdigest()
    auth = f"{ALGORITHM} Credential={creds.access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
    return added + [("Authorization", auth)]


def host_of(url: str) -> str:
    """The Host header a client sends for url (default ports left out)."""
    parts = urllib.parse.urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return host if parts.port in (None, default) else f"{host}:{parts.port}"
