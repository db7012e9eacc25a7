"""XMPP over BOSH (XEP-0124, XEP-0206) at /http-bind: strophe.js in node
signs in and chats with a WebSocket user and a TCP user, and raw
requests with http.client check rid ordering, replay and the terminal
conditions with their HTTP status (XEP-0124 section 17: HTTP 200 for a
client that sent "ver", the deprecated HTTP errors for a legacy one).
"""

import base64
import http.client
import json
import os
import re
import signal
import threading
import time
import urllib.request
import xml.etree.ElementTree as ET

import pytest

from rawbosh import NS, XBOSH, post
from slixclient import SlixPool
from xmppclient import NodeClient, node_available

APPLIANCE_WORKERS = 2
APPLIANCE_EXTRA_HTTP = """
    conclave_bosh_max_body 16k;
    conclave_bosh_cors_origin https://chat.example.com;
"""

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def parse(data):
    return ET.fromstring(data)


# XEP-0124 section 17.1: the deprecated HTTP status of each condition
LEGACY_STATUS = {"item-not-found": 404, "bad-request": 400}


def assert_terminates(st, data, condition, legacy=False):
    """The session's end with `condition`: HTTP 200 for a client that
    sent 'ver' (section 17.2), the condition's HTTP error for a legacy
    client (17.1); the terminating body either way."""
    assert st == (LEGACY_STATUS.get(condition, 403) if legacy else 200), \
        (st, data)
    b = parse(data)
    assert (b.get("type"), b.get("condition")) == ("terminate", condition), \
        data


def worker_of(app, jid):
    bare, _, res = jid.partition("/")
    with urllib.request.urlopen(app.status_url, timeout=5) as r:
        for s in json.loads(r.read())["sessions"]:
            if s["jid"] == bare and s["resource"] == res:
                return s["worker_pid"]
    return None


