"""Presence and 1:1 chat (RFC 6121 basics), across worker processes.

The cross-worker test reads the session registry from /conclave-status
to prove that the two real clients sit in different nginx workers.
"""

import re

import pytest

from chathelp import worker_of
from rawws import RawWS

# stanza.js resumes streams (XEP-0198): a dropped connection ends the
# session only when its resumption time is over (docs/routing.md)
APPLIANCE_EXTRA_HTTP = "conclave_sm_resume_timeout 2s;"


@pytest.fixture(scope="module")
def port(appliance):
    return appliance.nginx.http_port


def online_on_other_worker(appliance, clients, lib, user, other_pid,
                           tries=30):
    """Connects until the session lands on a worker other than other_pid."""
    for _ in range(tries):
        c = clients(lib)
        ev = c.connect(appliance.ws_url, user, user + "-pw")
        assert ev["ev"] == "online", ev
        if worker_of(appliance, ev["jid"]) != other_pid:
            return c, ev["jid"]
        c.disconnect()
        c.close()
    pytest.fail("no session landed on a second worker in %d tries" % tries)


def test_two_workers_serve(appliance):
    assert len(appliance.nginx.worker_pids()) == 2


@pytest.mark.parametrize("alib,blib", [("xmpp", "stanza"),
                                       ("stanza", "xmpp")])
def test_chat_between_workers(appliance, clients, alib, blib):
    a = clients(alib)
    ev = a.connect(appliance.ws_url, "alice", "alice-pw")
    assert ev["ev"] == "online", ev
    a_jid = ev["jid"]
    a_pid = worker_of(appliance, a_jid)
    assert a_pid in appliance.nginx.worker_pids()

    b, b_jid = online_on_other_worker(appliance, clients, blib, "bob", a_pid)
    assert worker_of(appliance, b_jid) != a_pid

    a.presence()
    b.available()

    # the ids name this run: a session of an earlier run of this test
    # that is parked for resumption (XEP-0198) hands its unacked stanzas,
    # with the same bodies, to bob's new resource when it times out
    for i in range(5):
        a.message("bob@example.com", "a->b %d & <ok>" % i,
                  id="ab%d-%s" % (i, alib))
        m = b.wait_for(lambda e: e["ev"] == "message"
                       and e.get("id") == "ab%d-%s" % (i, alib), 10)
        assert m["body"] == "a->b %d & <ok>" % i
        assert m["from"] == a_jid          # stamped by the server
        b.message(a_jid, "b->a %d" % i, id="ba%d-%s" % (i, blib))
        m = a.wait_for(lambda e: e["ev"] == "message"
                       and e.get("id") == "ba%d-%s" % (i, blib), 10)
        assert m["body"] == "b->a %d" % i
        assert m["from"] == b_jid


def test_message_to_offline_user_bounces(appliance, clients):
    a = clients("stanza")
    assert a.connect(appliance.ws_url, "alice", "alice-pw")["ev"] == "online"
    a.message("carol@example.com", "are you there?", id="off1")
    m = a.wait_for(lambda e: e["ev"] == "message" and e.get("id") == "off1",
                   10)
    assert m["type"] == "error"
    assert m["error"] == "service-unavailable"


def test_message_to_unknown_user_bounces(port):
    ws = RawWS(port)
    ws.login("alice", resource="u1")
    ws.send("<message to='ghost@example.com' type='chat' id='g1'>"
            "<body>x</body></message>")
    reply = ws.expect(r"id='g1'")
    assert "type='error'" in reply and "<service-unavailable" in reply
    ws.close()


def test_message_to_remote_domain(port):
    ws = RawWS(port)
    ws.login("alice", resource="u2")
    ws.send("<message to='x@elsewhere.org' id='r1'><body>x</body></message>")
    assert "<remote-server-not-found" in ws.expect(r"id='r1'")
    ws.close()


@pytest.mark.parametrize("how", ["kill", "disconnect"])
def test_presence_on_disconnect(appliance, clients, how):
    b = clients("xmpp")
    ev = b.connect(appliance.ws_url, "bob", "bob-pw")
    assert ev["ev"] == "online"
    b.presence()
    a = clients("stanza")
    ev = a.connect(appliance.ws_url, "alice", "alice-pw")
    a_jid = ev["jid"]
    a.presence()
    a.presence(to="bob@example.com")          # directed presence
    p = b.wait_for(lambda e: e["ev"] == "presence" and e["from"] == a_jid, 10)
    assert p.get("type") in (None, "", "available")
    getattr(a, how)()
    # after a kill, once the 2 s for resuming the stream have passed
    p = b.wait_for(lambda e: e["ev"] == "presence" and e["from"] == a_jid
                   and e.get("type") == "unavailable", 15)
    assert p


