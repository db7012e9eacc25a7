"""XMPP over TCP (RFC 6120) through nginx's stream module: STARTTLS on
one port (mandatory here: plaintext auth is off), direct TLS (XEP-0368)
on another, with Debian's slixmpp as the real client, mixed with a
WebSocket user; and the bad input a real client never sends.
"""

import os
import socket
import ssl
import time

import pytest

from chathelp import status, worker_of
from rawtcp import RawTCP

APPLIANCE_PLAINTEXT_AUTH = False     # TLS before authentication
APPLIANCE_TLS = True                 # wss:// for the WebSocket user


@pytest.mark.parametrize("direct", [False, True],
                         ids=["starttls", "direct-tls"])
def test_signin_chat_disconnect(appliance, pool, direct):
    port = appliance.nginx.xmpps_port if direct else appliance.nginx.xmpp_port
    a = pool.client("alice@example.com/tcp-a", "alice-pw", port, direct)
    b = pool.client("bob@example.com/tcp-b", "bob-pw", port, direct)
    assert a.secure and b.secure
    for i in range(5):
        body = "over tcp %s %d \u00e9\U0001F600" % (direct, i)
        a.message("bob@example.com/tcp-b", body, id="tcp%d" % i)
        m = b.wait_message(lambda m: m["body"] == body)
        assert m["from"] == "alice@example.com/tcp-a"
    b.message("alice@example.com", "back")
    a.wait_message(lambda m: m["body"] == "back")
    a.disconnect()
    b.disconnect()

    # the audit trail names the transport
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        n = appliance.mariadb.query(
            "SELECT COUNT(*) FROM audit_record WHERE event='message' AND "
            "transport='tcp' AND stanza_id LIKE 'tcp%'",
            database="conclave")[0][0]
        if int(n) >= 5 * (2 if direct else 1):
            break
        time.sleep(0.2)
    assert int(n) >= 5


def test_wrong_password_over_tcp(appliance, pool):
    c = pool.client("carol@example.com/x", "nope",
                    appliance.nginx.xmpp_port, connect=False)
    assert c.connect() is False


def test_mixed_transports_across_workers(appliance, pool, clients):
    """A TCP user and a WebSocket user in one conversation, on different
    workers (BOSH joins when it exists)."""
    for _ in range(30):
        a = pool.client("alice@example.com/mix-%d" % _, "alice-pw",
                        appliance.nginx.xmpp_port)
        w = clients("stanza")
        ev = w.connect(appliance.ws_url, "bob", "bob-pw", insecure=True)
        assert ev["ev"] == "online", ev
        if worker_of(appliance, a.jid) != worker_of(appliance, ev["jid"]):
            break
        a.disconnect()
        w.disconnect()
    else:
        pytest.fail("never got the two users onto different workers")
    w.presence()
    a.message(ev["jid"], "tcp to ws")
    m = w.wait_for(lambda e: e["ev"] == "message"
                   and e.get("body") == "tcp to ws", 10)
    assert m["from"] == a.jid
    w.message(a.jid, "ws to tcp")
    a.wait_message(lambda m: m["body"] == "ws to tcp")


def test_stanzas_split_and_batched(appliance):
    """The incremental parser: a stanza a byte at a time, and several in
    one packet, on a stream that gives its parser back between them."""
    c = RawTCP(appliance.nginx.xmpps_port, tls=True)
    jid = c.login("alice", resource="split")
    c.send("<presence/>")
    # the echo (RFC 6121 4.2.2), with the server's XEP-0153 <x/> in it
    c.expect(r"<presence[^>]*(/>|>.*?</presence>)")
    msg = ("<message to='%s' id='split1' type='chat'><body>one byte "
           "at a time &amp; ü</body></message>" % jid).encode()
    for i in range(len(msg)):
        c.send(msg[i:i + 1])
        time.sleep(0.002)
    r = c.expect(r"id='split1'.*?</message>")
    assert "one byte at a time &amp; ü" in r
    c.send("".join("<message to='%s' id='batch%d' type='chat'><body>b%d"
                   "</body></message>" % (jid, i, i) for i in range(20)))
    for i in range(20):
        c.expect(r"id='batch%d'" % i)
    c.close()


