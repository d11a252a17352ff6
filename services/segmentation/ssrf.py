"""The SSRF guard of webhook deliveries: which URLs a seller may register, and where a delivery may connect.

A webhook URL is chosen by a tenant and called from inside our network, so it could be aimed at internal
services or a cloud metadata endpoint. Three checks stop that:

- at registration (`check_url`): https only, no credentials in the URL, and every address the host
  resolves to must be public (`blocked_reason`);
- at connection time (`GuardedBackend`): the host is resolved once more, every address is checked again,
  and the socket is connected to a checked address itself, never to a name resolved a second time (a DNS
  answer that changes between the check and the connection, "DNS rebinding", cannot slip through). TLS
  still verifies the certificate against the URL's host name and sends it as SNI, and the Host header is
  the URL's: only the address the TCP connection goes to is pinned;
- redirects are never followed (the dispatcher's client), so a public URL cannot bounce to a private one.

Blocked: loopback, RFC 1918 private, link-local, cloud metadata addresses, CGNAT (100.64.0.0/10),
unspecified, multicast, reserved and documentation ranges, IPv4-mapped and IPv4-compatible IPv6 (the
embedded IPv4 address would be reached), NAT64, 6to4 and Teredo (likewise), unique-local (fc00::/7) and
site-local IPv6, and anything else Python does not consider globally routable.

`allow_private` (``SEGMENTATION_WEBHOOK_ALLOW_PRIVATE``, development and tests only) also accepts http,
loopback, private, link-local, CGNAT and unique-local addresses, so that a receiver on 127.0.0.1 works.
Cloud metadata, unspecified, multicast and the translated IPv6 forms stay blocked even then.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> the addresses it resolves to (injectable for tests)
Resolver = Callable[[str, int], list[IPAddress]]


def _nets(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# Checked in this order: the first match names the reason.
_METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.123",  # AWS time sync
        "100.100.100.200",  # Alibaba Cloud
        "fd00:ec2::254",  # AWS over IPv6
    )
)
_RANGES: tuple[tuple[str, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]], ...] = (
    ("unspecified", _nets("0.0.0.0/8", "::/128")),
    ("loopback", _nets("127.0.0.0/8", "::1/128")),
    ("ipv4_mapped", _nets("::ffff:0:0/96", "::ffff:0:0:0/96")),
    ("ipv4_translated", _nets("::/96", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "2001::/32")),
    ("private", _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")),
    ("cgnat", _nets("100.64.0.0/10")),
    ("link_local", _nets("169.254.0.0/16", "fe80::/10")),
    ("unique_local", _nets("fc00::/7", "fec0::/10")),
    ("multicast", _nets("224.0.0.0/4", "ff00::/8")),
    (
        "reserved",
        _nets(
            "192.0.0.0/24",  # IETF protocol assignments
            "192.0.2.0/24",  # documentation
            "192.88.99.0/24",  # 6to4 relay anycast
            "198.18.0.0/15",  # benchmarking
            "198.51.100.0/24",  # documentation
            "203.0.113.0/24",  # documentation
            "240.0.0.0/4",  # reserved, and the broadcast address
            "100::/64",  # discard
            "2001:db8::/32",  # documentation
        ),
    ),
)
# What SEGMENTATION_WEBHOOK_ALLOW_PRIVATE lets through (development only).
PRIVATE_REASONS = frozenset({"loopback", "private", "cgnat", "link_local", "unique_local"})


def blocked_reason(address: IPAddress, *, allow_private: bool = False) -> str | None:
    """Why a delivery may not connect to `address` (`loopback`, `private`, `metadata`, ...), or None."""
    reason = _classify(address)
    if reason is not None and allow_private and reason in PRIVATE_REASONS:
        return None
    return reason


def _classify(address: IPAddress) -> str | None:
    if address in _METADATA:
        return "metadata"
    for reason, networks in _RANGES:
        if any(address.version == n.version and address in n for n in networks):
            return reason
    if not address.is_global:
        return "not_global"
    return None


def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (A and AAAA), in the resolver's order, without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[IPAddress] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])  # drop an IPv6 zone id
        if address not in found:
            found.append(address)
    return found


class UnsafeURL(Exception):
    """A webhook URL that may not be called. `reason` is a short code; the text never quotes the URL."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class BlockedAddress(httpcore.ConnectError):
    """Raised at connection time when the host resolves to a blocked address (an httpcore ConnectError, so
    httpx reports it as `httpx.ConnectError` like any connection failure)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the host resolves to a blocked address ({reason})")
        self.reason = reason


@dataclass(frozen=True)
class Guard:
    allow_private: bool = False
    resolver: Resolver = system_resolver

    def addresses(self, host: str, port: int) -> list[IPAddress]:
        """The host's addresses when every one of them may be called; UnsafeURL otherwise."""
        try:
            literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            found = [literal]
        else:
            try:
                found = self.resolver(host, port)
            except (OSError, UnicodeError):
                raise UnsafeURL("unresolvable", "The URL's host does not resolve.") from None
        if not found:
            raise UnsafeURL("unresolvable", "The URL's host does not resolve.")
        for address in found:
            reason = blocked_reason(address, allow_private=self.allow_private)
            if reason is not None:
                raise UnsafeURL(
                    reason,
                    f"The URL's host resolves to an address that may not be called ({reason}).",
                )
        return found


def check_url(url: str, guard: Guard) -> None:
    """Raise UnsafeURL unless `url` may be registered as a webhook endpoint."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeURL("malformed", "The URL is not valid.") from None
    allowed = ("https", "http") if guard.allow_private else ("https",)
    if parts.scheme not in allowed:
        raise UnsafeURL("scheme", "The URL must use https.")
    if parts.username is not None or parts.password is not None:
        raise UnsafeURL("credentials", "The URL must not contain credentials; the signature authenticates.")
    if parts.fragment:
        raise UnsafeURL("fragment", "The URL must not have a fragment.")
    host = parts.hostname
    if not host:
        raise UnsafeURL("malformed", "The URL has no host.")
    guard.addresses(host, port or (443 if parts.scheme == "https" else 80))


class GuardedBackend(httpcore.SyncBackend):
    """httpcore's network backend with the connection-time check: resolve the host once, check every
    address, connect to the checked addresses (in order) and to nothing else."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = self.guard.addresses(host, port)
        except UnsafeURL as exc:
            raise BlockedAddress(exc.reason) from None
        last: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses:
            try:
                return super().connect_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport with its connection pool on the `GuardedBackend`. Proxies from the environment
    are ignored (a proxy would make the connection, unchecked)."""

    def __init__(
        self,
        guard: Guard,
        *,
        verify: ssl.SSLContext | bool = True,
        limits: httpx.Limits = httpx.Limits(max_connections=100, max_keepalive_connections=20),  # noqa: B008
    ) -> None:
        super().__init__(verify=verify, trust_env=False, limits=limits)
        ssl_context = httpx.create_ssl_context(verify=verify, trust_env=False)
        self._pool.close()
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(guard),
        )


def delivery_client(
    guard: Guard,
    *,
    timeout_s: float,
    verify: ssl.SSLContext | bool = True,
    headers: Sequence[tuple[str, str]] = (),
) -> httpx.Client:
    """The HTTP client of webhook deliveries: guarded connections, no redirects, no proxies from the
    environment, `timeout_s` for connecting and for each read and write."""
    return httpx.Client(
        transport=GuardedTransport(guard, verify=verify),
        follow_redirects=False,
        timeout=httpx.Timeout(timeout_s),
        trust_env=False,
        headers=list(headers),
    )
