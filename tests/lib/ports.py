"""Free loopback TCP ports for the test harness.

The kernel picks the port (bind to port 0), so two harness parts never race
on a hard-coded number.  The port is released before the caller's server
binds it, so a collision is still possible in theory: servers started on a
port from here should retry with a fresh one if their bind fails.
"""

import socket


def free_port(host="127.0.0.1"):
    """Return a TCP port on host that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
