"""XEP-0191 Blocking Command, with Debian's python3-slixmpp (xep_0191).

The blocklist is stored in MariaDB (table blocklist) and cached in each
session: alice blocks bob from her phone, her laptop on the other nginx
worker gets the push, and from then on bob's message to either gets
<service-unavailable/>, his presence and his iq are not delivered,
alice's message to bob is refused with <not-acceptable/> + <blocked/>;
a session that signs in later reads the list once and enforces it too;
unblock lifts it everywhere.  The blocked message is still audited (the
trail records what users sent).  Bad requests get their XEP errors, the
list has a limit (conclave_blocklist_max, here 5), and a frozen MariaDB
delays only the new session's list, never other users' chat.
"""

import queue
import time
import xml.etree.ElementTree as ET

from slixmpp.exceptions import IqError

from chathelp import get_roster, send_presence, slix, status
from rawtcp import RawTCP

DB = "conclave"
LIMIT = 5
APPLIANCE_EXTRA_HTTP = ("conclave_blocklist_max %d;\n"
                        "    conclave_db_timeout 3s;" % LIMIT)
NS = "urn:xmpp:blocking"


def db(app, sql):
    return app.mariadb.query(sql, database=DB)


def blocker(pool, app, user, resource, plugins=(), **kw):
    """A slixmpp client with xep_0191 (and plugins); pushes land in
    c.pushes as (kind, set of JIDs)."""
    c = slix(pool, app, user, resource,
             plugins=["xep_0191", "xep_0199"] + list(plugins), **kw)
    c.pushes = queue.Queue()

    def setup():
        c.xmpp.add_event_handler("blocked", lambda iq: c.pushes.put(
            ("block", {str(j) for j in iq["block"]["items"]})))
        c.xmpp.add_event_handler("unblocked", lambda iq: c.pushes.put(
            ("unblock", {str(j) for j in iq["unblock"]["items"]})))
    pool.call(setup)
    return c


def blocklist(c):
    iq = c.run(lambda: c.xmpp["xep_0191"].get_blocked(timeout=10))
    return {str(j) for j in iq["blocklist"]["items"]}


def call(c, make):
    """("result", iq) or (error condition, iq)."""
    async def go():
        try:
            return "result", await make()
        except IqError as e:
            return e.iq["error"]["condition"], e.iq
    return c.run(go, 20)


def block(c, *jids):
    return call(c, lambda: c.xmpp["xep_0191"].block(list(jids), timeout=10))


def unblock(c, *jids):
    return call(c, lambda: c.xmpp["xep_0191"].unblock(list(jids),
                                                      timeout=10))


def raw_iq(c, itype, payload, to=None):
    async def make():
        iq = c.xmpp.Iq()
        iq["type"] = itype
        if to:
            iq["to"] = to
        iq.append(ET.fromstring(payload))
        return await iq.send(timeout=10)
    return call(c, make)


def wait_push(c, timeout=10):
    return c.pushes.get(timeout=timeout)


def ping(c, to):
    return call(c, lambda: c.xmpp["xep_0199"].send_ping(to, timeout=10))


def test_block_enforce_push_unblock(pool, appliance):
    phone = blocker(pool, appliance, "alice", "phone")
    laptop = blocker(pool, appliance, "alice", "laptop",
                     not_pid=phone.worker)
    bob = blocker(pool, appliance, "bob", "desk")
    assert blocklist(phone) == set()
    assert blocklist(laptop) == set()

    assert block(phone, "bob@example.com")[0] == "result"
    # section 3.3: every resource that asked for the list hears of it
    assert wait_push(phone) == ("block", {"bob@example.com"})
    assert wait_push(laptop) == ("block", {"bob@example.com"})
    assert db(appliance, "SELECT owner_jid, jid FROM blocklist") == \
        [("alice@example.com", "bob@example.com")]

    # section 3.5: nothing from bob reaches alice, on either worker
    for to, mid in ((phone.jid, "bk1"), (laptop.jid, "bk2"),
                    ("alice@example.com", "bk3")):
        bob.message(to, "blocked %s" % mid, id=mid)
        e = bob.wait_message(lambda m: m["id"] == mid)
        assert e["type"] == "error" and e["error"] == "service-unavailable"
    # one error each, even for the bare JID both resources were sent
    assert [m["id"] for m in bob.drain(settle=1.0)] == []
    cond, _ = ping(bob, phone.jid)
    assert cond == "service-unavailable"
    bob.send(lambda x: x.send_presence(pto=laptop.jid, pstatus="hello?"))
    time.sleep(1)
    for c in (phone, laptop):
        assert [m for m in c.drain(settle=0.3)
                if m["from"].startswith("bob@")] == []
        assert [p for p in c.drain("presences", 0.3)
                if p["from"].startswith("bob@")] == []

    # and alice cannot write to bob either
    phone.message(bob.jid, "to a blocked contact", id="bk4")
    e = phone.wait_message(lambda m: m["id"] == "bk4")
    assert e["type"] == "error" and e["error"] == "not-acceptable"
    # (its <blocked/> payload is checked on the wire below)

    # the blocked message was sent, so it stays on the record
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if db(appliance, "SELECT COUNT(*) FROM audit_record WHERE "
                         "stanza_id = 'bk1'")[0][0] == "1":
            break
        time.sleep(0.2)
    assert db(appliance, "SELECT COUNT(*) FROM audit_record WHERE "
                         "stanza_id = 'bk1'")[0][0] == "1"
    assert db(appliance, "SELECT COUNT(*) FROM audit_record WHERE "
                         "stanza_id = 'bk4'")[0][0] == "0"

    # a session that signs in now reads the list from MariaDB
    tablet = blocker(pool, appliance, "alice", "tablet")
    assert blocklist(tablet) == {"bob@example.com"}
    bob.message(tablet.jid, "to the tablet", id="bk5")
    e = bob.wait_message(lambda m: m["id"] == "bk5")
    assert e["error"] == "service-unavailable"

    # section 3.4: unblock, pushed everywhere, and bob gets through
    assert unblock(laptop, "bob@example.com")[0] == "result"
    for c in (phone, laptop, tablet):
        assert wait_push(c) == ("unblock", {"bob@example.com"})
    bob.message(phone.jid, "welcome back", id="bk6")
    phone.wait_message(lambda m: m["body"] == "welcome back")
    assert db(appliance, "SELECT COUNT(*) FROM blocklist")[0][0] == "0"


