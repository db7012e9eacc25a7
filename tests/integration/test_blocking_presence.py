"""XEP-0191 and presence, the rules test_blocking.py does not show on
its own, with Debian's python3-slixmpp (xep_0191, xep_0198):

- a block or unblock made while one of the user's sessions is parked
  (XEP-0198) reaches it as pushes, in order, when it resumes on the
  other worker (XEP-0191 3.3-3.4 with XEP-0198 section 5);
- blocking one resource (contact@domain/res) keeps presence, directed
  presence and messages from and to that resource only (XEP-0191 3.3
  and its JID matching): the contact's other resources still get them;
- at block time "unavailable" goes only to the blocked contacts that
  were allowed to see the presence: a "from" subscriber and a target
  of directed presence, not a JID with no subscription (3.3);
- a probe from a non-subscriber gets "unsubscribed", one from a
  subscriber of a contact with no available resource "unavailable",
  one from a blocked JID nothing (RFC 6121 4.3.2, XEP-0191 3.5);
- an unblock made on one worker gives the contact's presence to the
  user's resources on both workers (the change reaches every worker of
  the user before the contact is probed).

The tests share one appliance: each uses its own pairs of users.

docs/chat.md maps each rule to its test.
"""

import queue
import time

import pytest
from slixmpp.exceptions import IqError

from chathelp import get_roster, send_presence, slix, wait_both, worker_of
from polling import wait
from smresume import connect_sm, resume_elsewhere, track

DOMAIN = "example.com"
APPLIANCE_EXTRA_HTTP = "conclave_sm_resume_timeout 30s;"


def with_pushes(c):
    """Pushes (XEP-0191 3.3, 3.4) land in c.pushes as (kind, JIDs)."""
    c.pushes_q = queue.Queue()

    def setup():
        c.xmpp.add_event_handler("blocked", lambda iq: c.pushes_q.put(
            ("block", sorted(str(j) for j in iq["block"]["items"]))))
        c.xmpp.add_event_handler("unblocked", lambda iq: c.pushes_q.put(
            ("unblock", sorted(str(j) for j in iq["unblock"]["items"]))))
    c.pool.call(setup)
    return c


def blocker(pool, app, user, resource, **kw):
    kw.setdefault("plugins", ("xep_0191",))
    c = slix(pool, app, user, resource, **kw)
    return with_pushes(c)


def call(c, make):
    async def go():
        try:
            await make()
            return "result"
        except IqError as e:
            return e.iq["error"]["condition"]
    return c.run(go, 20)


def block(c, *jids):
    return call(c, lambda: c.xmpp["xep_0191"].block(list(jids), timeout=10))


def unblock(c, *jids):
    return call(c, lambda: c.xmpp["xep_0191"].unblock(list(jids),
                                                      timeout=10))


def get_blocked(c):
    iq = c.run(lambda: c.xmpp["xep_0191"].get_blocked(timeout=10))
    return sorted(str(j) for j in iq["blocklist"]["items"])


def presences(c, settle=1.5, frm=None):
    return [p for p in c.drain("presences", settle)
            if frm is None or p["from"].split("/")[0] == frm]


def presence_from(c, jid, ptype="available", timeout=10, **kw):
    """The next presence of type ptype from jid (bare: any resource)."""
    def match(p):
        who = p["from"] if "/" in jid else p["from"].split("/")[0]
        return who == jid and p["type"] == ptype and \
            all(p.get(k) == v for k, v in kw.items())
    return c.wait_presence(match, timeout)


def all_of(c, want, timeout=10):
    """Available presences (from, status) in want, in any order."""
    want = set(want)
    deadline = time.monotonic() + timeout
    seen = []
    while want and time.monotonic() < deadline:
        for p in c.drain("presences", 0.2):
            want.discard((p["from"], p["status"]))
            seen.append(p)
    assert not want, "missing %r; got %r" % (want, seen)


def subscribe_both(a, b, ja, jb):
    send_presence(a, to=jb, ptype="subscribe")
    presence_from(b, ja, "subscribe")
    send_presence(b, to=ja, ptype="subscribed")
    send_presence(b, to=ja, ptype="subscribe")
    presence_from(a, jb, "subscribe")
    send_presence(a, to=jb, ptype="subscribed")
    wait_both(a, b, ja, jb)


def approve(sub, owner, jsub, jowner):
    """sub subscribes to owner's presence: owner's item of sub is
    "from" (RFC 6121 3.1), sub's item of owner "to"."""
    send_presence(sub, to=jowner, ptype="subscribe")
    presence_from(owner, jsub, "subscribe")
    send_presence(owner, to=jsub, ptype="subscribed")
    presence_from(sub, jowner, "subscribed")


def keeper(pool, app, user, resource):
    """A slixmpp client with stream management (resumption on) that
    asked for its blocklist."""
    c = pool.client("%s@%s/%s" % (user, DOMAIN, resource), user + "-pw",
                    app.nginx.xmpp_port, connect=False, presence=False)

    def setup():
        for p in ("xep_0198", "xep_0191", "xep_0199"):
            c.xmpp.register_plugin(p)
    pool.call(setup)
    track(pool, c)
    with_pushes(c)
    connect_sm(c)
    return c