class Raw:
    """A minimal BOSH client: one request at a time unless told."""

    def __init__(self, app, rid=1000, wait=5, hold=1, legacy=False):
        """legacy: no 'ver' in the session creation request."""
        self.app = app
        self.rid = rid
        st, hd, data = post(app, "<body rid='%d' wait='%d' hold='%d' "
                            "to='example.com' xml:lang='en' %s"
                            "xmpp:version='1.0' xmlns='%s' xmlns:xmpp='%s'/>"
                            % (rid, wait, hold,
                               "" if legacy else "ver='1.11' ", NS, XBOSH))
        assert st == 200, data
        self.headers = hd
        self.first = parse(data)
        self.sid = self.first.get("sid")

    def body(self, inner="", rid=None, attrs=""):
        if rid is None:
            self.rid += 1
            rid = self.rid
        return ("<body rid='%d' sid='%s' xmlns='%s' xmlns:xmpp='%s' %s>%s"
                "</body>" % (rid, self.sid, NS, XBOSH, attrs, inner))

    def send(self, inner="", rid=None, attrs=""):
        st, hd, data = post(self.app, self.body(inner, rid, attrs))
        return st, data

    def login(self, user, pw, resource):
        auth = base64.b64encode(("\0%s\0%s" % (user, pw)).encode()).decode()
        st, data = self.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'"
                             " mechanism='PLAIN'>%s</auth>" % auth)
        assert st == 200 and b"<success" in data, data
        st, data = self.send(attrs="xmpp:restart='true'")
        assert st == 200 and b"urn:ietf:params:xml:ns:xmpp-bind" in data
        st, data = self.send("<iq type='set' id='b1' xmlns='jabber:client'>"
                             "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                             "<resource>%s</resource></bind></iq>" % resource)
        assert st == 200 and b"<jid>" in data, data


def test_session_creation(appliance):
    c = Raw(appliance)
    b = c.first
    assert b.tag == "{%s}body" % NS
    assert re.fullmatch(r"[0-9a-f]{56}", c.sid)
    assert b.get("wait") == "5" and b.get("hold") == "1"
    assert b.get("requests") == "2" and b.get("inactivity") == "60"
    assert b.get("ver") == "1.11" and b.get("from") == "example.com"
    assert b.get("authid") and b.get("polling")
    assert b.get("{%s}version" % XBOSH) == "1.0"
    feats = b.find("{http://etherx.jabber.org/streams}features")
    assert feats is not None and "PLAIN" in ET.tostring(feats).decode()
    assert c.headers["content-type"] == "text/xml; charset=utf-8"
    assert c.headers["cache-control"] == "no-store"
    assert c.headers["access-control-allow-origin"] == \
        "https://chat.example.com"
    st, data = c.send(attrs="type='terminate'")
    assert st == 200 and b"type='terminate'" in data


def test_raw_signin_chat_terminate_audit(appliance):
    a = Raw(appliance, rid=2000)
    a.login("alice", "alice-pw", "raw-bosh")
    b = Raw(appliance, rid=3000)
    b.login("bob", "bob-pw", "raw-bosh")
    # bob holds a request; alice's message answers it
    got = {}

    def hold():
        got["r"] = b.send()

    t = threading.Thread(target=hold)
    t.start()
    time.sleep(0.3)
    st, _ = a.send("<message to='bob@example.com/raw-bosh' type='chat' "
                   "id='bosh-raw-1' xmlns='jabber:client'><body>hi bob"
                   "</body></message>")
    assert st == 200
    t.join(10)
    st, data = got["r"]
    assert st == 200 and b"hi bob" in data, data
    for c in (a, b):
        st, data = c.send(attrs="type='terminate'")
        assert st == 200 and b"type='terminate'" in data
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ends = [json.loads(p)["params"]["reason"] for (p,) in
                appliance.mariadb.query(
                    "SELECT payload FROM audit_record WHERE "
                    "event='session_end' AND transport='bosh' AND "
                    "actor_user IN ('alice@example.com', 'bob@example.com')",
                    database="conclave")]
        if ends.count("client-closed") >= 2:
            break
        time.sleep(0.2)
    assert ends.count("client-closed") >= 2, ends
    n = appliance.mariadb.query(
        "SELECT COUNT(*) FROM audit_record WHERE event='message' AND "
        "transport='bosh' AND stanza_id='bosh-raw-1'",
        database="conclave")[0][0]
    assert int(n) >= 1


def test_wait_expires_with_empty_body(appliance):
    c = Raw(appliance, wait=1)
    t0 = time.monotonic()
    st, data = c.send()
    assert st == 200 and parse(data).tag == "{%s}body" % NS
    assert 0.5 < time.monotonic() - t0 < 5
    c.send(attrs="type='terminate'")


def test_hold_answers_the_oldest_and_carries_concurrent_requests(
        appliance):
    """XEP-0124 section 7.1: the server may lower "hold" (asked 5, it
    answers 1, with "requests" one more, section 11) and "wait" (asked
    3600, it answers 60, conclave_bosh_max_wait's default); with "hold"
    requests held, a newer one makes the server answer the oldest at
    once, empty, and hold the newer.  Two requests of one session at
    once: one held, one carrying a stanza; the stanza is delivered
    (here to the session itself, across the two workers' hand-offs) on
    one of the two, and neither waits for "wait"."""
    c = Raw(appliance, rid=4000, wait=3600, hold=5)
    assert c.first.get("hold") == "1" and c.first.get("requests") == "2"
    # "wait" too: the smaller of the client's and conclave_bosh_max_wait
    assert c.first.get("wait") == "60"
    c.login("frank", "frank-pw", "holder")
    got = {}

    def send(name, rid, inner=""):
        got[name] = post(appliance, c.body(inner, rid=rid))

    first = threading.Thread(target=send, args=("first", c.rid + 1))
    first.start()
    first.join(1.0)
    assert first.is_alive()               # held: nothing to say yet
    second = threading.Thread(target=send, args=("second", c.rid + 2))
    second.start()
    first.join(10)                        # answered at once, wait is 60
    assert not first.is_alive()
    st, _, data = got["first"]
    assert st == 200 and len(parse(data)) == 0, data
    assert second.is_alive()              # now the one held
    third = threading.Thread(target=send, args=(
        "third", c.rid + 3,
        "<message to='frank@example.com/holder' type='chat' id='held1' "
        "xmlns='jabber:client'><body>to the held one</body></message>"))
    third.start()
    # if the message is routed before the request is counted, it
    # answers the held request; otherwise the held request is answered
    # empty (one request over "hold") and the message answers the newer
    # one.  Either way nothing waits for "wait".
    second.join(10)
    assert not second.is_alive()
    st, _, data = got["second"]
    assert st == 200, data
    if b"to the held one" not in data:
        assert len(parse(data)) == 0, data
        third.join(10)
        assert not third.is_alive()
        st, _, data = got["third"]
        assert st == 200 and b"to the held one" in data, data
    c.rid += 3
    st, data = c.send(attrs="type='terminate'")
    assert st == 200 and b"type='terminate'" in data
    third.join(10)
    assert not third.is_alive() and got["third"][0] == 200
    if b"to the held one" in got["second"][2]:
        assert b"to the held one" not in got["third"][2]


def test_replayed_rid_returns_cached_response(appliance):
    c = Raw(appliance, wait=1)
    body = c.body()
    st1, _, d1 = post(appliance, body)
    st2, _, d2 = post(appliance, body)
    assert st1 == st2 == 200 and d1 == d2
    c.send(attrs="type='terminate'")


def test_out_of_order_rid_waits_for_missing_one(appliance):
    c = Raw(appliance, wait=2)
    later = {}

    def send_later():
        later["r"] = post(appliance, c.body(rid=c.rid + 2))

    t = threading.Thread(target=send_later)
    t.start()
    time.sleep(0.3)
    assert t.is_alive()           # rid+2 waits for rid+1
    st, _, _ = post(appliance, c.body(rid=c.rid + 1))
    assert st == 200
    t.join(10)
    assert later["r"][0] == 200
    c.rid += 2
    c.send(attrs="type='terminate'")


@pytest.mark.parametrize("legacy", [False, True], ids=["ver", "legacy"])
def test_rid_out_of_window(appliance, legacy):
    c = Raw(appliance, legacy=legacy)
    st, data = c.send(rid=c.rid + 50)
    assert_terminates(st, data, "item-not-found", legacy)
    # the session is gone: a sid nobody knows, HTTP 200 for everyone
    st, data = c.send()
    assert_terminates(st, data, "item-not-found")


def test_requests_reach_the_owner_from_any_worker(appliance):
    """A connection per request: with two workers about half of them are
    accepted by the worker that does not own the session and handed to
    the owner over the inter-worker socket."""
    log = os.path.join(appliance.nginx.workdir, "logs", "error.log")
    with open(log) as f:
        before = f.read().count("BOSH request handed to worker")
    c = Raw(appliance, wait=1)
    c.login("erin", "erin-pw", "hop")
    for i in range(30):
        st, data = c.send("<message to='erin@example.com/hop' type='chat' "
                          "id='hop%d' xmlns='jabber:client'><body>hop %d"
                          "</body></message>" % (i, i))
        assert st == 200
        if b"hop %d<" % i not in data:     # or in the next answer
            st, data = c.send()
            assert st == 200 and b"hop %d<" % i in data, data
    with open(log) as f:
        after = f.read().count("BOSH request handed to worker")
    assert after - before >= 3
    assert c.send(attrs="type='terminate'")[0] == 200


def test_graceful_stop_with_a_forwarded_request_held(make_appliance):
    """A held request that a worker forwarded to the session's owner is
    answered or closed when nginx stops gracefully, not left open (nginx
    reports such a socket with an [alert] and aborts the worker)."""
    app = make_appliance(workers=2)
    c = Raw(app, rid=100, wait=5)
    c.login("alice", "alice-pw", "held")
    log = os.path.join(app.nginx.workdir, "logs", "error.log")

    def handed():
        with open(log) as f:
            return f.read().count("BOSH request handed to worker")

    got = {}
    for _ in range(30):
        before = handed()
        got.clear()

        def hold():
            try:
                got["r"] = post(app, c.body(), timeout=30)
            except (OSError, http.client.HTTPException) as e:
                got["r"] = e
        t = threading.Thread(target=hold)
        t.start()
        time.sleep(0.5)
        if handed() > before and t.is_alive():
            break                   # held in the worker that forwarded it
        t.join(10)
    else:
        pytest.fail("no request was ever held in the forwarding worker")

    app.nginx.stop()
    t.join(15)
    assert not t.is_alive()
    assert "r" in got               # an answer, or the connection closed
    with open(log) as f:
        text = f.read()
    assert "[alert]" not in text, text[-2000:]


@pytest.mark.parametrize("legacy", [False, True], ids=["ver", "legacy"])
def test_old_rid_not_cached(appliance, legacy):
    c = Raw(appliance, wait=1, legacy=legacy)
    for _ in range(4):
        assert c.send()[0] == 200
    st, data = c.send(rid=c.rid - 3)
    assert_terminates(st, data, "item-not-found", legacy)


@pytest.mark.parametrize("legacy", [False, True], ids=["ver", "legacy"])
def test_too_many_requests(appliance, legacy):
    c = Raw(appliance, wait=3, legacy=legacy)
    results = []

    def one(rid):
        results.append(post(appliance, c.body(rid=rid)))

    # rid+1 is held, rid+3 waits for rid+2: with rid+2 that would be
    # three requests at once where "requests" is 2 (XEP-0124 11)
    threads = [threading.Thread(target=one, args=(c.rid + 1,)),
               threading.Thread(target=one, args=(c.rid + 3,))]
    for t in threads:
        t.start()
        time.sleep(0.3)
    st, _, data = post(appliance, c.body(rid=c.rid + 2))
    assert_terminates(st, data, "policy-violation", legacy)
    for t in threads:
        t.join(10)


def test_polling_faster_than_polling_is_overactivity(appliance):
    """XEP-0124 section 12: in a polling session (hold 0) two empty
    requests in a row less than "polling" seconds apart, the first
    answered without payload, end the session with policy-violation
    (HTTP 403 to a legacy client).  A request with a payload in between,
    or one after the interval, is fine; a session that holds requests is
    never a poller."""
    def poller(legacy=False):
        st, _, data = post(appliance, "<body rid='100' wait='5' hold='0' "
                           "to='example.com' %sxmpp:version='1.0' "
                           "xmlns='%s' xmlns:xmpp='%s'/>"
                           % ("" if legacy else "ver='1.11' ", NS, XBOSH))
        assert st == 200
        b = parse(data)
        assert b.get("hold") == "0" and b.get("polling") == "2"
        c = Raw.__new__(Raw)
        c.app, c.rid, c.sid = appliance, 100, b.get("sid")
        return c

    for legacy in (False, True):
        c = poller(legacy)
        assert c.send()[0] == 200           # answered at once: hold 0
        st, data = c.send()
        assert_terminates(st, data, "policy-violation", legacy)
        st, data = c.send()                 # the session is gone
        assert_terminates(st, data, "item-not-found")

    c = poller()
    assert c.send()[0] == 200
    # a payload in between (a SASL failure, which the stream survives):
    # not two empty requests in a row
    st, data = c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
                      "mechanism='DIGEST-MD5'/>")
    assert st == 200
    st, data = c.send()
    assert st == 200 and b"terminate" not in data
    time.sleep(2.2)                          # "polling" seconds apart
    assert c.send()[0] == 200
    assert c.send(attrs="type='terminate'")[0] == 200

    # hold 1: empty requests as fast as the answers come
    c = Raw(appliance, wait=1)
    for _ in range(3):
        assert c.send()[0] == 200
    assert c.send(attrs="type='terminate'")[0] == 200


