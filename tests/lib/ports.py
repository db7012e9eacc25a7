"""Free loopback TCP ports for the test harness.

A port the kernel picks (bind to port 0) comes from the ephemeral range,
the same range every outgoing connection takes its source port from: under
load a client of another test could hold it by the time our server binds
it ("Address already in use").  So the port is drawn at random below the
ephemeral range (net.ipv4.ip_local_port_range), where only listeners live,
and checked free.

A port is only checked free, not held, until its server binds it, and a
harness draws several before starting anything (an appliance draws its
MariaDB and nginx ports first, slapd's later).  So this process never
hands out the same port twice: without that, slapd could draw the port
already promised to mariadbd and bind it first (CI, stop 15).  Another
process can still take a port in between; servers whose port the caller
did not fix retry with a new one (slapd.py, mariadb.py).
"""

import random
import socket

_LOW = 20000

# ports handed out by this process; cleared when the range runs low
_issued = set()


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
        if len(_issued) > (high - _LOW) // 2:
            _issued.clear()
        for _ in range(200):
            port = random.randrange(_LOW, high)
            if port in _issued:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            _issued.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    _issued.add(port)
    return port
