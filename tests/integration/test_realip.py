"""The real client IP behind a load balancer (issue 5): the module
honours nginx's realip modules, for WebSocket (X-Forwarded-For from a
trusted proxy) and for TCP (the PROXY protocol), so the audit trail
records the client's address, not the balancer's.
"""

import json
import time

from rawtcp import RawTCP
from rawws import RawWS

APPLIANCE_EXTRA_SERVER = """
        set_real_ip_from 127.0.0.1;
        real_ip_header X-Forwarded-For;
"""

# a listener behind a PROXY-protocol balancer
APPLIANCE_EXTRA_STREAM = """
    server {
        listen 127.0.0.1:@EXTRA_PORT@ proxy_protocol;
        set_real_ip_from 127.0.0.1;
        conclave_xmpp;
    }
"""


def signins(app, user):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = app.mariadb.query(
            "SELECT actor_ip, transport, payload FROM audit_record WHERE "
            "event='signin' AND actor_user='%s'" % user,
            database="conclave")
        if rows:
            return rows
        time.sleep(0.2)
    raise AssertionError("no sign-in record for %s" % user)


def test_websocket_behind_a_proxy(appliance):
    ws = RawWS(appliance.nginx.http_port, connect=False)
    ws.upgrade(extra="X-Forwarded-For: 203.0.113.7")
    ws.login("alice")
    ws.close()
    rows = signins(appliance, "alice@example.com")
    assert ("203.0.113.7", "websocket") in [(r[0], r[1]) for r in rows]


def test_without_the_header_the_socket_address_counts(appliance):
    ws = RawWS(appliance.nginx.http_port)
    ws.login("bob")
    ws.close()
    rows = signins(appliance, "bob@example.com")
    assert ("127.0.0.1", "websocket") in [(r[0], r[1]) for r in rows]


def test_tcp_behind_a_proxy_protocol_balancer(appliance):
    c = RawTCP(appliance.nginx.extra_port)
    c.send("PROXY TCP4 198.51.100.9 127.0.0.1 40000 5222\r\n")
    c.login("carol", tls=False)
    c.close()
    rows = signins(appliance, "carol@example.com")
    assert ("198.51.100.9", "tcp") in [(r[0], r[1]) for r in rows]
    rec = json.loads([r[2] for r in rows if r[0] == "198.51.100.9"][0])
    assert rec["actor"]["ip"] == "198.51.100.9"