def test_wrong_sid(appliance):
    """A sid that names no session: HTTP 200 with item-not-found, as the
    server cannot know whether a legacy client sent it."""
    st, hd, data = post(appliance, "<body rid='5' sid='nosuchsession' "
                        "xmlns='%s'/>" % NS)
    assert st == 200
    assert data == ("<body type='terminate' condition='item-not-found' "
                    "xmlns='%s'/>" % NS).encode()
    # well-formed but forged: right shape, wrong key; the real session
    # is a legacy one, and the forger learns nothing from the status
    c = Raw(appliance, legacy=True)
    forged = c.sid[:24] + ("0" * 32 if c.sid[24:] != "0" * 32 else "1" * 32)
    st, _, data = post(appliance, "<body rid='%d' sid='%s' xmlns='%s'/>"
                       % (c.rid + 1, forged, NS))
    assert_terminates(st, data, "item-not-found")
    assert c.send(attrs="type='terminate'")[0] == 200


@pytest.mark.parametrize("body", [
    "<body rid='1' xmlns='%s'" % NS,                     # not well-formed
    "<html rid='1' xmlns='%s'/>" % NS,                   # wrong root
    "<body rid='1' xmlns='jabber:client'/>",             # wrong namespace
    "<body xmlns='%s'/>" % NS,                           # no rid
    "<body rid='x1' xmlns='%s'/>" % NS,                  # bad rid
    "<!DOCTYPE body [<!ENTITY a 'b'>]><body rid='1' xmlns='%s'>&a;</body>"
    % NS,                                                # DTD
    "",                                                  # empty
], ids=["not-well-formed", "root", "namespace", "no-rid", "bad-rid", "dtd",
        "empty"])
