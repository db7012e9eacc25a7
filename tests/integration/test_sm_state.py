"""XEP-0198 section 5: a resumed session is the same session.  What the
client negotiated before its connection dropped still holds after it
resumes, on the other nginx worker, without asking again: carbons
(XEP-0280), its client state (XEP-0352, and what CSI held), roster
pushes (RFC 6121 2.1.6), blocklist pushes (XEP-0191 3.2), its available
presence and priority (probes are answered), and its caps interests
(XEP-0163 4.3.1 notifications, also those published while it was
away).

The resuming client is Debian's python3-slixmpp with its xep_0198,
xep_0280, xep_0352, xep_0191 and xep_0115/xep_0163 plugins; each test
drops the TCP connection without a stream end and resumes until the
session lands on the other worker (/conclave-status tells).
"""

import queue
import time
import xml.etree.ElementTree as ET

import pytest

from chathelp import (get_roster, roster_set, send_presence, slix,
                      subscribe_both)
from polling import wait
from smresume import connect_sm, resume_elsewhere, track

DOMAIN = "example.com"
APPLIANCE_EXTRA_HTTP = "conclave_sm_resume_timeout 30s;"
PLUGINS = ("xep_0030", "xep_0004", "xep_0060", "xep_0163", "xep_0115",
           "xep_0198", "xep_0280", "xep_0352", "xep_0199", "xep_0191")
NODE = "urn:xmpp:conclave:sm-state:0"


def keeper(pool, app, user, resource, interests=()):
    """A slixmpp client with stream management (resume on), carbons, CSI,
    blocking and PEP plugins; what it gets lands in c.carbons, c.events,
    c.blocked; its caps ask for interests."""
    c = pool.client("%s@%s/%s" % (user, DOMAIN, resource), user + "-pw",
                    app.nginx.xmpp_port, connect=False, presence=False)
    c.carbons, c.events, c.blocked = queue.Queue(), [], queue.Queue()

    def setup():
        for p in PLUGINS:
            c.xmpp.register_plugin(p)
        x = c.xmpp
        for d in ("received", "sent"):
            x.add_event_handler(
                "carbon_" + d,
                lambda m, d=d: c.carbons.put(
                    (d, str(m["carbon_" + d]["from"]),
                     str(m["carbon_" + d]["to"]),
                     m["carbon_" + d]["body"])))
        x.add_event_handler("pubsub_publish", c.events.append)
        x.add_event_handler("blocked", lambda iq: c.blocked.put(
            sorted(str(j) for j in iq["block"]["items"])))
    pool.call(setup)
    track(pool, c)
    connect_sm(c)

    async def caps():
        for ns in interests:
            c.xmpp["xep_0030"].add_feature(ns + "+notify")
        await c.xmpp["xep_0115"].update_caps(broadcast=False)
    c.run(caps)
    return c


def ping(c):
    """A round trip: what the client sent before has been handled."""
    c.run(lambda: c.xmpp["xep_0199"].send_ping(DOMAIN, timeout=10))


def next_carbon(c, body, timeout=10):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:
            m = c.carbons.get(timeout=0.2)
        except queue.Empty:
            continue
        if m[3] == body:
            return m
        seen.append(m)
    pytest.fail("no carbon of %r; got %r" % (body, seen))


def statuses(c, settle):
    return [(p["from"], p["status"]) for p in c.drain("presences", settle)
            if p["type"] in ("available", "") and p["status"]]


