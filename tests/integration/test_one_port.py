"""One port for everything (issue 5, item 6; docs/one-port.md).

A stream server reads the TLS ClientHello without terminating it
(ssl_preread) and picks by ALPN: "xmpp-client" goes to the XMPP
direct-TLS listener (XEP-0368), anything else to the HTTPS server that
carries the web client, WebSocket and BOSH.  Both internal listeners sit
on unix sockets and get the client's address through the PROXY
protocol, so the audit trail still records the real client IP.  The
client here connects from 127.0.0.2 to tell its address from the
proxy's.
"""

import base64
import http.client
import json
import socket
import ssl
import time

import pytest

from chathelp import status
from rawtcp import RawTCP
from rawws import RawWS

APPLIANCE_EXTRA_STREAM = r"""
    map $ssl_preread_alpn_protocols $conclave_one_port {
        ~\bxmpp-client\b   unix:@PREFIX@/xmpps.sock;
        default            unix:@PREFIX@/https.sock;
    }
    server {
        listen 127.0.0.1:@EXTRA_PORT@;
        ssl_preread on;
        proxy_pass $conclave_one_port;
        proxy_protocol on;
    }
    server {
        listen unix:@PREFIX@/xmpps.sock ssl proxy_protocol;
        ssl_certificate @PREFIX@/conf/cert.pem;
        ssl_certificate_key @PREFIX@/conf/key.pem;
        set_real_ip_from unix:;
        conclave_xmpp;
    }
"""

APPLIANCE_EXTRA_HTTP = r"""
    server {
        listen unix:@PREFIX@/https.sock ssl proxy_protocol;
        ssl_certificate @PREFIX@/conf/cert.pem;
        ssl_certificate_key @PREFIX@/conf/key.pem;
        set_real_ip_from unix:;
        real_ip_header proxy_protocol;
        location = /xmpp-websocket { conclave_websocket; }
        location = /http-bind { conclave_bosh; }
        location /admin/ { conclave_admin; }
        location / {
            root @WEBCLIENT@;
            index index.html;
        }
    }
"""


def signins(app, user, ip):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = app.mariadb.query(
            "SELECT actor_ip, transport, payload FROM audit_record WHERE "
            "event='signin' AND status='success' AND actor_user='%s'"
            % user, database="conclave")
        rows = [r for r in rows if r[0] == ip]
        if rows:
            return rows
        time.sleep(0.2)
    raise AssertionError("no sign-in record for %s from %s" % (user, ip))


def test_xmpp_by_alpn_with_the_real_client_ip(appliance):
    c = RawTCP(appliance.nginx.extra_port, tls=True, alpn=["xmpp-client"],
               source="127.0.0.2")
    assert c.sock.selected_alpn_protocol() in (None, "xmpp-client")
    feats = c.open()
    # already TLS: no STARTTLS offered, PLAIN allowed
    assert "starttls" not in feats and "PLAIN" in feats, feats
    assert "<success" in c.auth("alice", "alice-pw")
    c.open()
    c.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:"
           "xmpp-bind'/></iq>")
    assert "alice@example.com/" in c.expect(r"</iq>")
    c.send("<presence/>")
    c.close()
    rows = signins(appliance, "alice@example.com", "127.0.0.2")
    assert rows[0][1] == "tcp"
    assert json.loads(rows[0][2])["actor"]["ip"] == "127.0.0.2"