def test_pushes_missed_while_parked_arrive_on_resume(appliance, pool):
    """XEP-0191 3.3/3.4 with XEP-0198 5: the pushes of changes made from
    another resource while the session was parked come on resumption,
    in order, and the resumed session enforces the new list."""
    keep = keeper(pool, appliance, "bob", "keep")
    desk = blocker(pool, appliance, "bob", "desk")
    assert get_blocked(keep) == []
    assert get_blocked(desk) == []
    assert block(desk, "erin@example.com") == "result"
    assert keep.pushes_q.get(timeout=10) == ("block", ["erin@example.com"])

    def away():
        assert block(desk, "frank@example.com") == "result"
        assert unblock(desk, "erin@example.com") == "result"
        assert block(desk, "grace@example.com") == "result"
        assert unblock(desk) == "result"
        assert block(desk, "carol@example.com") == "result"
    resume_elsewhere(pool, appliance, keep, away, settle=0.5)

    got = [keep.pushes_q.get(timeout=10) for _ in range(5)]
    assert got == [("block", ["frank@example.com"]),
                   ("unblock", ["erin@example.com"]),
                   ("block", ["grace@example.com"]),
                   ("unblock", []),
                   ("block", ["carol@example.com"])]
    with pytest.raises(queue.Empty):
        keep.pushes_q.get(timeout=1.0)

    # the resumed session's copy is the stored list
    assert get_blocked(keep) == ["carol@example.com"]
    carol = slix(pool, appliance, "carol", "c")
    carol.message(keep.jid, "still blocked?", id="pk1")
    e = carol.wait_message(lambda m: m["id"] == "pk1")
    assert e["type"] == "error" and e["error"] == "service-unavailable"
    erin = slix(pool, appliance, "erin", "e")
    erin.message(keep.jid, "unblocked", id="pk2")
    keep.wait_message(lambda m: m["id"] == "pk2")

    # pushes keep coming to the resumed session
    assert unblock(desk, "carol@example.com") == "result"
    assert keep.pushes_q.get(timeout=10) == ("unblock", ["carol@example.com"])


def test_blocking_one_resource(appliance, pool):
    """XEP-0191 3.3 with its JID matching: alice blocks
    carol@example.com/phone.  The phone gets "unavailable" and nothing
    of alice after it; carol's desk still gets alice's presence,
    directed presence and messages to the bare JID, and what the phone
    sends alice is refused while the desk gets through."""
    ja, jc = "alice@example.com", "carol@example.com"
    a = blocker(pool, appliance, "alice", "al")
    phone = slix(pool, appliance, "carol", "phone", presence=False)
    desk = slix(pool, appliance, "carol", "desk", presence=False,
                not_pid=a.worker)
    send_presence(phone, priority=10)
    send_presence(desk, priority=1)
    subscribe_both(a, desk, ja, jc)
    send_presence(a, status="before")
    for c in (phone, desk):
        presence_from(c, ja, status="before")

    assert block(a, jc + "/phone") == "result"
    presence_from(phone, ja, "unavailable")
    assert [p for p in presences(desk, 1.0, ja)
            if p["type"] == "unavailable"] == []

    # broadcast (RFC 6121 4.4.2): the desk only
    send_presence(a, status="after")
    presence_from(desk, ja, status="after")
    assert presences(phone, 1.0, ja) == []
    # directed presence to the bare JID: the desk only
    send_presence(a, to=jc, status="directed")
    presence_from(desk, ja, status="directed")
    assert presences(phone, 1.0, ja) == []

    # a message to the bare JID skips the blocked phone, although its
    # priority is the highest (RFC 6121 8.5.2.1.1 among the others)
    a.message(jc, "to carol", id="r1")
    m = desk.wait_message(lambda m: m["id"] == "r1")
    assert m["body"] == "to carol"
    assert [m for m in phone.drain(settle=1.0) if m["id"] == "r1"] == []
    # to the phone's full JID: refused (<not-acceptable/>, <blocked/>)
    a.message(jc + "/phone", "to the phone", id="r2")
    e = a.wait_message(lambda m: m["id"] == "r2")
    assert e["type"] == "error" and e["error"] == "not-acceptable"

    # from the phone: refused; from the desk: delivered
    phone.message(a.jid, "from the phone", id="r3")
    e = phone.wait_message(lambda m: m["id"] == "r3")
    assert e["error"] == "service-unavailable"
    desk.message(a.jid, "from the desk", id="r4")
    a.wait_message(lambda m: m["id"] == "r4")
    send_presence(phone, status="phone here", priority=10)
    send_presence(desk, status="desk here", priority=1)
    presence_from(a, jc + "/desk", status="desk here")
    assert [p for p in presences(a, 1.0, jc)
            if p["from"].endswith("/phone")] == []

    # only the blocked resource is there: a message is refused
    desk.disconnect()
    wait(lambda: worker_of(appliance, jc + "/desk") is None, "desk gone")
    a.message(jc, "only the phone", id="r5")
    e = a.wait_message(lambda m: m["id"] == "r5")
    assert e["type"] == "error" and e["error"] == "not-acceptable"
    assert [m for m in phone.drain(settle=1.0) if m["id"] == "r5"] == []


