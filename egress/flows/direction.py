"""Who started a flow (SPEC: Direction).

The initiator is the sender of the TCP SYN. Where no SYN was captured (the capture
began mid-connection), or for UDP whose first packet may be a reply, the ports
decide: the side on a well-known port (< 1024) or a registered service port is the
responder.
"""

from __future__ import annotations

from typing import Final

from egress.model import ICMP, ICMPV6, TCP

__all__ = ["SERVICE_PORTS", "is_service_port", "responder_by_ports", "ECHO_REQUESTS", "ECHO_REPLIES"]

# Registered ports that camera networks and their clouds listen on; a port here is a
# server's, never an ephemeral client port.
SERVICE_PORTS: Final[frozenset[int]] = frozenset({
    1194, 1433, 1723, 1883, 1900, 1935, 2000, 2020, 3000, 3306, 3389, 3478, 3702, 4433,
    5000, 5060, 5061, 5222, 5349, 5353, 5355, 5432, 5683, 5684, 6002, 6123, 6379, 6443,
    6500, 6667, 7001, 7443, 8000, 8001, 8008, 8080, 8081, 8088, 8443, 8554, 8800, 8883,
    8888, 8899, 8900, 9000, 9010, 9020, 9090, 9100, 9443, 9999, 10001, 19302, 32100,
    34567, 37777, 37778,
})  # fmt: skip
_EPHEMERAL_FLOOR: Final = 32768
ECHO_REQUESTS: Final = {ICMP: 8, ICMPV6: 128}
ECHO_REPLIES: Final = {ICMP: 0, ICMPV6: 129}


def is_service_port(port: int) -> bool:
    return 0 < port < 1024 or port in SERVICE_PORTS


def responder_by_ports(proto: int, first_sport: int, first_dport: int) -> bool | None:
    """True when the first packet's sender is the responder, False when it is the
    initiator, None when the ports do not say."""
    src_svc, dst_svc = is_service_port(first_sport), is_service_port(first_dport)
    if src_svc != dst_svc:
        return src_svc
    if proto == TCP:
        if src_svc and dst_svc and first_sport != first_dport:
            return first_sport < first_dport
        src_eph, dst_eph = first_sport >= _EPHEMERAL_FLOOR, first_dport >= _EPHEMERAL_FLOOR
        if src_eph != dst_eph:
            return dst_eph
    return None
