"""Outbound HTTP with an SSRF guard: the one way Tenantry calls a URL a tenant gave it.

Webhook deliveries and integration health checks go to URLs that tenants chose. A tenant must
not be able to make the server call its own loopback, the private network it sits in, or a
cloud metadata endpoint. So every outbound call:

- accepts only `http` and `https` URLs, without credentials in them;
- resolves the host once and refuses when any of its addresses is loopback, private,
  link-local, multicast, reserved or otherwise not globally routable (the metadata endpoint
  169.254.169.254 and fd00:ec2::254 among them), unless the operator's allow-list
  (`TENANTRY_OUTBOUND_ALLOWLIST`, CIDR ranges) contains it;
- connects to exactly the address it checked (no second lookup a DNS rebinding could change),
  sending the URL's host name as `Host` and as the TLS server name, with the certificate
  checked against that name;
- follows no redirect: a 3xx is the answer.

`check_url` is the same guard for a URL being saved (at creation), where a name that does not
resolve yet is accepted: it is checked again on every call.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import logging
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from tenantry.net import Network

log = logging.getLogger("tenantry.outbound")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _networks(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


#: IPv4 ranges that are not public (IANA special-purpose registry), written out rather than taken
#: from `is_global`, whose answers differ between Python versions.
_BLOCKED_V4 = _networks(
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
)
#: Public IPv6 is global unicast (2000::/3) only, less these special-purpose ranges inside it.
_GLOBAL_V6 = ipaddress.ip_network("2000::/3")
_BLOCKED_V6 = _networks(
    "2001::/23",  # IETF protocol assignments (Teredo, ORCHID, benchmarking, ...)
    "2001:db8::/32",
    "3fff::/20",  # documentation
    "2002::/16",  # 6to4: judged by the IPv4 address inside it
)
#: IPv6 forms that carry an IPv4 address, each judged by that address: (range, where it sits).
_EMBEDDED_V4 = (
    (ipaddress.ip_network("::ffff:0:0/96"), 0),  # IPv4-mapped
    (ipaddress.ip_network("::/96"), 0),  # IPv4-compatible (deprecated)
    (ipaddress.ip_network("::ffff:0:0:0/96"), 0),  # SIIT
    (ipaddress.ip_network("64:ff9b::/96"), 0),  # NAT64, well-known prefix
    (ipaddress.ip_network("64:ff9b:1::/48"), 0),  # NAT64, local use
)
_RESOLVE_TIMEOUT_S = 3.0
#: At most this much of a response body is read (and kept for the delivery log).
MAX_RESPONSE_BYTES = 64 * 1024
# Sized so that a few hosts whose name servers never answer (each lookup holds its thread until
# the system resolver gives up) cannot hold every lookup up.
_resolver = ThreadPoolExecutor(max_workers=32, thread_name_prefix="resolve")


class OutboundRefused(ValueError):
    """The URL may not be called: bad scheme, credentials in it, or a refused address. `str()` says why."""


class OutboundFailed(OSError):
    """The call was allowed but did not complete: no address, no connection, a timeout, a TLS error."""


@dataclass(frozen=True)
class OutboundResponse:
    """What the far end answered."""

    status: int
    headers: dict[str, str]
    body: bytes  # at most MAX_RESPONSE_BYTES
    elapsed_ms: float
    address: str  # the address that was connected to


@dataclass(frozen=True)
class Target:
    """A checked URL, split into what the connection needs."""

    scheme: str
    host: str
    port: int
    path: str
    allow: tuple[Network, ...] = field(default=(), repr=False)


def _v4_blocked(ip: ipaddress.IPv4Address) -> bool:
    return any(ip in network for network in _BLOCKED_V4)


def _allowed(ip: IPAddress, allow: tuple[Network, ...]) -> bool:
    return any(ip.version == n.version and ip in n for n in allow)


def is_blocked(ip: IPAddress, allow: tuple[Network, ...] = ()) -> bool:
    """Returns True when `ip` is not a public address and no range of `allow` contains it.

    IPv4: refused in any special-purpose range (private, loopback, link-local with the cloud
    metadata address, CGNAT, documentation, multicast, reserved). IPv6: only global unicast
    (2000::/3) outside the special-purpose ranges is public; a form that carries an IPv4
    address (mapped, compatible, NAT64, 6to4) is judged as that IPv4 address.
    """
    if _allowed(ip, allow):
        return False
    if isinstance(ip, ipaddress.IPv4Address):
        return _v4_blocked(ip)
    for network, _ in _EMBEDDED_V4:
        if ip in network:
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
            return not _allowed(inner, allow) and _v4_blocked(inner)
    if ip.sixtofour is not None:
        return not _allowed(ip.sixtofour, allow) and _v4_blocked(ip.sixtofour)
    if ip not in _GLOBAL_V6 or any(ip in network for network in _BLOCKED_V6):
        return True
    return False


def parse_target(url: str, allow: tuple[Network, ...] = ()) -> Target:
    """Returns the URL's parts; raises OutboundRefused for anything but a plain http(s) URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise OutboundRefused(f"The URL is not valid: {exc}.") from None
    if parts.scheme not in ("http", "https"):
        raise OutboundRefused("The URL must be http or https.")
    if parts.username is not None or parts.password is not None:
        raise OutboundRefused("The URL must not carry credentials.")
    host = parts.hostname
    if not host:
        raise OutboundRefused("The URL has no host.")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(parts.scheme, host, port or (443 if parts.scheme == "https" else 80), path, allow)


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def resolve(target: Target, timeout: float = _RESOLVE_TIMEOUT_S) -> IPAddress:
    """Returns the one address to connect to; raises OutboundRefused when any address of the host is
    refused, OutboundFailed when it does not resolve."""
    literal = _literal(target.host)
    if literal is not None:
        addresses = [literal]
    else:
        future = _resolver.submit(socket.getaddrinfo, target.host, target.port, type=socket.SOCK_STREAM)
        try:
            infos = future.result(timeout=timeout)
        except FutureTimeout:
            raise OutboundFailed(f"Resolving {target.host} timed out.") from None
        except (OSError, UnicodeError, ValueError) as exc:
            raise OutboundFailed(f"{target.host} does not resolve: {exc}.") from None
        addresses = []
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])  # an IP family's: a str
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise OutboundFailed(f"{target.host} does not resolve.")
    # Every address is checked, not only the first: a name mixing public and private answers
    # is refused, whichever one a later lookup would have returned first.
    for address in addresses:
        if is_blocked(address, target.allow):
            # The address stays in the server's log: telling the tenant would map the private
            # network for them (which internal names exist, and where they point).
            log.info("outbound call refused", extra={"host": target.host, "address": str(address)})
            raise OutboundRefused(
                "The URL's host is, or resolves to, a private or reserved address; "
                "only public addresses may be called, and the ranges the server's "
                "operator admits with TENANTRY_OUTBOUND_ALLOWLIST (CIDR ranges)."
            )
    return addresses[0]