def test_unavailable_at_block_only_where_presence_went(appliance, pool):
    """XEP-0191 3.3: "unavailable" goes to a blocked contact only if it
    was allowed to see the presence: frank (a "from" subscriber) and
    erin (a target of directed presence) hear it, bob (no subscription,
    no directed presence) hears nothing; the blocker is alice."""
    jg = "alice@example.com"
    g = blocker(pool, appliance, "alice", "g")
    f = slix(pool, appliance, "frank", "f", not_pid=g.worker)
    e = slix(pool, appliance, "erin", "e")
    b = slix(pool, appliance, "bob", "b")
    get_roster(g)
    get_roster(f)
    approve(f, g, "frank@example.com", jg)
    send_presence(g, status="here")
    presence_from(f, jg, status="here")
    send_presence(g, to=e.jid, status="just for erin")
    presence_from(e, jg, status="just for erin")
    presences(b, 0.5)

    assert block(g, "frank@example.com", "erin@example.com",
                 "bob@example.com") == "result"
    presence_from(f, jg, "unavailable")
    presence_from(e, jg, "unavailable")
    assert presences(b, 2.0, jg) == []
    # and erin is not told again when grace goes
    g.disconnect()
    assert presences(e, 1.5, jg) == []


def test_probe_answers(appliance, pool):
    """RFC 6121 4.3.2 for a probe a client sends (4.3.1 note): no
    subscription (or no such account): "unsubscribed"; a subscriber and
    no resource available: "unavailable"; a subscriber the contact
    blocked: nothing at all (XEP-0191 3.5)."""
    jb, jd = "bob@example.com", "frank@example.com"
    b = slix(pool, appliance, "bob", "pr")
    d = blocker(pool, appliance, "frank", "pr", not_pid=b.worker)
    c = slix(pool, appliance, "carol", "pr")
    get_roster(b)
    get_roster(d)
    approve(b, d, jb, jd)
    send_presence(d, status="frank here")
    presence_from(b, jd, status="frank here")

    # not subscribed: "unsubscribed", from the contact's bare JID
    send_presence(c, to=jd, ptype="probe")
    p = presence_from(c, jd, "unsubscribed")
    assert p["from"] == jd
    send_presence(c, to="nobody@example.com", ptype="probe")
    presence_from(c, "nobody@example.com", "unsubscribed")

    # subscribed: the presence, then "unavailable" once frank is gone
    send_presence(b, to=jd, ptype="probe")
    presence_from(b, jd, status="frank here")
    send_presence(d, ptype="unavailable")
    presence_from(b, jd, "unavailable")
    send_presence(b, to=jd, ptype="probe")
    p = presence_from(b, jd, "unavailable")
    assert p["from"] == jd

    # blocked by frank: nothing, whether he is available or not
    send_presence(d, status="back")
    presence_from(b, jd, status="back")
    assert block(d, jb) == "result"
    presence_from(b, jd, "unavailable")
    send_presence(b, to=jd, ptype="probe")
    assert presences(b, 2.0, jd) == []
    send_presence(d, ptype="unavailable")
    send_presence(b, to=jd, ptype="probe")
    assert presences(b, 2.0, jd) == []
    assert [p for p in presences(d, 0.5) if p["type"] == "probe"] == []


def test_unblock_reaches_both_workers_of_the_user(appliance, pool):
    """XEP-0191 3.4 across workers: erin has a resource on each worker
    and bob (subscribed both ways) is on either one; an unblock made on
    one worker gives bob erin's presence from both resources and both of
    erin's resources bob's presence (the probe's answer), none of it
    dropped by a worker that did not know yet."""
    je, jb = "erin@example.com", "bob@example.com"
    e1 = blocker(pool, appliance, "erin", "one")
    e2 = blocker(pool, appliance, "erin", "two", not_pid=e1.worker)
    for n, on in enumerate((e1.worker, e2.worker)):
        b = slix(pool, appliance, "bob", "b%d" % n, on_pid=on)
        if n == 0:
            get_roster(e1)
            get_roster(b)
            subscribe_both(e1, b, je, jb)
        send_presence(e1, status="one %d" % n)
        send_presence(e2, status="two %d" % n)
        send_presence(b, status="bob %d" % n)
        all_of(b, {(e1.jid, "one %d" % n), (e2.jid, "two %d" % n)})
        for e in (e1, e2):
            presence_from(e, b.jid, status="bob %d" % n)

        assert block(e1, jb) == "result"
        presence_from(b, je, "unavailable")
        presences(e2, 0.5)
        presences(e1, 0.2)

        assert unblock(e1, jb) == "result"
        for e in (e1, e2):
            presence_from(e, b.jid, status="bob %d" % n)
        all_of(b, {(e1.jid, "one %d" % n), (e2.jid, "two %d" % n)})
        b.disconnect()