def test_other_stream_prefix_and_clean_close(appliance):
    """Any prefix may name the streams namespace; the client's end tag
    ends the stream and the server answers with its own."""
    hdr = ("<?xml version='1.0'?><s:stream to='example.com' "
           "xmlns='jabber:client' xmlns:s='http://etherx.jabber.org/"
           "streams' version='1.0'>")
    c = RawTCP(appliance.nginx.xmpps_port, tls=True, header=hdr)
    jid = c.login("bob", resource="prefix")
    c.send("<message to='%s' id='p1' type='chat'><body>x</body></message>"
           % jid)
    c.expect(r"id='p1'")
    c.send("</s:stream>")
    c.expect(r"</stream:stream>")
    assert c.closed_by_server()


def test_tls_reader_that_lags_gets_everything(make_appliance):
    """Writes TLS could not take whole are retried from the session's
    backlog: a reader that catches up late receives every stanza intact
    (OpenSSL's moving-write-buffer mode; without it the retry fails).
    8 MB is more than the kernel's socket buffers hold, so the server's
    writes do back up."""
    app = make_appliance(extra_http="conclave_max_output 32m;",
                         plaintext_auth=False)
    slow = RawTCP(app.nginx.xmpps_port, tls=True, rcvbuf=4096)
    jid = slow.login("carol", resource="lag")
    fast = RawTCP(app.nginx.xmpps_port, tls=True)
    fast.login("erin")
    body = "y" * 2000
    n = 4000
    for i in range(n):
        fast.send("<message to='%s' id='lag%d' type='chat'><body>%d %s"
                  "</body></message>" % (jid, i, i, body))
    time.sleep(2)          # the server's writes back up meanwhile
    for i in range(n):
        assert slow.expect(r"id='lag%d'[^>]*><body>%d y{2000}</body>"
                           % (i, i), timeout=20)
    assert "bad write retry" not in app.nginx.error_log()
    slow.close()
    fast.close()


# --------------------------------------------------------------- bad input

def test_features_before_tls_offer_only_starttls(appliance):
    c = RawTCP(appliance.nginx.xmpp_port)
    feats = c.open()
    assert "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/>" \
        in feats
    assert "mechanisms" not in feats
    c.close()


def test_plaintext_auth_before_starttls_is_refused(appliance):
    c = RawTCP(appliance.nginx.xmpp_port)
    c.open()
    r = c.auth("alice", "alice-pw")
    assert "<encryption-required/>" in r, r
    c.close()


def test_plaintext_after_starttls_is_dropped(appliance):
    """Bytes sent in the clear behind <starttls/> (the CVE-2011-0411
    injection) must not be acted on after the handshake."""
    c = RawTCP(appliance.nginx.xmpp_port)
    c.open()
    msg = __import__("base64").b64encode(b"\0alice\0alice-pw").decode()
    c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
           "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
           "mechanism='PLAIN'>%s</auth>" % msg)
    c.expect(r"<proceed[^>]*/>")
    c.wrap_tls()
    feats = c.open()
    # a fresh, unauthenticated stream: the injected <auth/> never ran
    assert "<mechanism>PLAIN</mechanism>" in feats
    assert "<bind" not in feats
    c.close()


