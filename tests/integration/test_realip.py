"""The real client IP behind a load balancer (issue 5): the module
honours nginx's realip modules, for WebSocket and BOSH (X-Forwarded-For
from a trusted proxy) and for TCP (the PROXY protocol), so the audit
trail records the client's address, not the balancer's, and the
console's per-address sign-in throttle counts the client's address.
(The PROXY protocol on an http listener: test_one_port.py.)
"""

import base64
import json
import time

from console import Console
from rawbosh import NS, from_ip
from rawtcp import RawTCP
from rawws import RawWS

APPLIANCE_EXTRA_HTTP = """
    conclave_admin_max_failures 3;
    conclave_admin_lockout 1h;
"""

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
    # the log names the client to the end, after the HTTP request of the
    # upgrade (and realip's address with it) is gone
    line = "client closed the connection while serving XMPP over " \
        "WebSocket, client: 203.0.113.7,"
    deadline = time.monotonic() + 10
    while line not in appliance.nginx.error_log() \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert line in appliance.nginx.error_log()


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


def test_bosh_behind_a_proxy(appliance):
    ip = "203.0.113.21"
    first = from_ip(appliance, "<body rid='700' wait='5' hold='1' "
                 "to='example.com' ver='1.11' xmpp:version='1.0' "
                 "xmlns='%s' xmlns:xmpp='urn:xmpp:xbosh'/>" % NS, ip)
    sid = first.split("sid='", 1)[1].split("'", 1)[0]
    auth = base64.b64encode(b"\0erin\0erin-pw").decode()
    r = from_ip(appliance, "<body rid='701' sid='%s' xmlns='%s'><auth xmlns="
             "'urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s"
             "</auth></body>" % (sid, NS, auth), ip)
    assert "<success" in r, r
    from_ip(appliance, "<body rid='702' sid='%s' type='terminate' xmlns='%s'/>"
         % (sid, NS), ip)
    rows = signins(appliance, "erin@example.com")
    assert ("203.0.113.21", "bosh") in [(r[0], r[1]) for r in rows], rows
    assert "127.0.0.1" not in [r[0] for r in rows]


def test_the_session_list_shows_the_real_address(appliance):
    """The console's live session list (GET sessions) names each
    session's client address as realip gave it: WebSocket and BOSH
    behind an X-Forwarded-For proxy, TCP behind a PROXY-protocol
    balancer."""
    ws = RawWS(appliance.nginx.http_port, connect=False)
    ws.upgrade(extra="X-Forwarded-For: 203.0.113.41")
    ws.login("alice", resource="listed-ws")
    tcp = RawTCP(appliance.nginx.extra_port)
    tcp.send("PROXY TCP4 198.51.100.42 127.0.0.1 40001 5222\r\n")
    tcp.login("bob", resource="listed-tcp", tls=False)
    first = from_ip(appliance, "<body rid='900' wait='5' hold='1' "
                 "to='example.com' ver='1.11' xmpp:version='1.0' "
                 "xmlns='%s' xmlns:xmpp='urn:xmpp:xbosh'/>" % NS,
                 "203.0.113.43")
    sid = first.split("sid='", 1)[1].split("'", 1)[0]
    auth = base64.b64encode(b"\0carol\0carol-pw").decode()
    assert "<success" in from_ip(
        appliance, "<body rid='901' sid='%s' xmlns='%s'><auth xmlns="
        "'urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>"
        "</body>" % (sid, NS, auth), "203.0.113.43")
    from_ip(appliance, "<body rid='902' sid='%s' xmpp:restart='true' "
         "xmlns='%s' xmlns:xmpp='urn:xmpp:xbosh'/>" % (sid, NS),
         "203.0.113.43")
    assert "<jid>" in from_ip(
        appliance, "<body rid='903' sid='%s' xmlns='%s'><iq type='set' "
        "id='b' xmlns='jabber:client'><bind xmlns='urn:ietf:params:xml:"
        "ns:xmpp-bind'><resource>listed-bosh</resource></bind></iq>"
        "</body>" % (sid, NS), "203.0.113.43")

    frank = Console(appliance.base_url)
    frank.signin("frank", "frank-pw")
    status, doc = frank.get("sessions")
    assert status == 200, doc
    seen = {s["resource"]: (s["ip"], s["transport"])
            for s in doc["sessions"] if s["resource"].startswith("listed-")}
    assert seen == {"listed-ws": ("203.0.113.41", "websocket"),
                    "listed-tcp": ("198.51.100.42", "tcp"),
                    "listed-bosh": ("203.0.113.43", "bosh")}, doc
    from_ip(appliance, "<body rid='904' sid='%s' type='terminate' xmlns='%s'/>"
         % (sid, NS), "203.0.113.43")
    ws.close()
    tcp.close()


def console_signin(app, user, pw, ip):
    c = Console(app.base_url)
    status, _, _ = c.request("POST", "api/signin",
                             body={"user": user, "password": pw},
                             headers={"X-Forwarded-For": ip})
    return status


def test_the_sign_in_throttle_counts_the_real_address(appliance):
    """Three failures from one client address behind the proxy lock out
    that address (conclave_admin_max_failures 3), not the proxy's: a
    client with another address is still served, and the refusals are
    recorded with the client's address."""
    bad, good = "203.0.113.31", "203.0.113.32"
    for user in ("nobody1", "nobody2", "nobody3"):
        assert console_signin(appliance, user, "x", bad) == 401
    # frank never failed: the address is what is locked out
    assert console_signin(appliance, "frank", "frank-pw", bad) == 429
    assert console_signin(appliance, "frank", "frank-pw", good) == 200
    deadline = time.monotonic() + 20
    ips = []
    while time.monotonic() < deadline:
        ips = [r[0] for r in appliance.mariadb.query(
            "SELECT actor_ip, payload FROM audit_record WHERE event="
            "'admin' AND status='fail' AND actor_user='frank@example.com'",
            database="conclave")
            if json.loads(r[1]).get("error", {}).get("code") == "throttled"]
        if ips:
            break
        time.sleep(0.2)
    assert ips == [bad]