def test_forged_from_is_rejected(port):
    ws = RawWS(port)
    ws.login("alice", resource="forger")
    ws.send("<message from='bob@example.com/x' to='carol@example.com'>"
            "<body>spoof</body></message>")
    assert ws.stream_error() == "invalid-from"


def test_own_bare_from_is_stamped_full(port):
    a = RawWS(port)
    a.login("alice", resource="stamp")
    b = RawWS(port)
    b.login("bob", resource="stamp")
    a.send("<message from='alice@example.com' to='bob@example.com/stamp'>"
           "<body>hello</body></message>")
    assert "from='alice@example.com/stamp'" in b.expect(r"<message")
    a.close()
    b.close()


def test_server_generated_resource(port):
    ws = RawWS(port)
    jid = ws.login("carol")
    assert re.match(r"^carol@example\.com/cv-[0-9a-f]{16}$", jid), jid
    ws.close()


def test_resource_conflict_replaces_old_session(port):
    old = RawWS(port)
    assert old.login("carol", resource="phone") == "carol@example.com/phone"
    new = RawWS(port)
    assert new.login("carol", resource="phone") == "carol@example.com/phone"
    assert old.stream_error() == "conflict"
    # the new session owns the resource
    b = RawWS(port)
    b.login("bob", resource="conflict-test")
    b.send("<message to='carol@example.com/phone' id='c1'><body>x</body>"
           "</message>")
    assert "<body>x</body>" in new.expect(r"<message")
    old.close()
    new.close()
    b.close()


def test_bare_jid_goes_to_highest_priority(port):
    low = RawWS(port)
    low.login("erin", resource="low", presence=False)
    low.send("<presence><priority>1</priority></presence>")
    low.expect(r"<presence")
    high = RawWS(port)
    high.login("erin", resource="high", presence=False)
    high.send("<presence><priority>5</priority></presence>")
    high.expect(r"from='erin@example.com/high'")
    b = RawWS(port)
    b.login("bob", resource="prio")
    b.send("<message to='erin@example.com' type='chat' id='p1'>"
           "<body>top</body></message>")
    assert "<body>top</body>" in high.expect(r"<message")
    # a full-JID message still reaches the low-priority resource
    b.send("<message to='erin@example.com/low' type='chat' id='p2'>"
           "<body>direct</body></message>")
    msg = low.expect(r"<message")
    assert "<body>direct</body>" in msg, "low got the bare-JID message"
    for w in (low, high, b):
        w.close()


def test_iq_to_offline_full_jid(port):
    ws = RawWS(port)
    ws.login("alice", resource="iqer")
    ws.send("<iq type='get' id='q1' to='bob@example.com/nowhere'>"
            "<ping xmlns='urn:xmpp:ping'/></iq>")
    assert "<service-unavailable" in ws.expect(r"id='q1'")
    ws.close()


def test_iq_routed_between_users(port):
    a = RawWS(port)
    a.login("alice", resource="iq-a")
    b = RawWS(port)
    b.login("bob", resource="iq-b")
    a.send("<iq type='get' id='x1' to='bob@example.com/iq-b'>"
           "<query xmlns='jabber:iq:version'/></iq>")
    req = b.expect(r"id='x1'")
    assert "from='alice@example.com/iq-a'" in req
    b.send("<iq type='result' id='x1' to='alice@example.com/iq-a'>"
           "<query xmlns='jabber:iq:version'><name>t</name></query></iq>")
    assert "<name>t</name>" in a.expect(r"id='x1'")
    a.close()
    b.close()


@pytest.mark.parametrize("lib", ["xmpp", "stanza"])
def test_ping_and_disco_info(appliance, clients, lib):
    c = clients(lib)
    assert c.connect(appliance.ws_url, "frank", "frank-pw")["ev"] == "online"
    r = c.ping(to="example.com", id="p1")
    assert r["ev"] == "iq-result", r
    d = c.disco_info(to="example.com", id="d1")
    assert d["ev"] == "disco_info", d
    assert {"category": "server", "type": "im"}.items() <= \
        d["identities"][0].items()
    assert "urn:xmpp:ping" in d["features"]
    assert "http://jabber.org/protocol/disco#info" in d["features"]


def test_legacy_session_and_unknown_iq(port):
    ws = RawWS(port)
    ws.login("frank", resource="legacy")
    ws.send("<iq type='set' id='s1'><session "
            "xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
    assert "type='result'" in ws.expect(r"id='s1'")
    ws.send("<iq type='get' id='u1' to='example.com'>"
            "<query xmlns='urn:example:unknown'/></iq>")
    assert "<service-unavailable" in ws.expect(r"id='u1'")
    ws.send("<iq type='get' id='b1'/>")
    assert "<bad-request" in ws.expect(r"id='b1'")
    ws.close()
