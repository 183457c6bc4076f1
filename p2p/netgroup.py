"""Network groups and host-name checks: limits keyed by where a peer is, not by its
connection, so one host or one provider's range cannot take every slot or refill its
allowance by reconnecting."""

from __future__ import annotations

import functools
import ipaddress
import re
import socket

MAX_LABEL = 63  # bytes of one DNS label (RFC 1035); longer ones make IDNA encoding fail
_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
# A name the operator gives (--connect, --addnode, addnode) may hold underscores, as
# container and compose host names do (project_service_1); resolvers accept them.
_NAMED_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")


@functools.lru_cache(maxsize=4096)  # sources repeat; parsing costs ~10 µs
def netgroup(host: str) -> str:
    """IPv4 /16, IPv6 /32 (Bitcoin Core's groups), a name as itself. Loopback and
    private addresses each count as their own group, so peers on one machine or LAN
    (tests, a home network) stay distinct."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return "name:" + host.lower()
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback or ip.is_private or ip.is_link_local:
        return "ip:" + str(ip)
    if isinstance(ip, ipaddress.IPv4Address):
        return "v4:" + ".".join(str(ip).split(".")[:2])
    return "v6:" + ip.exploded[:9]


def valid_host(host: str, named: bool = False) -> bool:
    """An IP literal, or a DNS name of ASCII letters, digits and hyphens in labels of
    1..63 bytes (255 in all): anything else cannot be dialled and is not stored.
    ``named``: a name the operator gave, which may hold underscores too."""
    if not host or len(host) > 255 or not host.isascii():
        return False
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)  # C parser: ~50x faster than ipaddress
            return True
        except OSError:
            pass
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    label_rx = _NAMED_LABEL if named else _LABEL
    return all(label_rx.match(label) for label in labels)
