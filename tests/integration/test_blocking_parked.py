"""XEP-0191 for a session parked for XEP-0198 resumption, with Debian's
python3-slixmpp (xep_0191, xep_0198):

- a parked session keeps its user's blocklist: the server's probe when
  a blocked contact signs in (RFC 6121 4.3.2) reveals nothing of the
  parked user, while a contact that is not blocked gets the parked
  session's last presence; a block made from another resource while
  the session is parked applies to it at once (XEP-0191 3.3);
- what is routed to a parked session passes XEP-0191 3.5 before it is
  queued: a message from a blocked JID is answered with
  <service-unavailable/> and never reaches the client when it resumes
  (on the other worker), its presence is dropped, and a message from
  a contact that is not blocked comes on resumption.

docs/chat.md maps each rule to its test.
"""

import time

from chathelp import get_roster, send_presence, slix
from polling import wait
from smresume import drop, resume_elsewhere
from test_blocking_presence import (block, blocker, keeper, presence_from,
                                    presences, subscribe_both)

DOMAIN = "example.com"
APPLIANCE_EXTRA_HTTP = "conclave_sm_resume_timeout 60s;"


def park(c):
    """Drops c's connection without a stream end: the server parks it."""
    drop(c.pool, c)
    time.sleep(1.0)             # the server notices the lost connection


def test_parked_session_answers_no_probe_of_a_blocked_jid(appliance, pool):
    """XEP-0191 3.3 with RFC 6121 4.3.2 and XEP-0198 5: alice's session
    is parked; bob (blocked before) and erin (blocked from alice's other
    resource while parked) sign in again: the server's probes get
    nothing of alice, carol's gets the parked session's presence."""
    ja = "alice@%s" % DOMAIN
    a = keeper(pool, appliance, "alice", "keep")
    get_roster(a)
    send_presence(a, status="alice")    # requests reach it (RFC 6121 3.1.3)
    friends = {}
    for u in ("bob", "carol", "erin"):
        c = slix(pool, appliance, u, "one")
        get_roster(c)
        subscribe_both(a, c, ja, "%s@%s" % (u, DOMAIN))
        friends[u] = c
    send_presence(a, status="alice here")
    for c in friends.values():
        presence_from(c, ja, status="alice here")

    assert block(a, "bob@%s" % DOMAIN) == "result"
    presence_from(friends["bob"], ja, "unavailable")
    park(a)

    desk = blocker(pool, appliance, "alice", "desk")
    assert block(desk, "erin@%s" % DOMAIN) == "result"
    presence_from(friends["erin"], ja, "unavailable")

    for u, c in friends.items():
        c.disconnect()
    wait(lambda: all(c.xmpp.ended.is_set() for c in friends.values()),
         "contacts gone")

    # signing in again: the server probes alice for each (4.3.2)
    carol = slix(pool, appliance, "carol", "two")
    p = presence_from(carol, ja + "/keep", status="alice here")
    assert p["from"] == ja + "/keep"
    for u in ("bob", "erin"):
        c = slix(pool, appliance, u, "two")
        got = presences(c, 2.5, ja)
        assert got == [], "%s got %r" % (u, [str(x) for x in got])

    # and so the client's own probe (answered from the stored list)
    send_presence(c, to=ja, ptype="probe")
    assert presences(c, 2.0, ja) == []


def test_parked_session_queues_nothing_from_a_blocked_jid(appliance,
                                                          pool):
    """XEP-0191 3.5 for a parked session (XEP-0198 5): frank, blocked,
    sends a message (it gets <service-unavailable/>) and presence; carol
    sends a message.  When bob's client resumes (on the other worker),
    it gets carol's message and nothing of frank's."""
    jb = "bob@%s" % DOMAIN
    b = keeper(pool, appliance, "bob", "keep")
    get_roster(b)
    assert block(b, "frank@%s" % DOMAIN) == "result"
    send_presence(b, status="bob here")
    frank = slix(pool, appliance, "frank", "f")
    carol = slix(pool, appliance, "carol", "c3")

    def away():
        frank.message(jb + "/keep", "while parked", id="bp1")
        e = frank.wait_message(lambda m: m["id"] == "bp1")
        assert e["type"] == "error"
        assert e["error"] == "service-unavailable"
        send_presence(frank, to=jb + "/keep", status="frank directed")
        carol.message(jb + "/keep", "while parked", id="bp2")
        time.sleep(1.0)
    resume_elsewhere(pool, appliance, b, away, settle=0.5)

    m = b.wait_message(lambda m: m["id"] == "bp2")
    assert m["body"] == "while parked"
    got = [m for m in b.drain(settle=1.5) if m["id"] == "bp1"]
    assert got == []
    assert [p for p in presences(b, 0.5)
            if p["from"].startswith("frank@")] == []
