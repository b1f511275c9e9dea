"""Where tenants may point the hub: URLs set through the API (a subscription's webhook, a stored credential's
``*url`` setting) must not reach the hub's own network (server-side request forgery: the cloud metadata service at
169.254.169.254, Redis on 127.0.0.1, a database on 10.0.0.5).

``tenant_urls.allow_private`` in hub.yaml: ``null`` (the default) refuses loopback, private, link-local, multicast
and reserved addresses in production mode (``HUB_MODE=production``) and allows them in development, where every
test server is on 127.0.0.1; ``tenant_urls.allow`` lists hosts or networks always allowed (an ERP on the VPN).
Operators' own URLs in hub.yaml are trusted and never checked.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetRefused(ValueError):
    """The URL's host is, or resolves to, an address tenants may not reach; the message says which."""


class TenantUrlPolicy:
    def __init__(self, allow_private: bool, allow: list[str] | tuple[str, ...] = ()) -> None:
        self.allow_private = allow_private
        self.allowed_hosts = {entry.lower() for entry in allow if not _network(entry)}
        self.allowed_networks = [network for entry in allow if (network := _network(entry)) is not None]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TenantUrlPolicy:
        settings = config.get("tenant_urls") or {}
        allow_private = settings.get("allow_private")
        if allow_private is None:
            allow_private = config.get("mode") != "production"
        return cls(bool(allow_private), settings.get("allow") or [])

    def check(self, url: str) -> None:
        """Raise :class:`TargetRefused` unless ``url`` is http(s) to a host tenants may reach."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TargetRefused("must be an http:// or https:// URL with a host")
        if self.allow_private:
            return
        host = parts.hostname.lower().rstrip(".")
        if host in self.allowed_hosts:
            return
        for address in _addresses(host, parts.port or (443 if parts.scheme == "https" else 80)):
            if any(address in network for network in self.allowed_networks):
                continue
            if not _public(address):
                where = "is" if host == str(address) else f"resolves to {address}, which is"
                raise TargetRefused(
                    f"{host} {where} not a public address (tenant_urls.allow lists the hosts and networks tenants may reach)"
                )


def url_settings(settings: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """The (field path, URL) pairs among ``settings``: every string under a key named ``url``, ``*_url`` or
    ``host``, nested dicts included (a subscription's ``handler.url``, a credential's ``base_url``)."""
    found: list[tuple[str, str]] = []
    for key, value in settings.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            found += url_settings(value, f"{path}.")
        elif isinstance(value, str) and (key == "url" or key.endswith("_url") or key.endswith("Url")):
            found.append((path, value))
        elif isinstance(value, str) and key == "host":
            found.append((path, f"http://{value}"))
    return found


def _network(entry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return None


def _addresses(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise TargetRefused(f"{host} does not resolve ({error.strerror or error})") from None
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in found]


def _public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return address.is_global and not address.is_multicast