def test_blocked_error_payload_and_domains(appliance):
    c = RawTCP(appliance.nginx.xmpps_port, tls=True)
    c.login("carol", resource="raw")
    c.send("<iq type='set' id='b1'><block xmlns='%s'><item "
           "jid='Example.ORG'/><item jid='erin@example.com/work'/></block>"
           "</iq>" % NS)
    r = c.expect(r"id='b1'.*?(/>|</iq>)")
    assert "type='result'" in r, r

    # a domain covers everyone there; a full JID only that resource
    c.send("<message to='someone@example.org' id='m1' type='chat'>"
           "<body>x</body></message>")
    r = c.expect(r"id='m1'.*?</message>")
    assert "<not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>" \
        "<blocked xmlns='urn:xmpp:blocking:errors'/>" in r, r
    c.send("<message to='erin@example.com/work' id='m2' type='chat'>"
           "<body>x</body></message>")
    r = c.expect(r"id='m2'.*?</message>")
    assert "<blocked xmlns='urn:xmpp:blocking:errors'/>" in r, r

    # the stored JIDs are normalized (RFC 7622: the domain in lower case)
    c.send("<iq type='get' id='g1'><blocklist xmlns='%s'/></iq>" % NS)
    r = c.expect(r"id='g1'.*?</iq>")
    assert "<item jid='erin@example.com/work'/>" in r
    assert "<item jid='example.org'/>" in r

    # an empty <unblock/> empties the list
    c.send("<iq type='set' id='u1'><unblock xmlns='%s'/></iq>" % NS)
    c.expect(r"id='u1'")
    c.send("<iq type='get' id='g2'><blocklist xmlns='%s'/></iq>" % NS)
    r = c.expect(r"id='g2'.*?(</iq>|/>\s*</iq>)")
    assert "<item" not in r, r
    c.close()


def test_bad_requests_and_limit(pool, appliance):
    c = blocker(pool, appliance, "erin", "neg")
    assert raw_iq(c, "set", "<block xmlns='%s'><item jid='a@b@c'/></block>"
                  % NS)[0] == "jid-malformed"
    assert raw_iq(c, "set", "<block xmlns='%s'><item jid=''/></block>"
                  % NS)[0] == "jid-malformed"
    assert raw_iq(c, "set", "<block xmlns='%s'/>" % NS)[0] == \
        "bad-request"
    assert raw_iq(c, "set", "<block xmlns='%s'><item/></block>" % NS)[0] \
        == "bad-request"
    assert raw_iq(c, "set", "<block xmlns='%s'><thing jid='x@y'/></block>"
                  % NS)[0] == "bad-request"
    assert raw_iq(c, "get", "<block xmlns='%s'><item jid='x@y'/></block>"
                  % NS)[0] == "bad-request"
    assert raw_iq(c, "set", "<blocklist xmlns='%s'/>" % NS)[0] == \
        "bad-request"
    # someone else's blocklist is not ours to read
    assert raw_iq(c, "get", "<blocklist xmlns='%s'/>" % NS,
                  to="bob@example.com")[0] in ("forbidden",
                                                "service-unavailable")
    assert blocklist(c) == set()

    # the limit: one request too many, then one in two steps
    many = ["u%d@example.net" % i for i in range(LIMIT + 1)]
    assert block(c, *many)[0] == "not-acceptable"
    assert block(c, *many[:3])[0] == "result"
    assert block(c, *many[3:])[0] == "not-acceptable"
    assert blocklist(c) == set(many[:3])
    assert db(appliance, "SELECT COUNT(*) FROM blocklist WHERE owner_jid ="
                         " 'erin@example.com'")[0][0] == "3"
    assert unblock(c)[0] == "result"
    assert blocklist(c) == set()