def test_https_without_alpn_gets_the_web_client(appliance):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    raw = socket.create_connection(("127.0.0.1", appliance.nginx.extra_port),
                                   timeout=10)
    s = ctx.wrap_socket(raw, server_hostname="example.com")
    s.sendall(b"GET / HTTP/1.1\r\nHost: example.com\r\n"
              b"Connection: close\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"converse" in body.lower()


def test_websocket_on_the_same_port_with_the_real_client_ip(appliance):
    ws = RawWS(appliance.nginx.extra_port, tls=True, alpn=["http/1.1"],
               source="127.0.0.2")
    ws.login("bob")
    ws.close()
    rows = signins(appliance, "bob@example.com", "127.0.0.2")
    assert rows[0][1] == "websocket"


def https(app, method, path, body=None, headers=None):
    """One HTTPS request through the one port from 127.0.0.2."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    c = http.client.HTTPSConnection("127.0.0.1", app.nginx.extra_port,
                                    timeout=30, context=ctx,
                                    source_address=("127.0.0.2", 0))
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r, data


def test_bosh_and_the_console_on_the_same_port(appliance):
    """BOSH and the admin console share the port too: erin signs in over
    BOSH through it, and frank's console, through it as well, lists her
    session with the client's address (127.0.0.2), not the proxy's."""
    ns = "http://jabber.org/protocol/httpbind"
    xml = {"Content-Type": "text/xml; charset=utf-8"}

    def bosh(body):
        r, data = https(appliance, "POST", "/http-bind", body, xml)
        assert r.status == 200, (r.status, data)
        return data.decode()

    first = bosh("<body rid='10' wait='5' hold='1' to='example.com' "
                 "ver='1.11' xmpp:version='1.0' xmlns='%s' "
                 "xmlns:xmpp='urn:xmpp:xbosh'/>" % ns)
    sid = first.split("sid='", 1)[1].split("'", 1)[0]
    auth = base64.b64encode(b"\0erin\0erin-pw").decode()
    assert "<success" in bosh(
        "<body rid='11' sid='%s' xmlns='%s'><auth xmlns='urn:ietf:params:"
        "xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth></body>"
        % (sid, ns, auth))
    bosh("<body rid='12' sid='%s' xmpp:restart='true' xmlns='%s' "
         "xmlns:xmpp='urn:xmpp:xbosh'/>" % (sid, ns))
    assert "<jid>erin@example.com/one-port</jid>" in bosh(
        "<body rid='13' sid='%s' xmlns='%s'><iq type='set' id='b' "
        "xmlns='jabber:client'><bind xmlns='urn:ietf:params:xml:ns:"
        "xmpp-bind'><resource>one-port</resource></bind></iq></body>"
        % (sid, ns))

    r, data = https(appliance, "POST", "/admin/api/signin",
                    json.dumps({"user": "frank", "password": "frank-pw"}),
                    {"Content-Type": "application/json"})
    assert r.status == 200, data
    cookie = [v.split(";")[0] for k, v in r.getheaders()
              if k.lower() == "set-cookie"
              and v.startswith("conclave_admin=")][0]
    r, data = https(appliance, "GET", "/admin/api/sessions",
                    headers={"Cookie": cookie})
    assert r.status == 200, data
    mine = [(s["ip"], s["transport"]) for s in json.loads(data)["sessions"]
            if s["jid"] == "erin@example.com"
            and s["resource"] == "one-port"]
    assert mine == [("127.0.0.2", "bosh")], data
    bosh("<body rid='14' sid='%s' type='terminate' xmlns='%s'/>"
         % (sid, ns))
    rows = signins(appliance, "erin@example.com", "127.0.0.2")
    assert rows[0][1] == "bosh"


def test_garbage_instead_of_a_client_hello_is_closed(appliance):
    s = socket.create_connection(("127.0.0.1", appliance.nginx.extra_port),
                                 timeout=10)
    s.sendall(b"\x16\x03\x01\x00\x05hello" + b"\x00" * 64)
    s.settimeout(10)
    try:
        while s.recv(4096):
            pass
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    # the appliance is still serving
    c = RawTCP(appliance.nginx.extra_port, tls=True, alpn=["xmpp-client"])
    c.login("carol", tls=False)
    c.close()


@pytest.mark.parametrize("alpn", ["xmpp-client", "http/1.1"],
                         ids=["xmpp", "websocket"])
def test_slow_reader_behind_the_one_port_is_cut(make_appliance, alpn):
    """A client on the one port that stops reading is cut off at
    conclave_max_output like one on its own port: the stream proxy in
    front buffers a bounded amount (proxy_buffer_size and the sockets),
    so the backlog still builds up in the session behind it."""
    app = make_appliance(extra_stream=APPLIANCE_EXTRA_STREAM,
                         extra_http=APPLIANCE_EXTRA_HTTP
                         + "\n    conclave_max_output 64k;\n")
    if alpn == "xmpp-client":
        slow = RawTCP(app.nginx.extra_port, tls=True, alpn=[alpn],
                      rcvbuf=4096)
    else:
        slow = RawWS(app.nginx.extra_port, tls=True, alpn=[alpn])
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.login("bob", resource="slow")
    fast = RawTCP(app.nginx.xmpps_port, tls=True)
    fast.login("alice", resource="fast")
    body = "x" * 4000

    def bob_gone():
        return not any(s["jid"] == "bob@example.com"
                       for s in status(app)["sessions"])

    assert not bob_gone()
    sent = 0
    for i in range(5000):
        try:
            fast.send("<message to='bob@example.com/slow' type='chat'>"
                      "<body>%d %s</body></message>" % (i, body))
        except OSError:
            break               # alice's own bounces cut her too
        sent += 1
        if i % 100 == 99 and bob_gone():
            break
    deadline = time.monotonic() + 20
    while not bob_gone() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert bob_gone(), "the slow reader was never cut off (%d sent)" % sent
    assert ("output backlog over 65536 bytes, closing slow client"
            in app.nginx.error_log())
    slow.sock.close()
    fast.sock.close()