def test_carbons_roster_blocklist_presence_survive_resume(appliance, pool):
    """Carbons on, roster and blocklist requested, available with
    priority 7: after resuming on the other worker the copies, the
    pushes and the probe answers come as before, with nothing enabled
    or requested again."""
    keep = keeper(pool, appliance, "bob", "keep")
    desk = slix(pool, appliance, "bob", "desk", plugins=("xep_0191",))
    alice = slix(pool, appliance, "alice", "al")
    subscribe_both(alice, desk)

    keep.run(lambda: keep.xmpp["xep_0280"].enable(timeout=10))
    get_roster(keep)
    keep.run(lambda: keep.xmpp["xep_0191"].get_blocked(timeout=10))
    send_presence(keep, status="keeping", priority=7)
    ping(keep)

    alice.message(desk.jid, "before")
    assert next_carbon(keep, "before")[0] == "received"

    # a contact signing in while the session is parked hears it too
    probed = []

    def sign_in_while_away():
        a2 = slix(pool, appliance, "alice", "away")
        probed.extend(statuses(a2, 2))
    resume_elsewhere(pool, appliance, keep, away=sign_in_while_away)
    assert (keep.jid, "keeping") in probed

    # XEP-0280: both directions, without a new <enable/>
    alice.message(desk.jid, "to the desk")
    d, frm, to, _ = next_carbon(keep, "to the desk")
    assert (d, frm, to) == ("received", alice.jid, desk.jid)
    desk.message(alice.jid, "from the desk")
    d, frm, to, _ = next_carbon(keep, "from the desk")
    assert (d, frm, to) == ("sent", desk.jid, alice.jid)

    # RFC 6121 2.1.6: the roster push reaches the resumed resource
    roster_set(desk, "grace@example.com", name="Grace")
    keep.wait_push(lambda p: "grace@example.com" in p["items"])

    # XEP-0191 3.3: so does the blocklist push
    desk.run(lambda: desk.xmpp["xep_0191"].block(["erin@example.com"],
                                                 timeout=10))
    assert keep.blocked.get(timeout=10) == ["erin@example.com"]

    # RFC 6121 4.3.2: a probe is answered with the presence, priority kept
    a3 = slix(pool, appliance, "alice", "later")
    got = a3.wait_presence(lambda p: p["from"] == keep.jid)
    assert (got["status"], got["priority"]) == ("keeping", 7)

    # the resumed session routes as itself
    keep.message(alice.jid, "from keep")
    alice.wait_message(lambda m: m["body"] == "from keep"
                       and m["from"] == keep.jid)


def test_csi_state_and_held_stanzas_survive_resume(appliance, pool):
    """Inactive before the drop: what CSI held then arrives on
    resumption, and the resumed session is still inactive (presence is
    held until <active/>) on the other worker."""
    keep = keeper(pool, appliance, "carol", "keep")
    erin = slix(pool, appliance, "erin", "e", plugins=("xep_0199",))
    send_presence(keep)
    keep.send(lambda x: x["xep_0352"].send_inactive())
    ping(keep)

    send_presence(erin, to=keep.jid, status="held before the drop")
    ping(erin)
    assert statuses(keep, 1.0) == []

    resume_elsewhere(pool, appliance, keep)
    assert (erin.jid, "held before the drop") in statuses(keep, 2.0)

    # still inactive: a directed presence waits for <active/>
    send_presence(erin, to=keep.jid, status="while inactive")
    ping(erin)
    assert statuses(keep, 1.5) == []
    keep.send(lambda x: x["xep_0352"].send_active())
    assert statuses(keep, 2.0) == [(erin.jid, "while inactive")]


def test_pep_interests_survive_resume(appliance, pool):
    """The caps asked for NODE notifications (+notify): a publish while
    the session is parked is queued for it, and one after the resumption
    on the other worker is delivered, without new caps or presence."""
    keep = keeper(pool, appliance, "frank", "keep", interests=[NODE])
    send_presence(keep, status="pep")
    other = slix(pool, appliance, "frank", "other",
                 plugins=("xep_0030", "xep_0004", "xep_0060", "xep_0163"))

    def publish(text):
        e = ET.Element("{%s}entry" % NODE)
        e.text = text
        other.run(lambda: other.xmpp["xep_0060"].publish(None, NODE,
                                                          payload=e))

    def texts():
        return [m["pubsub_event"]["items"]["item"]["payload"].text
                for m in list(keep.events)]

    publish("first")
    wait(lambda: "first" in texts(), "the first notification")

    resume_elsewhere(pool, appliance, keep,
                     away=lambda: publish("while away"))
    wait(lambda: "while away" in texts(), "the notification kept")
    publish("after")
    wait(lambda: "after" in texts(), "a notification after resuming")
    assert sorted(texts()) == ["after", "first", "while away"]