def test_tls_older_than_1_2_is_refused_after_starttls(appliance):
    """RFC 7590 section 3.1: TLS 1.2 or later after STARTTLS
    (conclave_starttls_protocols' default).  Direct TLS and HTTPS take
    nginx's ssl_protocols, which the package sets in its hardening
    files: test_setup.py checks those on an installed configuration."""
    import warnings

    def handshake(version):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")   # let the client offer 1.1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ctx.maximum_version = version
        c = RawTCP(appliance.nginx.xmpp_port)
        c.open()
        c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        c.expect(r"<proceed[^>]*/>")
        try:
            with ctx.wrap_socket(c.sock) as t:
                return t.version()
        finally:
            c.sock.close()

    assert handshake(ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    with pytest.raises(ssl.SSLError) as e:
        handshake(ssl.TLSVersion.TLSv1_1)
    assert "PROTOCOL_VERSION" in str(e.value).upper(), e.value


def test_starttls_twice_fails(appliance):
    c = RawTCP(appliance.nginx.xmpps_port, tls=True)
    feats = c.open()
    assert "starttls" not in feats
    c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    c.expect(r"<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    c.expect(r"</stream:stream>")
    c.close()


def test_wrong_stream_namespace(appliance):
    c = RawTCP(appliance.nginx.xmpp_port)
    c.send("<?xml version='1.0'?><stream:stream to='example.com' "
           "xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/"
           "streams' version='1.0'>")
    assert "<invalid-namespace" in c.expect(r"</stream:stream>")
    c.close()
    c = RawTCP(appliance.nginx.xmpp_port)
    c.send("<stream xmlns='jabber:client' version='1.0'>")
    assert "<invalid-namespace" in c.expect(r"</stream:stream>")
    c.close()


def test_not_well_formed_over_tcp(appliance):
    c = RawTCP(appliance.nginx.xmpp_port)
    c.open()
    c.send("<presence><</presence>")
    assert "<not-well-formed" in c.expect(r"</stream:stream>")
    c.close()


@pytest.mark.parametrize("where", ["direct-tls", "after-proceed"])
def test_tls_garbage_flood(appliance, pool, where):
    """Garbage instead of a TLS handshake closes that connection only;
    the server keeps serving real clients."""
    for _ in range(20):
        if where == "direct-tls":
            s = socket.create_connection(
                ("127.0.0.1", appliance.nginx.xmpps_port), timeout=5)
        else:
            c = RawTCP(appliance.nginx.xmpp_port)
            c.open()
            c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            c.expect(r"<proceed[^>]*/>")
            s = c.sock
        try:
            s.sendall(os.urandom(4096) + b"\x16\x03\x01\xff\xff" * 200)
            s.settimeout(5)
            while s.recv(65536):
                pass
        except OSError:
            pass            # reset: just as good as a close
        s.close()
    a = pool.client("alice@example.com/after-flood", "alice-pw",
                    appliance.nginx.xmpps_port, direct_tls=True)
    assert a.secure


def test_idle_tcp_client_times_out_before_auth(make_appliance):
    app = make_appliance(extra_http="conclave_auth_timeout 1s;",
                         plaintext_auth=False)
    c = RawTCP(app.nginx.xmpp_port)
    c.open()
    r = c.expect(r"</stream:stream>", timeout=10)
    assert "<connection-timeout" in r
    c.close()


def test_slow_tcp_reader_is_disconnected(make_appliance):
    app = make_appliance(extra_http="conclave_max_output 64k;",
                         plaintext_auth=False)
    slow = RawTCP(app.nginx.xmpps_port, tls=True)
    slow.login("bob", resource="slow")
    slow.send("<presence/>")
    fast = RawTCP(app.nginx.xmpps_port, tls=True)
    fast.login("alice")
    body = "x" * 4000

    def bob_gone():
        return not any(s["jid"] == "bob@example.com"
                       for s in status(app)["sessions"])

    # alice never reads either: once bob is cut, her bounces can cut her
    # too, and her socket then fails; bob's state is what counts
    for i in range(2000):
        try:
            fast.send("<message to='bob@example.com/slow' type='chat'>"
                      "<body>%d %s</body></message>" % (i, body))
        except OSError:
            break
        if i % 100 == 99 and bob_gone():
            break
    deadline = time.monotonic() + 10
    while not bob_gone() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert bob_gone(), "the slow reader was never cut off"
    assert "output backlog over" in app.nginx.error_log()
    slow.close()
    fast.close()
