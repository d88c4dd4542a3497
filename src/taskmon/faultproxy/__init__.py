"""A TCP fault proxy speaking Toxiproxy 2.x's control API, for the chaos runs.

No Toxiproxy binary reaches every machine the harness runs on; this one does, and Toxiproxy
clients drive it unchanged (`taskmon fault-proxy` serves it on Toxiproxy's address).
"""

from taskmon.faultproxy.server import TOXIPROXY_API_VERSION, VERSION, FaultProxy

__all__ = ["TOXIPROXY_API_VERSION", "VERSION", "FaultProxy"]
