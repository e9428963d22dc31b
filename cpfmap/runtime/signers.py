"""Signing requests as they go out (auth types aws_sigv4 and python): the session asks its
signer, last, for the headers to add to a request that is otherwise complete. Everything a
signer makes is a secret, and so are the keys it signs with."""
from __future__ import annotations

import datetime
from typing import Any, Callable

from cpfmap.errors import BackendError
from cpfmap.http.signing import AwsCredentials, sigv4_headers
from cpfmap.language import model as m


def signer_for(mapping: m.CompiledMapping, scheme: m.AuthScheme, base: dict, secret: Callable[[Any], str]) -> Any:
    """What signs each request as it goes out: aws_sigv4, a pack's own function, or nothing."""
    if scheme.type == "aws_sigv4":
        return Signer(scheme, base, secret)
    if scheme.type == "python":
        return PackSigner(mapping.python.signers[scheme.sign], base["settings"], secret)
    return None


class PackSigner:
    """auth type python: the pack's function gets the request as it will go out (method, url,
    headers, body, time: Unix seconds) and the settings, and gives the headers to add, which are
    secrets. Whatever it raises is a backend error, never a traceback."""

    def __init__(self, func: Callable, settings: dict, secret: Callable[[Any], str]) -> None:
        self.func, self.settings, self.secret = func, settings, secret

    def sign(self, method: str, url: str, headers: list, body: bytes | None, now: float) -> list:
        request = {"method": method, "url": url, "headers": dict(headers), "body": body, "time": now}
        try:
            added = self.func(request, dict(self.settings))
            pairs = [(str(k), str(v)) for k, v in dict(added).items()]
        except Exception as exc:   # the pack's code
            raise BackendError(f"the pack's signing function failed: {type(exc).__name__}: {exc}") from None
        return [(k, self.secret(v)) for k, v in pairs]


class Signer:
    """auth type aws_sigv4: every request signed with AWS Signature Version 4 as it goes out.
    The secret key, the session token and each signature are secrets."""

    def __init__(self, scheme: m.AuthScheme, base: dict, secret: Callable[[Any], str]) -> None:
        render = lambda t: "" if t is None else str(t.render(base) or "")  # noqa: E731
        self.creds = AwsCredentials(render(scheme.access_key), render(scheme.secret_key), render(scheme.region),
                                    render(scheme.service), render(scheme.session_token))
        self.secret = secret
        for value in (self.creds.secret_key, self.creds.session_token):
            if value:
                secret(value)

    def sign(self, method: str, url: str, headers: list, body: bytes | None, now: float) -> list:
        stamp = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        added = sigv4_headers(method, url, headers, body, self.creds, stamp)
        signature = dict(added)["Authorization"].rsplit("Signature=", 1)[1]
        self.secret(signature)
        return added
