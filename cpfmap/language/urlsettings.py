"""Settings that build the backend's URL are checked for what they mean there, before any request.

A `host` of `evil.example/x`, `h#`, `h?x` or `user@h` would silently move the API root (and
the credentials sent to it); CR/LF would reach the request line. Where a setting lands is
found by rendering connection.base_url (and connection.hosts) with that setting replaced by a
probe: in the host part its value must be a host (name, IPv4, [IPv6], optional :port); as the
start of the URL it must be an http(s) URL with no user, query or fragment; in the path it
must hold no `?`, `#` or `\\`. No setting may hold a control character or whitespace there.
Each failure is a ConfigError naming the setting.
"""
from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from cpfmap.errors import ConfigError

PROBE = "cpfmapsettingprobe"
HOST = re.compile(r"^(\[[0-9A-Fa-f:.%A-Za-z]+\]|[A-Za-z0-9._~%-]+)(:[0-9]{1,5})?$")
UNSAFE = re.compile(r"[\x00-\x20\x7f]")


def check(conn: Any, settings: Mapping[str, Any], given: frozenset | None = None) -> None:
    """ConfigError naming the first setting (of `given`, default all) that does not fit its place in the URL."""
    for name, value in settings.items():
        if isinstance(value, str) and value and (given is None or name in given):
            place = _place(conn, settings, name)
            if place is not None:
                _check_value(name, value, place, conn, settings)
    if given is None:
        for url in _urls(conn, settings):
            _check_url("connection.base_url", url, own_query=True)


def _urls(conn: Any, settings: Mapping[str, Any]) -> list[str]:
    base = {"settings": dict(settings)}
    if conn.hosts is None:
        return [str(conn.base_url.render(base))]
    return [str(conn.base_url.render(dict(base, host=host))) for host in _hosts(conn, settings)]


def _place(conn: Any, settings: Mapping[str, Any], name: str) -> str | None:
    """Where the setting lands: "hosts" (the entries of connection.hosts), "url", "host", "path" or None."""
    probed = {**settings, name: PROBE}
    try:
        if conn.hosts is not None and PROBE in str(conn.hosts.eval({"settings": probed})):
            return "hosts"
        urls = _urls(conn, probed)
    except Exception:  # noqa: BLE001 - a template that cannot take the probe: judged by the real render
        return None
    return next(filter(None, map(_where, urls)), None)


def _where(url: str) -> str | None:
    if url.startswith(PROBE):
        return "url"
    if PROBE in urllib.parse.urlsplit(url).netloc:
        return "host"
    return "path" if PROBE in url else None


def _check_value(name: str, value: str, place: str, conn: Any, settings: Mapping[str, Any]) -> None:
    if place == "hosts":   # each entry of connection.hosts takes `host`'s place in base_url
        base = {"settings": dict(settings), "host": PROBE}
        entry_place = _where(str(conn.base_url.render(base)))
        for host in _hosts(conn, settings):
            if entry_place is not None:
                _check_one(f"setting `{name}` (the host `{host}`)", host, entry_place)
        return
    _check_one(f"setting `{name}`", value, place)


def _check_one(shown: str, value: str, place: str) -> None:
    if UNSAFE.search(value):
        raise ConfigError(f"{shown} holds a space or control character (CR, LF...); it builds the backend URL")
    if place == "url":
        _check_url(shown, value)
    elif place == "path" and re.search(r"[?#\\]", value):
        raise ConfigError(f"{shown} holds `?`, `#` or `\\`, which would change the backend URL; it is part of its path")
    elif place == "host" and not HOST.match(value):
        raise ConfigError(f"{shown} must be a host name or address (optionally :port), without a path, `/`, `?`, "
                          f"`#`, `@` or spaces: it is the host of the backend URL")


def _hosts(conn: Any, settings: Mapping[str, Any]) -> list[str]:
    hosts = conn.hosts.eval({"settings": dict(settings)})
    hosts = [hosts] if isinstance(hosts, str) else hosts if isinstance(hosts, list) else []
    return [str(h).strip() for h in hosts if str(h).strip()]


def _check_url(shown: str, url: str, own_query: bool = False) -> None:
    """`own_query`: the mapping's base URL as rendered, which may carry a query of its own."""
    parts = urllib.parse.urlsplit(url)
    problem = None
    if UNSAFE.search(url):
        problem = "holds a space or control character"
    elif parts.scheme not in ("http", "https") or not parts.hostname:
        problem = "is not an http:// or https:// URL with a host"
    elif "@" in parts.netloc:
        problem = "names a user (`@`): credentials go in their own settings"
    elif not own_query and (parts.query or parts.fragment or "?" in url or "#" in url):
        problem = "holds a query or fragment (`?`, `#`)"
    else:
        try:
            _ = parts.port   # urllib checks the number only when asked
        except ValueError:
            problem = f"has a port that is not a number ({parts.netloc})"
    if problem:
        raise ConfigError(f"{shown} {problem}: it builds the backend URL")
