"""XEP-0352 Client State Indication, with Debian's python3-slixmpp
(xep_0352 sends <active/> and <inactive/>).

While alice's client is inactive, presence for it is held (only the
latest per sender full JID) and so are chat states without a body,
while a message with a body, a subscription request and an iq arrive at
once; <active/> flushes what was held, in order.  The queue is bounded
(conclave_csi_max_held, here 4): the next stanza past it sends what was
held.  CSI before authentication and malformed CSI elements end the
stream with the RFC 6120 condition.
"""

import queue
import re
import time


from chathelp import slix
from rawtcp import RawTCP

APPLIANCE_EXTRA_HTTP = "conclave_csi_max_held 4;"
CHATSTATES = "http://jabber.org/protocol/chatstates"


def ping(c):
    """A round trip: what the client sent before has been handled."""
    c.run(lambda: c.xmpp["xep_0199"].send_ping("example.com", timeout=10))


def inactive(c):
    c.send(lambda x: x["xep_0352"].send_inactive())
    ping(c)


def active(c):
    c.send(lambda x: x["xep_0352"].send_active())


def status_from(c, settle):
    """The presences this file sends (with a status) that arrive within
    settle seconds; initial presences and the like are left out."""
    return [(p["from"], p["status"]) for p in c.drain("presences", settle)
            if p["type"] in ("available", "unavailable", "")
            and p["status"]]


def directed(c, to, status, ptype=None):
    c.send(lambda x: x.send_presence(pto=to, pstatus=status, ptype=ptype))


def chatstate(c, to, state):
    c.send(lambda x: x.send_raw(
        "<message xmlns='jabber:client' type='chat' to='%s'><%s xmlns='%s'/>"
        "</message>" % (to, state, CHATSTATES)))


def test_feature_offered(pool, appliance):
    a = slix(pool, appliance, "alice", "feat",
             plugins=["xep_0352", "xep_0199"])
    assert a.xmpp["xep_0352"].enabled


def states_of(c):
    """Chat states (XEP-0085, slixmpp's xep_0085) as (from, state)."""
    c.states = queue.Queue()
    pool_call = c.pool.call
    pool_call(lambda: c.xmpp.add_event_handler(
        "chatstate", lambda m: c.states.put((str(m["from"]),
                                             m["chat_state"]))))


def drain_states(c, settle):
    got = []
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        try:
            got.append(c.states.get(timeout=0.1))
        except queue.Empty:
            pass
    return got


def test_presence_held_messages_pass_flush_on_active(pool, appliance):
    a = slix(pool, appliance, "alice", "pocket",
             plugins=["xep_0352", "xep_0199", "xep_0085"])
    states_of(a)
    b1 = slix(pool, appliance, "bob", "one", not_pid=a.worker,
              plugins=["xep_0199"])
    b2 = slix(pool, appliance, "bob", "two", on_pid=a.worker,
              plugins=["xep_0199"])
    a.drain("presences", 0.5)

    inactive(a)
    directed(b1, a.jid, "first")
    directed(b1, a.jid, "second")
    directed(b2, a.jid, "other")
    # b2 shares alice's worker and b1 does not: the round trip puts
    # "other" there before b1 sends "third" (two clients' sends have
    # no order of their own)
    ping(b2)
    directed(b1, a.jid, "third")
    chatstate(b1, a.jid, "composing")
    chatstate(b2, a.jid, "composing")
    chatstate(b2, a.jid, "paused")
    ping(b1)
    ping(b2)

    # a message with a body arrives at once, presence does not; the
    # message also supersedes the held chat state of its sender
    b1.message(a.jid, "urgent", id="csi1")
    m = a.wait_message(lambda m: m["body"] == "urgent", 10)
    assert m["from"] == b1.jid
    # so does a subscription request (it needs an answer)
    b1.send(lambda x: x.send_presence(pto="alice@example.com",
                                      ptype="subscribe"))
    a.wait_presence(lambda p: p["type"] == "subscribe", 10)
    assert status_from(a, 1.0) == []
    assert drain_states(a, 0.3) == []

    active(a)
    got = status_from(a, 2.0)
    # the latest presence of each full JID, in the order they came
    assert got == [(b2.jid, "other"), (b1.jid, "third")], got
    # b2's latest chat state is there; b1's went with its message
    assert drain_states(a, 1.0) == [(b2.jid, "paused")]

    # active again: presence flows at once
    directed(b1, a.jid, "live")
    a.wait_presence(lambda p: p["status"] == "live", 10)


def test_queue_is_bounded(pool, appliance):
    a = slix(pool, appliance, "alice", "bound",
             plugins=["xep_0352", "xep_0199"])
    bobs = [slix(pool, appliance, "bob", "b%d" % i, plugins=["xep_0199"])
            for i in range(5)]
    a.drain("presences", 0.5)

    inactive(a)
    for i, b in enumerate(bobs[:4]):
        directed(b, a.jid, "s%d" % i)
        ping(b)
    assert status_from(a, 1.0) == []

    # the fifth does not fit: the four held go out, the fifth is held
    directed(bobs[4], a.jid, "s4")
    got = status_from(a, 2.0)
    assert [s for _, s in got] == ["s0", "s1", "s2", "s3"]

    active(a)
    got = status_from(a, 2.0)
    assert [s for _, s in got] == ["s4"]


def test_csi_before_auth_is_refused(appliance):
    c = RawTCP(appliance.nginx.xmpps_port, tls=True)
    feats = c.open()
    assert "urn:xmpp:csi:0" not in feats
    c.send("<inactive xmlns='urn:xmpp:csi:0'/>")
    err = c.expect(r"</stream:error>")
    assert "<not-authorized" in err
    assert c.closed_by_server()
    c.close()


def test_csi_offered_after_auth_and_bad_elements(appliance):
    c = RawTCP(appliance.nginx.xmpps_port, tls=True)
    feats = c.open()
    r = c.auth("alice", "alice-pw")
    assert "<success" in r
    feats = c.open()
    assert "<csi xmlns='urn:xmpp:csi:0'/>" in feats
    c.close()

    for bad, cond in (("<active xmlns='urn:xmpp:csi:0'><x/></active>",
                       "invalid-xml"),
                      ("<asleep xmlns='urn:xmpp:csi:0'/>",
                       "unsupported-stanza-type")):
        c = RawTCP(appliance.nginx.xmpps_port, tls=True)
        c.login("alice", resource="badcsi")
        c.send(bad)
        err = c.expect(r"</stream:error>")
        assert re.search("<%s " % cond, err), err
        assert c.closed_by_server()
        c.close()