def test_bad_request(appliance, body):
    st, hd, data = post(appliance, body)
    assert_terminates(st, data, "bad-request")
    assert hd["content-type"] == "text/xml; charset=utf-8"
    # error answers are no more cacheable than the others (section 8)
    assert hd["cache-control"] == "no-store"
    assert hd["access-control-allow-origin"] == "https://chat.example.com"


def test_oversized_body(appliance):
    pad = "x" * (17 * 1024)
    st, hd, data = post(appliance, "<body rid='1' xmlns='%s'>%s</body>"
                        % (NS, pad))
    assert_terminates(st, data, "policy-violation")
    # chunked, so the length is only known after reading
    conn = http.client.HTTPConnection("127.0.0.1", appliance.nginx.port,
                                      timeout=10)
    conn.putrequest("POST", "/http-bind")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    payload = ("<body rid='1' xmlns='%s'>%s</body>" % (NS, pad)).encode()
    for i in range(0, len(payload), 4096):
        chunk = payload[i:i + 4096]
        conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    conn.send(b"0\r\n\r\n")
    r = conn.getresponse()
    assert_terminates(r.status, r.read(), "policy-violation")
    conn.close()


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_wrong_method(appliance, method):
    st, _, _ = post(appliance, None if method == "GET" else "<x/>",
                    method=method)
    assert st == 405