def check_url(url: str, allow: tuple[Network, ...] = ()) -> None:
    """Raises OutboundRefused unless `url` may be saved as a destination: http(s), no credentials, and
    not resolving to a refused address (a name that does not resolve now is accepted)."""
    target = parse_target(url, allow)
    try:
        resolve(target)
    except OutboundFailed:
        pass  # checked again, with the same guard, on every call


def refuse_uncallable(fields: Mapping[str, Any], names: tuple[str, ...], allow: tuple[Network, ...] = ()) -> None:
    """Raises a 422 UrlNotAllowed naming each of the URL fields `names` in `fields` that `check_url`
    refuses (absent and null fields are skipped): the one translation of the guard into the API's error."""
    from tenantry.errors import Detail, UrlNotAllowed

    details = []
    for name in names:
        url = fields.get(name)
        if url is None:
            continue
        try:
            check_url(url, allow)
        except OutboundRefused as exc:
            details.append(Detail(str(exc), name))
    if details:
        raise UrlNotAllowed(details[0].message, details=details)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to one fixed address, verifying the certificate against the URL's host name."""

    def __init__(self, address: str, server_name: str, port: int, timeout: float) -> None:
        super().__init__(address, port, timeout=timeout, context=ssl.create_default_context())
        self._server_name = server_name

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        # HTTPSConnection keeps its SSL context in `_context`, which typeshed does not declare.
        self.sock = self._context.wrap_socket(sock, server_hostname=self._server_name)  # type: ignore[attr-defined]


def request(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
    allow: tuple[Network, ...] = (),
) -> OutboundResponse:
    """Sends one request through the guard and returns the answer (a 3xx is not followed).

    Raises OutboundRefused when the URL may not be called, OutboundFailed when the call does
    not complete within `timeout` seconds in all: resolving, connecting, sending and reading the
    whole answer. (A socket timeout alone bounds each read, and a far end trickling a byte at a
    time would hold the call for as long as it liked.)
    """
    deadline = time.monotonic() + timeout
    target = parse_target(url, allow)
    address = resolve(target, min(_RESOLVE_TIMEOUT_S, timeout))
    ip = str(address)
    host_header = target.host if ":" not in target.host else f"[{target.host}]"
    default_port = 443 if target.scheme == "https" else 80
    if target.port != default_port:
        host_header = f"{host_header}:{target.port}"
    remaining = max(0.001, deadline - time.monotonic())
    if target.scheme == "https":
        conn: http.client.HTTPConnection = _PinnedHTTPSConnection(ip, target.host, target.port, remaining)
    else:
        conn = http.client.HTTPConnection(ip, target.port, timeout=remaining)
    sent = {"Host": host_header, "User-Agent": "Tenantry-Webhooks/1", "Connection": "close", **(headers or {})}
    if body is not None or method in ("POST", "PUT", "PATCH"):
        sent["Content-Length"] = str(len(body or b""))
    expired = threading.Event()

    def cut() -> None:  # the deadline passed: end the call, whatever it is waiting for
        expired.set()
        sock = conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    watchdog = threading.Timer(remaining, cut)
    watchdog.daemon = True
    watchdog.start()
    start = time.perf_counter()
    try:
        conn.putrequest(method, target.path, skip_host=True, skip_accept_encoding=True)
        for name, value in sent.items():
            conn.putheader(name, value)
        conn.endheaders(body)
        response = conn.getresponse()
        content = response.read(MAX_RESPONSE_BYTES)
        status, answered = response.status, {k.lower(): v for k, v in response.getheaders()}
    except (OSError, http.client.HTTPException, ssl.SSLError, ValueError) as exc:  # ValueError: InvalidURL
        if expired.is_set() or isinstance(exc, TimeoutError | socket.timeout):
            raise OutboundFailed(f"The call to {target.host} timed out after {timeout:g} s.") from None
        raise OutboundFailed(f"The call to {target.host} failed: {exc or type(exc).__name__}.") from None
    finally:
        watchdog.cancel()
        conn.close()
    if expired.is_set():  # the answer ended only because the deadline cut it
        raise OutboundFailed(f"The call to {target.host} timed out after {timeout:g} s.")
    return OutboundResponse(status, answered, content, (time.perf_counter() - start) * 1000, ip)