def test_frozen_mariadb_stalls_no_one(pool, appliance):
    a = slix(pool, appliance, "frank", "a")
    b = slix(pool, appliance, "carol", "b")
    appliance.mariadb.pause()
    try:
        # a session signing in now cannot read its list: others chat on
        late = RawTCP(appliance.nginx.xmpps_port, tls=True)
        jid = late.login("alice", resource="late")
        for i in range(5):
            a.message(b.jid, "frozen %d" % i, id="fz%d" % i)
            b.wait_message(lambda m: m["body"] == "frozen %d" % i, 10)
        # the message for the late session waits for its list, which
        # never comes: after conclave_db_timeout it is delivered
        a.message(jid, "for the late one", id="fz-late")
        r = late.expect(r"for the late one", timeout=20)
        assert "fz-late" in r
        # a change cannot be stored: the client is told so
        late.send("<iq type='set' id='b1'><block xmlns='%s'><item "
                  "jid='x@example.com'/></block></iq>" % NS)
        r = late.expect(r"id='b1'.*?</iq>", timeout=20)
        assert "internal-server-error" in r, r
        late.close()
    finally:
        appliance.mariadb.resume()


def presence_from(c, bare, ptype="available", timeout=10, **kw):
    def match(p):
        return p["from"].split("/")[0] == bare and p["type"] == ptype and \
            all(p.get(k) == v for k, v in kw.items())
    return c.wait_presence(match, timeout)


def none_from(c, bare, settle=1.5):
    return [p for p in c.drain("presences", settle)
            if p["from"].split("/")[0] == bare]


def befriend(a, b, ja, jb):
    """Subscribed both ways (RFC 6121 3.1), each hearing the other."""
    send_presence(a, to=jb, ptype="subscribe")
    presence_from(b, ja, "subscribe")
    send_presence(b, to=ja, ptype="subscribed")
    presence_from(a, jb)
    send_presence(b, to=ja, ptype="subscribe")
    presence_from(a, jb, "subscribe")
    send_presence(a, to=jb, ptype="subscribed")
    presence_from(b, ja)


def test_no_presence_to_blocked_contact_until_unblocked(pool, appliance):
    """Sections 3.3-3.5 with a subscribed contact: blocking sends it
    "unavailable", then no broadcast, probe answer or final presence
    reaches it; unblocking (3.4) gives it the current presence back and
    the user the contact's."""
    jd, jg = "frank@example.com", "carol@example.com"
    g = blocker(pool, appliance, "carol", "desk")
    d = blocker(pool, appliance, "frank", "desk", not_pid=g.worker)
    get_roster(g)
    get_roster(d)
    befriend(g, d, jg, jd)
    send_presence(g, status="here")
    presence_from(d, jg, status="here")

    assert block(g, jd)[0] == "result"
    presence_from(d, jg, "unavailable")

    # a broadcast (RFC 6121 4.4.2) skips the blocked subscriber
    send_presence(g, status="blocked you")
    assert none_from(d, jg) == []
    # a new session of frank probes carol (4.2.2): no answer comes back
    d2 = slix(pool, appliance, "frank", "phone", on_pid=g.worker)
    assert none_from(d2, jg, 2.0) == []
    # a directed presence is refused, as any stanza to a blocked JID
    send_presence(g, to=jd, status="directed")
    p = g.wait_presence(lambda p: p["type"] == "error")
    assert p["error"] == "not-acceptable"
    assert none_from(d, jg, 0.5) == []

    # 3.4: unblocked, the contact hears the current presence at once
    # (both of its resources), and carol hears frank's
    send_presence(d, status="frank is back")
    assert none_from(g, jd) == []
    assert unblock(g, jd)[0] == "result"
    for c in (d, d2):
        presence_from(c, jg, status="blocked you")
    presence_from(g, jd, status="frank is back")

    # blocked again, carol's final presence does not reach frank either
    assert block(g, jd)[0] == "result"
    presence_from(d, jg, "unavailable")
    g.disconnect()
    assert none_from(d, jg) == []