def test_cors_preflight(appliance):
    st, hd, data = post(appliance, None, method="OPTIONS",
                        headers={"Origin": "https://chat.example.com",
                                 "Access-Control-Request-Method": "POST"})
    assert st == 200
    assert hd["access-control-allow-origin"] == "https://chat.example.com"
    assert "POST" in hd["access-control-allow-methods"]
    assert "content-type" in hd["access-control-allow-headers"].lower()


def test_no_cors_unless_configured(make_appliance):
    """conclave_bosh_cors_origin unset (the default): no CORS header on
    any answer, and a preflight is a method the location refuses, so a
    page from another origin cannot use the BOSH endpoint."""
    app = make_appliance(workers=1)
    c = Raw(app, rid=100, wait=1)
    assert c.headers["cache-control"] == "no-store"
    assert "access-control-allow-origin" not in c.headers
    st, hd, _ = post(app, None, method="OPTIONS",
                     headers={"Origin": "https://chat.example.com",
                              "Access-Control-Request-Method": "POST"})
    assert st == 405
    assert not [h for h in hd if h.startswith("access-control-")], hd
    st, hd, data = post(app, "<body rid='1' xmlns='%s'" % NS)
    assert_terminates(st, data, "bad-request")
    assert "access-control-allow-origin" not in hd
    assert c.send(attrs="type='terminate'")[0] == 200


