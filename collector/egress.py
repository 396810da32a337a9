"""Where a job may connect: the egress policy for destinations a job spec gives inline (URLs, database hosts).

By default a job reaches public addresses only: loopback, private, link-local, multicast, reserved, unspecified
and other not globally reachable addresses are refused, in IPv4 and IPv6, including the IPv6 forms that carry
an IPv4 address (mapped, compatible, 6to4, NAT64). The operator opens more with `COLLECTOR_EGRESS_ALLOW`, each
entry on every port or on one (`db.internal:5432`).

Two checks, one rule. At submit, a host written as a literal address, in any spelling a resolver accepts
(`2852039166`, `0xa9fea9fe`, `0251.0376.0251.0376`, `127.1`, `[::ffff:169.254.169.254]`), is refused with a 422.
At connect time the host is resolved, every address checked, and the socket connected to an address that
passed, so a name that resolves (or re-resolves: DNS rebinding) to a refused address gets nowhere.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import re
import socket
import threading
import urllib.parse
from collections.abc import Iterator

from collector import defaults
from collector.config import Config
from collector.errors import ConfigError, EgressError, SettingError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# What inet_aton (and so getaddrinfo) reads as an IPv4 address: 1 to 4 dot-separated decimal, octal or hex parts.
LOOSE_IPV4 = re.compile(r"^(0[xX][0-9a-fA-F]*|[0-9]+)(\.(0[xX][0-9a-fA-F]*|[0-9]+)){0,3}$")
HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*$")
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")            # well-known prefix: the last 32 bits are an IPv4 address
NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")    # local-use NAT64 (RFC 8215): reaches private networks
COMPATIBLE = ipaddress.IPv6Network("::/96")              # deprecated IPv4-compatible addresses (::a.b.c.d)
SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}


def literal_address(host: str) -> Address | None:
    """The address `host` spells, if it is a literal one (any spelling a resolver accepts); None for a name."""
    text = host.strip().strip("[]").rstrip(".")
    if not text.isascii():
        try:  # the resolver IDNA-encodes names first, which turns full-width digits into ASCII ones
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    text = text.split("%", 1)[0]   # an IPv6 zone index (fe80::1%eth0) does not change the address
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            return None
    if LOOSE_IPV4.match(text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def ascii_name(host: str) -> str:
    """`host` as the resolver looks it up (IDNA for non-ASCII names, no trailing dot); empty if it cannot be."""
    try:
        return host.rstrip(".").encode("idna").decode("ascii")
    except UnicodeError:
        return ""


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, NAT64), where it carries one."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64 or (address in COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal(address: Address) -> str | None:
    """Why the default policy refuses `address` (`"loopback"`, `"private"`, ...), or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in NAT64_LOCAL or address.teredo is not None:
            return "tunnelled (NAT64 local-use or Teredo)"
        inner = embedded_ipv4(address)
        if inner is not None:
            why = refusal(inner)
            if why:
                return f"{why} (the IPv4 address {inner} inside it)"
            if address in COMPATIBLE:
                return "reserved (IPv4-compatible)"
            return None
    for name in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(address, f"is_{name}"):
            return name.replace("_", "-")
    if not address.is_global:
        return "not globally reachable"
    return None


