"""A client that stops reading is cut off once its backlog passes
conclave_max_output; its server memory stays bounded and the sender is
not held up."""

import json
import socket
import urllib.request

from rawws import RawWS

APPLIANCE_EXTRA_HTTP = """
    conclave_max_output 64k;
"""


def test_reader_that_stops_reading_is_disconnected(appliance):
    port = appliance.nginx.http_port
    slow = RawWS(port)
    slow.login("bob", resource="slow")
    # a small receive buffer, so the backlog builds up in nginx
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

    fast = RawWS(port)
    fast.login("alice", resource="fast")
    body = "z" * 8000
    for i in range(2000):
        fast.send("<message to='bob@example.com/slow' id='s%d'>"
                  "<body>%s</body></message>" % (i, body))
        if "closing slow client" in appliance.nginx.error_log():
            break
    # the sender is still served
    fast.send("<iq type='get' id='alive' to='example.com'>"
              "<ping xmlns='urn:xmpp:ping'/></iq>")
    assert "type='result'" in fast.expect(r"id='alive'", timeout=20)
    assert "closing slow client" in appliance.nginx.error_log()
    # reset, not a slow drain of what the kernel still held
    assert slow.closed_by_server(timeout=5)
    with urllib.request.urlopen(appliance.status_url, timeout=5) as r:
        left = json.loads(r.read())["sessions"]
    assert not any(s["resource"] == "slow" for s in left)
    fast.close()