def test_https_signs_in_where_plaintext_auth_is_off(make_appliance):
    """As the demo and the package deploy it: BOSH over HTTPS, with SASL
    PLAIN refused on unencrypted transports (conclave_allow_plaintext_auth
    off, the default).  Over HTTPS the session counts as encrypted: PLAIN
    is offered, the user signs in, binds and gets a message from a TCP
    user.  Over plain HTTP the same configuration ends the session at
    its creation, before any password is sent (policy-violation, as
    WebSocket does at <open/>)."""
    app = make_appliance(tls=True, plaintext_auth=False, workers=2)
    c = Raw(app, rid=100, wait=5)
    mechs = c.first.find("{http://etherx.jabber.org/streams}features")
    assert "PLAIN" in ET.tostring(mechs).decode()
    c.login("alice", "alice-pw", "https")
    with SlixPool() as pool:
        bob = pool.client("bob@example.com/tcp", "bob-pw",
                          app.nginx.xmpps_port, direct_tls=True)
        bob.message("alice@example.com/https", "over https")
        got = b""
        deadline = time.monotonic() + 20
        while b"over https" not in got and time.monotonic() < deadline:
            st, data = c.send()
            assert st == 200, data
            got += data
        assert b"over https" in got, got
    assert c.send(attrs="type='terminate'")[0] == 200

    # plain HTTP: refused at session creation, as WebSocket is at <open/>
    plain = make_appliance(plaintext_auth=False, workers=1)
    st, _, data = post(plain, "<body rid='100' wait='5' hold='1' "
                       "to='example.com' ver='1.11' xmpp:version='1.0' "
                       "xmlns='%s' xmlns:xmpp='%s'/>" % (NS, XBOSH))
    b = parse(data)
    assert st == 200 and b.get("type") == "terminate", data
    assert b.get("condition") == "remote-stream-error"
    assert b"<policy-violation" in data and b"requires TLS" in data
    assert b"PLAIN" not in data


def test_stream_error_terminates(appliance):
    c = Raw(appliance)
    st, data = c.send("<message xmlns='jabber:client' to='bob@example.com'>"
                      "<body>before auth</body></message>")
    assert st == 200
    b = parse(data)
    assert b.get("type") == "terminate"
    assert b.get("condition") == "remote-stream-error"
    assert b"not-authorized" in data


@pytest.mark.skipif(not node_available("strophe"),
                    reason="node or npm strophe.js missing")
