"""Free loopback TCP ports for the test harness.

A port the kernel picks (bind to port 0) comes from the ephemeral range,
the same range every outgoing connection takes its source port from: under
load a client of another test could hold it by the time our server binds
it ("Address already in use").  So the port is drawn at random below the
ephemeral range (net.ipv4.ip_local_port_range), where only listeners live,
and checked free.  A collision between two listeners drawing the same
number is still possible in theory.
"""

import random
import socket

_LOW = 20000


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host="127.0.0.1"):
    """Return a TCP port on host that was free a moment ago."""
    high = _ephemeral_low()
    if high - _LOW >= 1000:
        for _ in range(200):
            port = random.randrange(_LOW, high)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