def test_offline_message_from_blocked_jid_refused(pool, appliance):
    """XEP-0191 3.5 with the recipient offline: the message is refused
    when it would be stored (<service-unavailable/>), nothing waits in
    offline storage, and the attempt is on the audit record."""
    jd, jg = "bob@example.com", "frank@example.com"
    g = blocker(pool, appliance, "frank", "off")
    assert block(g, jd)[0] == "result"
    g.disconnect()
    d = slix(pool, appliance, "bob", "sender")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and [
            s for s in status(appliance)["sessions"] if s["jid"] == jg]:
        time.sleep(0.05)

    d.message(jg, "while you are away", id="blk-off1")
    e = d.wait_message(lambda m: m["id"] == "blk-off1")
    assert e["type"] == "error" and e["error"] == "service-unavailable"
    assert db(appliance, "SELECT COUNT(*) FROM offline_message WHERE "
                         "owner_jid = '%s'" % jg)[0][0] == "0"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and db(
            appliance, "SELECT COUNT(*) FROM audit_record WHERE "
            "stanza_id = 'blk-off1'")[0][0] != "1":
        time.sleep(0.2)
    assert db(appliance, "SELECT COUNT(*) FROM audit_record WHERE "
                         "stanza_id = 'blk-off1'")[0][0] == "1"

    # someone frank did not block is stored as before, and delivered
    f = slix(pool, appliance, "erin", "sender")
    f.message(jg, "not blocked", id="blk-off2")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and db(
            appliance, "SELECT COUNT(*) FROM offline_message WHERE "
            "owner_jid = '%s'" % jg)[0][0] != "1":
        time.sleep(0.1)
    g = blocker(pool, appliance, "frank", "back")
    m = g.wait_message(lambda m: m["id"] == "blk-off2")
    assert m["delay"] is not None
    assert [m for m in g.drain(settle=1.0) if m["id"] == "blk-off1"] == []
    assert unblock(g)[0] == "result"


TUNE = "urn:example:blocking:tune"
PEP_PLUGINS = ("xep_0030", "xep_0004", "xep_0060", "xep_0163", "xep_0115")


def pep_session(pool, app, user, resource, **kw):
    """A slixmpp client whose caps ask for TUNE notifications (XEP-0163
    4.3.1); their items' texts land in c.tunes."""
    c = blocker(pool, app, user, resource, presence=False,
                plugins=PEP_PLUGINS, **kw)
    c.tunes = []
    pool.call(lambda: c.xmpp.add_event_handler(
        "pubsub_publish", lambda m: c.tunes.append(
            m["pubsub_event"]["items"]["item"]["payload"].text)))

    async def caps():
        c.xmpp["xep_0030"].add_feature(TUNE + "+notify")
        await c.xmpp["xep_0115"].update_caps(broadcast=False)
    c.run(caps)
    send_presence(c)
    return c


def tune(c, text):
    e = ET.Element("{%s}tune" % TUNE)
    e.text = text
    return c.run(lambda: c.xmpp["xep_0060"].publish(None, TUNE, payload=e,
                                                    timeout=10))


def wait_tune(c, text, timeout=10):
    deadline = time.monotonic() + timeout
    while text not in c.tunes:
        assert time.monotonic() < deadline, \
            "%s: no %r notification, have %r" % (c.jid, text, c.tunes)
        time.sleep(0.05)


def test_no_pep_notification_from_a_blocked_contact(pool, make_appliance):
    """Section 3.5 for PEP (XEP-0163): once erin is blocked, the
    notifications of her publishes reach neither of frank's sessions
    (one on each worker, so one gets them from its own worker and one
    through the other), while erin's own second session still gets
    them; unblocked, frank gets the next one again."""
    app = make_appliance()
    je, jf = "erin@example.com", "frank@example.com"
    e = pep_session(pool, app, "erin", "pub")
    e2 = pep_session(pool, app, "erin", "own", not_pid=e.worker)
    f1 = pep_session(pool, app, "frank", "near", on_pid=e.worker)
    f2 = pep_session(pool, app, "frank", "far", not_pid=e.worker)
    get_roster(e)
    get_roster(f1)
    befriend(e, f1, je, jf)
    assert blocklist(f2) == set()       # f2 asked: pushes reach it

    tune(e, "one")
    for c in (e2, f1, f2):
        wait_tune(c, "one")

    assert block(f1, je)[0] == "result"
    assert wait_push(f2) == ("block", {je})
    tune(e, "two")
    wait_tune(e2, "two")
    time.sleep(1.0)
    assert "two" not in f1.tunes and "two" not in f2.tunes, \
        (f1.tunes, f2.tunes)

    assert unblock(f1, je)[0] == "result"
    assert wait_push(f2) == ("unblock", {je})
    tune(e, "three")
    for c in (f1, f2):
        wait_tune(c, "three")
    assert "two" not in f1.tunes and "two" not in f2.tunes