def test_strophe_chats_with_websocket_and_tcp_users(appliance):
    """A real BOSH client (strophe.js) in one conversation with a
    WebSocket user on the other worker and a TCP user."""
    url = "http://127.0.0.1:%d/http-bind" % appliance.nginx.port
    with NodeClient("strophe") as alice, SlixPool() as pool:
        ev = alice.connect(url, "alice", "alice-pw", resource="bosh",
                           timeout=20)
        assert ev["ev"] == "online", (ev, alice.stderr())
        assert ev["jid"] == "alice@example.com/bosh"
        # bob (WebSocket) on the other worker than alice's BOSH session
        for _ in range(20):
            bob = NodeClient("stanza")
            ev = bob.connect(appliance.nginx.ws_url, "bob", "bob-pw",
                             resource="ws")
            assert ev["ev"] == "online", ev
            if worker_of(appliance, "bob@example.com/ws") != \
                    worker_of(appliance, "alice@example.com/bosh"):
                break
            bob.disconnect()
            bob.close()
        assert worker_of(appliance, "bob@example.com/ws") != \
            worker_of(appliance, "alice@example.com/bosh")
        carol = pool.client("carol@example.com/tcp", "carol-pw",
                            appliance.nginx.xmpp_port)
        alice.presence()
        bob.presence()

        for i in range(5):
            alice.message("bob@example.com/ws", "bosh->ws %d" % i,
                          id="bosh-ws-%d" % i)
            bob.wait_for(lambda e: e["ev"] == "message"
                         and e["body"] == "bosh->ws %d" % i)
            bob.message("alice@example.com/bosh", "ws->bosh %d" % i)
            m = alice.wait_for(lambda e: e["ev"] == "message"
                               and e["body"] == "ws->bosh %d" % i)
            assert m["from"] == "bob@example.com/ws"

        alice.message("carol@example.com/tcp", "bosh->tcp \u00e9\U0001F600")
        m = carol.wait_message(lambda m: m["body"] ==
                               "bosh->tcp \u00e9\U0001F600")
        assert m["from"] == "alice@example.com/bosh"
        carol.message("alice@example.com/bosh", "tcp->bosh")
        alice.wait_for(lambda e: e["ev"] == "message"
                       and e["body"] == "tcp->bosh")
        # one conversation: carol writes to bob as well
        carol.message("bob@example.com/ws", "tcp->ws")
        bob.wait_for(lambda e: e["ev"] == "message"
                     and e["body"] == "tcp->ws")

        assert alice.disconnect()["ev"] == "offline"
        bob.disconnect()
        bob.close()
        carol.disconnect()

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        n = appliance.mariadb.query(
            "SELECT COUNT(*) FROM audit_record WHERE event='message' AND "
            "transport='bosh' AND stanza_id LIKE 'bosh-ws-%'",
            database="conclave")[0][0]
        if int(n) >= 5:
            break
        time.sleep(0.2)
    assert int(n) >= 5


@pytest.mark.skipif(not node_available("strophe"),
                    reason="node or npm strophe.js missing")
def test_strophe_learns_why_its_session_is_gone(make_appliance):
    """strophe.js sends 'ver', so a terminal condition comes to it with
    HTTP 200 (XEP-0124 section 17.2) and reaches the application as the
    connection's failure with its condition.  The worker that holds the
    session dies: strophe's next request names a session nobody has, and
    strophe reports item-not-found.  (With an HTTP 404 it would only say
    that it disconnected, with no condition.)"""
    app = make_appliance(workers=2)
    url = "http://127.0.0.1:%d/http-bind" % app.nginx.port
    with NodeClient("strophe") as alice:
        ev = alice.connect(url, "alice", "alice-pw", resource="lost",
                           timeout=20)
        assert ev["ev"] == "online", (ev, alice.stderr())
        pid = worker_of(app, "alice@example.com/lost")
        app.nginx.expect_alert(r"worker process %d exited on signal 9$"
                               % pid)
        os.kill(pid, signal.SIGKILL)
        # a request held by the other worker waits wait + 10 s for the
        # dead owner; strophe's wait is 10 s
        ev = alice.wait_for(lambda e: e["ev"] in ("error", "offline"),
                            timeout=40)
        assert ev == {"ev": "error", "phase": "connect",
                      "condition": "item-not-found"}, (ev, alice.stderr())
        ev = alice.wait_for(lambda e: e["ev"] == "offline", timeout=10)
        assert ev["by"] == "server"