@dataclasses.dataclass(frozen=True)
class EgressPolicy:
    """The addresses jobs may reach: public ones, plus the hosts and networks the operator allows."""

    allow_hosts: frozenset[str] = frozenset()        # every port of these names
    allow_networks: tuple[Network, ...] = ()          # every port of these networks
    allow_host_ports: frozenset[tuple[str, int]] = frozenset()   # a name on one port (`db.internal:5432`)
    allow_network_ports: tuple[tuple[Network, int], ...] = ()    # a network on one port (`10.0.0.0/8:443`)
    max_redirects: int = defaults.EGRESS_MAX_REDIRECTS
    max_response_bytes: int = defaults.MAX_RESPONSE_BYTES

    @classmethod
    def from_config(cls, config: Config) -> EgressPolicy:
        allowed = parse_allow(config.egress_allow or "")
        if config.max_response_bytes < 1:
            raise ConfigError(f"COLLECTOR_MAX_RESPONSE_BYTES={config.max_response_bytes} must be 1 or more")
        return dataclasses.replace(allowed, max_response_bytes=config.max_response_bytes)

    def host_allowed(self, host: str, port: int | None = None) -> bool:
        """Whether the operator allowed `host` by name, on every port or on `port` (every address it resolves
        to is then allowed)."""
        name = host.strip("[]").rstrip(".").lower()
        return name in self.allow_hosts or (port is not None and (name, port) in self.allow_host_ports)

    def address_refusal(self, address: Address, port: int | None = None) -> str | None:
        """Why `address` is refused (on `port`, when given), or None when it is public or in a network allowed on
        every port or on `port`."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped   # networks are written as IPv4: ::ffff:10.0.0.1 is 10.0.0.1
        if any(address in network for network in self.allow_networks if network.version == address.version):
            return None
        if port is not None and any(address in network for network, allowed in self.allow_network_ports
                                    if allowed == port and network.version == address.version):
            return None
        # Which ports the operator opened elsewhere is not said: a refusal goes to the client, who could learn
        # them from it without trying each.
        return refusal(address)

    def check_host(self, host: str | None, *, setting: str, what: str = "host", port: int | None = None) -> None:
        """At submit: `SettingError` when `host` is a literal address the policy refuses on `port` (names wait
        for DNS)."""
        if not host:
            raise SettingError(setting, f"{what} is missing; name the server to connect to")
        if self.host_allowed(host, port):
            return
        address = literal_address(host)
        if address is None:
            if not HOSTNAME.match(ascii_name(host)):
                raise SettingError(setting, f"{what} {host!r} is not a host name or address")
            return
        why = self.address_refusal(address, port)
        if why is not None:
            on = f" port {port}" if port is not None else ""
            raise SettingError(setting, f"{what} {host!r} is the address {address}{on}: {why}; jobs may not connect "
                                        "to loopback, private, link-local or other non-public addresses (the "
                                        "operator can allow one, on every port or on one, with "
                                        "COLLECTOR_EGRESS_ALLOW)")

    def check_url(self, url: str, *, setting: str) -> None:
        """At submit: `SettingError` unless `url` is http(s) and its host is not a refused literal address."""
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port  # noqa: B018 - raises for a port that is not a number
        except ValueError as exc:
            raise SettingError(setting, f"url is not a valid URL ({exc})") from None
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise SettingError(setting, "url must start with http:// or https://")
        self.check_host(parts.hostname, setting=setting, what="the url's host",
                        port=parts.port or DEFAULT_PORTS[scheme])

    def addresses(self, host: str, port: int) -> list[tuple[int, tuple[object, ...]]]:
        """At connect time: (family, sockaddr) of each address `host` resolves to that the policy allows;
        `EgressError` when it resolves to refused addresses only."""
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        if self.host_allowed(host, port):
            return [(family, sockaddr) for family, _, _, _, sockaddr in infos]
        allowed, refused = [], []
        for family, _, _, _, sockaddr in infos:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            why = self.address_refusal(address, port)
            if why is None:
                allowed.append((family, sockaddr))
            else:
                refused.append(f"{address} ({why})")
        if not allowed:
            verb = "is" if literal_address(host) is not None else "resolves to"
            raise EgressError(f"{host} {verb} {', '.join(sorted(set(refused)))}: jobs may not connect there on "
                              f"port {port} (the operator can allow it with COLLECTOR_EGRESS_ALLOW)")
        return allowed

    def connect(self, address: tuple[str, int], timeout: object = None,
                source_address: tuple[str, int] | None = None) -> socket.socket:
        """`socket.create_connection`, to an address that passed the check (never a second lookup); its
        signature, because http.client calls it positionally in its place."""
        host, port = address
        error: OSError | None = None
        for family, sockaddr in self.addresses(host, port):
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                if isinstance(timeout, int | float):  # http.client may pass its "global default" sentinel
                    sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                error = exc
                sock.close()
        assert error is not None
        raise error


ALLOW_EXAMPLE = "e.g. db.internal, db.internal:5432, 10.1.2.3, 10.0.0.0/8:443, [fd00::1]:5432"


def parse_allow(text: str) -> EgressPolicy:
    """`COLLECTOR_EGRESS_ALLOW`: comma-separated host names, addresses and CIDR networks, each on every port, or
    on one port when it ends in `:port` (an IPv6 address or network with a port is written in brackets); the policy
    that allows them, with the default limits."""
    hosts: set[str] = set()
    networks: list[Network] = []
    host_ports: set[tuple[str, int]] = set()
    network_ports: list[tuple[Network, int]] = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        target, port = _split_port(entry)
        try:
            network = ipaddress.ip_network(target.strip("[]"), strict=False)
        except ValueError:
            name = target.rstrip(".").lower()
            if not HOSTNAME.match(name):
                raise ConfigError(f"COLLECTOR_EGRESS_ALLOW entry {entry!r} is neither a host name, an address nor a "
                                  f"CIDR network, with or without a port ({ALLOW_EXAMPLE}); fix or remove it") from None
            if port is None:
                hosts.add(name)
            else:
                host_ports.add((name, port))
            continue
        if port is None:
            networks.append(network)
        else:
            network_ports.append((network, port))
    return EgressPolicy(allow_hosts=frozenset(hosts), allow_networks=tuple(networks),
                        allow_host_ports=frozenset(host_ports), allow_network_ports=tuple(network_ports))


def _split_port(entry: str) -> tuple[str, int | None]:
    """An allow-list entry's host or network, and its port when it gives one (`host:port`, `[v6]:port`)."""
    if entry.startswith("["):
        inside, bracket, rest = entry[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ConfigError(f"COLLECTOR_EGRESS_ALLOW entry {entry!r}: write an IPv6 address or network with a "
                              f"port as [address]:port ({ALLOW_EXAMPLE})")
        return inside, _port(entry, rest[1:]) if rest else None
    if entry.count(":") != 1:
        return entry, None   # a name, an IPv4 address or network, or an IPv6 one without a port
    target, _, port = entry.partition(":")
    return target, _port(entry, port)


def _port(entry: str, text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ConfigError(f"COLLECTOR_EGRESS_ALLOW entry {entry!r}: the port must be a number from 1 to 65535 "
                          f"({ALLOW_EXAMPLE})")
    return int(text)


_lock = threading.Lock()
_policy: EgressPolicy | None = None


def install(policy: EgressPolicy) -> None:
    """Make `policy` the one every job of this process is held to (the worker runtime and the API do this)."""
    global _policy
    with _lock:
        _policy = policy


def current() -> EgressPolicy:
    """This process's policy; built from the environment on first use when nothing installed one."""
    global _policy
    with _lock:
        if _policy is None:
            _policy = EgressPolicy.from_config(Config.from_env())
        return _policy


@contextlib.contextmanager
def installed(policy: EgressPolicy) -> Iterator[EgressPolicy]:
    """`policy` installed for the length of a block (tests, dry runs), the previous one put back after."""
    global _policy
    with _lock:
        before = _policy
    install(policy)
    try:
        yield policy
    finally:
        with _lock:
            _policy = before
