"""How CPF writes values: ids as strings, MAC addresses, IP addresses (reading and normalising
what a backend gives into what RAS accepts)."""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Any, Callable, Literal

from cpfmap.errors import BackendError

_MAC = re.compile(r"^(?:[0-9a-f]{2}([:-]?)[0-9a-f]{2}(\1[0-9a-f]{2}){4}|[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4})$", re.I)


def string_id(value: Any) -> str:
    """An id as RAS wants it, a string: 101 and 101.0 give "101", true gives "true".
    Example: `{{ 101.0 | string_id }}` -> `"101"`"""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


MAC_NOTATIONS = "aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff, aabb.ccdd.eeff or aabbccddeeff (any case)"


IP_NOTATIONS = "IPv4 or IPv6, optionally with /prefix or %zone"


def normal_mac(value: Any) -> str | None:
    """Any of MAC_NOTATIONS -> 00:15:5d:8a:3c:ff; None if not a MAC."""
    return _mac_of(str(value).strip())


@functools.lru_cache(maxsize=16384)   # the same few thousand addresses at every poll sweep
def _mac_of(text: str) -> str | None:
    if not _MAC.match(text):
        return None
    digits = re.sub(r"[^0-9a-fA-F]", "", text).lower()
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2))


def useful_ip(value: Any) -> str | None:
    """The address as text, or None for noise RAS must not see (loopback, link-local, unspecified)
    and for text that is not an address (read_ip says which)."""
    try:
        return read_ip(value)
    except BackendError:
        return None


def read_mac(value: Any, where: str = "macs()") -> str:
    mac = normal_mac(value)
    if mac is None:
        raise BackendError(f"{where}: cannot read {value!r} as a MAC address (it takes {MAC_NOTATIONS})")
    return mac


def read_ip(value: Any, where: str = "ips()") -> str | None:
    """The address of `addr`, `addr/prefix` or `addr%zone` as text; None for loopback, link-local
    and unspecified addresses, which RAS must not see; BackendError for text that is no address."""
    found = _ip_of(value) if isinstance(value, str) else False
    if found is False:
        raise BackendError(f"{where}: cannot read {value!r} as an IP address (it takes {IP_NOTATIONS})")
    return found


@functools.lru_cache(maxsize=16384)   # the same few thousand addresses at every poll sweep
def _ip_of(value: str) -> str | None | Literal[False]:
    """The address as text, None for loopback, link-local and unspecified ones, False for no address."""
    try:
        addr = ipaddress.ip_address(value.strip().split("%")[0].split("/")[0])
    except ValueError:
        return False
    if addr.is_loopback or addr.is_link_local or addr.is_unspecified:
        return None
    return str(addr)


def read_all(items: list, read: Callable[[Any], str | None]) -> list:
    """Every value read (null and empty items are absent ones), in order, without repeats."""
    return unique([v for v in (read(i) for i in items if i not in (None, "")) if v])


def unique(items: list) -> list:
    out: list = []
    for item in items:
        if item not in out:
            out.append(item)
    return out