def test_inactivity_ends_session(make_appliance):
    app = make_appliance(extra_http="conclave_bosh_max_inactivity 2s;")
    c = Raw(app, rid=100, wait=1)
    assert c.first.get("inactivity") == "2"
    c.login("alice", "alice-pw", "sleepy")
    time.sleep(3.5)
    st, data = c.send()
    assert_terminates(st, data, "item-not-found")
    deadline = time.monotonic() + 20
    reasons = []
    while time.monotonic() < deadline:
        reasons = [json.loads(p)["params"]["reason"] for (p,) in
                   app.mariadb.query(
                       "SELECT payload FROM audit_record WHERE "
                       "event='session_end' AND transport='bosh'",
                       database="conclave")]
        if "connection-timeout" in reasons:
            break
        time.sleep(0.2)
    assert "connection-timeout" in reasons


def test_output_over_limit_ends_session(make_appliance):
    """A BOSH client that stops polling: its queue is bounded by
    conclave_max_output, and over it the session ends."""
    app = make_appliance(extra_http="conclave_max_output 8k;", workers=1)
    a = Raw(app, rid=100, wait=1)
    a.login("alice", "alice-pw", "talker")
    b = Raw(app, rid=500, wait=1)
    b.login("bob", "bob-pw", "idle")
    for i in range(5):
        st, _ = a.send("<message to='bob@example.com/idle' type='chat' "
                       "xmlns='jabber:client'><body>%s</body></message>"
                       % (("flood %d " % i) * 40) * 8)
        assert st == 200, (i, _)
    st, data = b.send()
    assert_terminates(st, data, "item-not-found")
    log = os.path.join(app.nginx.workdir, "logs", "error.log")
    with open(log) as f:
        assert "BOSH output over 8192 bytes" in f.read()
    a.send(attrs="type='terminate'")


def test_pause(make_appliance):
    """XEP-0124 section 10: a pause answers every held request at once
    and stretches the inactivity limit; more than maxpause ends it."""
    app = make_appliance(extra_http="conclave_bosh_max_inactivity 2s;")
    c = Raw(app, rid=100, wait=5)
    assert c.first.get("maxpause") == "120"
    c.login("alice", "alice-pw", "pauser")
    held = {}

    def hold():
        held["r"] = post(app, c.body(rid=c.rid + 1))

    t = threading.Thread(target=hold)
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    st, data = c.send(rid=c.rid + 2, attrs="pause='4'")
    t.join(5)
    assert st == 200 and held["r"][0] == 200
    assert time.monotonic() - t0 < 2
    c.rid += 2
    time.sleep(3)                  # past inactivity, within the pause
    t0 = time.monotonic()
    st, data = c.send(attrs="pause='500'")
    assert st == 200
    b = parse(data)
    assert b.get("type") == "terminate"
    assert b.get("condition") == "policy-violation"
    assert time.monotonic() - t0 < 2


def test_large_body_never_touches_the_disk(make_appliance):
    """A body over nginx's default client_body_buffer_size (16k) but
    within conclave_bosh_max_body (256k by default) is read in memory:
    nginx writes a body to a temp file (and we would read it back) on
    the event loop, and says so with a warning that must not appear."""
    app = make_appliance(workers=1)
    a = Raw(app, rid=100, wait=1)
    a.login("alice", "alice-pw", "big")
    b = Raw(app, rid=500, wait=1)
    b.login("bob", "bob-pw", "big")
    parts = ["<message to='bob@example.com/big' type='chat' id='big%d' "
             "xmlns='jabber:client'><body>%d %s</body></message>"
             % (i, i, "y" * 5000) for i in range(20)]
    body = a.body("".join(parts))
    assert 100000 < len(body) < 256 * 1024
    st, hd, data = post(app, body)
    assert st == 200, data
    got = b""
    deadline = time.monotonic() + 20
    while b"id='big19'" not in got and time.monotonic() < deadline:
        st, data = b.send()
        assert st == 200
        got += data
    assert all(b"id='big%d'" % i in got for i in range(20))
    log = app.nginx.error_log()
    assert "buffered to a temporary file" not in log
    a.send(attrs="type='terminate'")
    b.send(attrs="type='terminate'")
