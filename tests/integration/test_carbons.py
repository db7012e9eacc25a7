"""XEP-0280 Message Carbons, with Debian's python3-slixmpp (xep_0280).

Two resources of alice sit in different nginx workers (checked through
/conclave-status); each enables carbons with the plugin.  A chat message
alice's phone sends reaches her laptop as <sent/>, one bob sends to the
phone reaches the laptop as <received/>, one to the bare JID reaches the
resource that did not get it.  <private/> and XEP-0334 <no-copy/> keep a
message out of carbons, a resource that did not enable them gets none,
and <disable/> stops them.  The original message stays the one audit
record.  Bad requests get the XEP's errors; the server's disco#info
lists the feature, its disco#items the conference service (XEP-0030).
A second client library, python3-aioxmpp (aioxmpp.CarbonsClient), sees
the same on two workers, and its disable() stops the copies.
"""

import queue
import time
import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError

from chathelp import send_presence, slix, status, worker_of

DB = "conclave"
NS = "urn:xmpp:carbons:2"


def raw_iq(c, itype, payload, to=None):
    """Sends an iq with the given child; ("result", iq) or the error's
    (condition, iq)."""
    async def go():
        iq = c.xmpp.Iq()
        iq["type"] = itype
        if to:
            iq["to"] = to
        iq.append(ET.fromstring(payload))
        try:
            return "result", await iq.send(timeout=10)
        except IqError as e:
            return e.iq["error"]["condition"], e.iq
    return c.run(go, 20)


def with_carbons(pool, app, user, resource, enable=True, **kw):
    """A slixmpp client with the xep_0280 plugin; its carbon copies land
    in c.carbons as (direction, inner from, inner to, body)."""
    c = slix(pool, app, user, resource, plugins=["xep_0280"], **kw)
    c.carbons = queue.Queue()

    def handler(direction):
        def h(msg):
            inner = msg["carbon_%s" % direction]
            c.carbons.put((direction, str(msg["from"]), str(inner["from"]),
                           str(inner["to"]), inner["body"]))
        return h

    def setup():
        c.xmpp.add_event_handler("carbon_received", handler("received"))
        c.xmpp.add_event_handler("carbon_sent", handler("sent"))
    pool.call(setup)
    if enable:
        c.run(lambda: c.xmpp["xep_0280"].enable(timeout=10))
    return c


def wait_carbon(c, match, timeout=10):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:
            m = c.carbons.get(timeout=0.2)
        except queue.Empty:
            continue
        if match(m):
            return m
        seen.append(m)
    raise AssertionError("no matching carbon; got %r" % seen)


def no_carbon(c, settle=1.0):
    got = []
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        try:
            got.append(c.carbons.get(timeout=0.1))
        except queue.Empty:
            pass
    return got


def test_sent_and_received_copies_across_workers(pool, appliance):
    phone = with_carbons(pool, appliance, "alice", "phone")
    laptop = with_carbons(pool, appliance, "alice", "laptop",
                          not_pid=phone.worker)
    assert laptop.worker != phone.worker
    tablet = slix(pool, appliance, "alice", "tablet")   # no carbons
    bob = slix(pool, appliance, "bob", "desk")

    bob.message(phone.jid, "to the phone", id="cb-r1")
    m = phone.wait_message(lambda m: m["body"] == "to the phone")
    assert m["from"] == bob.jid
    d, outer, frm, to, body = wait_carbon(laptop,
                                          lambda c: c[4] == "to the phone")
    assert (d, outer, frm, to) == ("received", "alice@example.com", bob.jid,
                                   phone.jid)

    phone.message(bob.jid, "from the phone", id="cb-s1")
    bob.wait_message(lambda m: m["body"] == "from the phone")
    d, outer, frm, to, body = wait_carbon(laptop,
                                          lambda c: c[4] == "from the phone")
    assert (d, outer, frm, to) == ("sent", "alice@example.com", phone.jid,
                                   bob.jid)

    # the sender never gets its own copy; the phone got no copy of what
    # was addressed to it; the tablet never asked for any
    assert no_carbon(phone) == []
    assert no_carbon(laptop) == []
    for m in tablet.drain(settle=0.5):
        assert m["body"] not in ("to the phone", "from the phone"), m
        assert m["from"] != "alice@example.com", m


def carbons_count(app, settle=10):
    """The registry's count of sessions with carbons enabled, once it
    agrees with the sessions it lists (each has "carbons"): the router
    skips the carbons work of every message while the count is 0."""
    deadline = time.monotonic() + settle
    while True:
        st = status(app)
        listed = sum(1 for s in st["sessions"] if s["carbons"])
        if st["sessions_carbons"] == listed or time.monotonic() > deadline:
            assert st["sessions_carbons"] == listed, st
            return listed, st


def test_count_of_carbons_sessions(pool, appliance):
    """The count that lets the router skip carbons follows enable,
    disable and the end of a session, across workers; with one
    resource left that enabled them, copies still go to it."""
    base, _ = carbons_count(appliance)
    phone = with_carbons(pool, appliance, "alice", "phone")
    laptop = with_carbons(pool, appliance, "alice", "laptop",
                          not_pid=phone.worker)
    assert carbons_count(appliance)[0] == base + 2

    laptop.disconnect()
    deadline = time.monotonic() + 10
    while carbons_count(appliance)[0] != base + 1:
        assert time.monotonic() < deadline, status(appliance)
        time.sleep(0.1)

    bob = slix(pool, appliance, "bob", "desk")
    tablet = slix(pool, appliance, "alice", "tablet")   # no carbons
    bob.message(tablet.jid, "to the tablet", id="cb-n1")
    tablet.wait_message(lambda m: m["body"] == "to the tablet")
    d, outer, frm, to, body = wait_carbon(
        phone, lambda c: c[4] == "to the tablet")
    assert (d, to) == ("received", tablet.jid)

    assert raw_iq(phone, "set", "<disable xmlns='%s'/>" % NS)[0] == "result"
    assert carbons_count(appliance)[0] == base
    phone.run(lambda: phone.xmpp["xep_0280"].enable(timeout=10))
    assert carbons_count(appliance)[0] == base + 1
    phone.disconnect()
    deadline = time.monotonic() + 10
    while carbons_count(appliance)[0] != base:
        assert time.monotonic() < deadline, status(appliance)
        time.sleep(0.1)


def test_bare_jid_copy_goes_to_the_other_resource(pool, appliance):
    high = with_carbons(pool, appliance, "carol", "high")
    low = with_carbons(pool, appliance, "carol", "low", not_pid=high.worker)
    send_presence(high, priority=10)
    send_presence(low, priority=1)
    dave = slix(pool, appliance, "bob", "bare")
    time.sleep(0.5)

    dave.message("carol@example.com", "to the account", id="cb-b1")
    high.wait_message(lambda m: m["body"] == "to the account")
    d, _, frm, to, _ = wait_carbon(low, lambda c: c[4] == "to the account")
    assert d == "received" and frm == dave.jid
    assert to == "carol@example.com"
    assert [m for m in low.drain(settle=0.5)
            if m["body"] == "to the account"] == []


def test_private_and_no_copy_stay_out(pool, appliance):
    a = with_carbons(pool, appliance, "erin", "one")
    b = with_carbons(pool, appliance, "erin", "two", not_pid=a.worker)
    bob = slix(pool, appliance, "bob", "priv")

    a.send(lambda x: x.send_raw(
        "<message xmlns='jabber:client' type='chat' to='%s' id='p1'>"
        "<body>private one</body><private xmlns='%s'/></message>"
        % (bob.jid, NS)))
    a.send(lambda x: x.send_raw(
        "<message xmlns='jabber:client' type='chat' to='%s' id='p2'>"
        "<body>no copy</body><no-copy xmlns='urn:xmpp:hints'/></message>"
        % bob.jid))
    bob.send(lambda x: x.send_raw(
        "<message xmlns='jabber:client' type='chat' to='%s' id='p3'>"
        "<body>private in</body><private xmlns='%s'/></message>"
        % (a.jid, NS)))
    a.message(bob.jid, "public one", id="p4")

    bob.wait_message(lambda m: m["body"] == "private one")
    bob.wait_message(lambda m: m["body"] == "no copy")
    a.wait_message(lambda m: m["body"] == "private in")
    bob.wait_message(lambda m: m["body"] == "public one")

    # copies are made in order: the public one is the first that comes
    d, _, _, _, body = wait_carbon(b, lambda c: True)
    assert (d, body) == ("sent", "public one")
    assert no_carbon(b, 0.5) == []


def test_disable_and_groupchat(pool, appliance):
    a = with_carbons(pool, appliance, "frank", "one")
    b = with_carbons(pool, appliance, "frank", "two", not_pid=a.worker)
    bob = slix(pool, appliance, "bob", "dis")

    b.run(lambda: b.xmpp["xep_0280"].disable(timeout=10))
    bob.message(a.jid, "after disable", id="d1")
    a.message(bob.jid, "sent after disable", id="d2")
    a.wait_message(lambda m: m["body"] == "after disable")
    bob.wait_message(lambda m: m["body"] == "sent after disable")
    # a headline is not a chat message (section 6)
    a.message(bob.jid, "headline", id="d3", mtype="headline")
    bob.wait_message(lambda m: m["body"] == "headline")
    assert no_carbon(b) == []

    b.run(lambda: b.xmpp["xep_0280"].enable(timeout=10))
    a.message(bob.jid, "enabled again", id="d4")
    d, _, _, _, body = wait_carbon(b, lambda c: True)
    assert (d, body) == ("sent", "enabled again")


def test_copies_are_not_audited(pool, appliance):
    a = with_carbons(pool, appliance, "alice", "aud1")
    b = with_carbons(pool, appliance, "alice", "aud2", not_pid=a.worker)
    bob = slix(pool, appliance, "bob", "aud")

    a.message(bob.jid, "audited once", id="cb-audit-1")
    wait_carbon(b, lambda c: c[4] == "audited once")
    bob.message(a.jid, "audited once too", id="cb-audit-2")
    wait_carbon(b, lambda c: c[4] == "audited once too")

    def count(sid):
        return int(appliance.mariadb.query(
            "SELECT COUNT(*) FROM audit_record WHERE event='message' AND "
            "stanza_id = '%s'" % sid, database=DB)[0][0])

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if count("cb-audit-1") and count("cb-audit-2"):
            break
        time.sleep(0.2)
    time.sleep(1)
    assert count("cb-audit-1") == 1
    assert count("cb-audit-2") == 1


def test_bad_requests(pool, appliance):
    c = slix(pool, appliance, "alice", "neg")
    # section 4: enable and disable are iq set, and empty
    assert raw_iq(c, "get", "<enable xmlns='%s'/>" % NS)[0] == \
        "bad-request"
    assert raw_iq(c, "set", "<enable xmlns='%s'><x/></enable>" % NS)[0] \
        == "bad-request"
    assert raw_iq(c, "set", "<disable xmlns='%s'>text</disable>" % NS)[0] \
        == "bad-request"
    # an older namespace is not offered
    assert raw_iq(c, "set", "<enable xmlns='urn:xmpp:carbons:1'/>")[0] == \
        "service-unavailable"
    # the user's session still works
    assert raw_iq(c, "set", "<enable xmlns='%s'/>" % NS)[0] == "result"
    assert raw_iq(c, "set", "<disable xmlns='%s'/>" % NS)[0] == "result"


def test_disco(pool, appliance):
    c = slix(pool, appliance, "alice", "disco",
             plugins=["xep_0030"])
    info = c.run(lambda: c.xmpp["xep_0030"].get_info(
        jid="example.com", timeout=10))
    features = set(info["disco_info"]["features"])
    assert NS in features
    assert "urn:xmpp:blocking" in features

    # XEP-0030 section 4: the server's items are its components
    items = c.run(lambda: c.xmpp["xep_0030"].get_items(
        jid="example.com", timeout=10))
    jids = [i[0] for i in items["disco_items"]["items"]]
    assert jids == ["conference.example.com"]

    # and each one answers for itself
    info = c.run(lambda: c.xmpp["xep_0030"].get_info(
        jid="conference.example.com", timeout=10))
    ids = [(i[0], i[1]) for i in info["disco_info"]["identities"]]
    assert ("conference", "text") in ids
    assert "http://jabber.org/protocol/muc" in \
        info["disco_info"]["features"]


def test_aioxmpp_sent_received_and_disable(appliance):
    """python3-aioxmpp's own XEP-0280 service (aioxmpp.CarbonsClient)
    on two resources of carol in different workers: the phone's sent
    message reaches the laptop as <sent/>, one erin sends to the phone
    as <received/>; after the laptop's disable() neither comes."""
    import asyncio
    import contextlib
    import aioxmpp
    import aioxmpp.carbons
    import aioxmpp.dispatcher

    def make(user, res):
        return aioxmpp.PresenceManagedClient(
            aioxmpp.JID.fromstr("%s@example.com/%s" % (user, res)),
            aioxmpp.make_security_layer(user + "-pw", no_verify=True),
            override_peer=[("127.0.0.1", appliance.nginx.xmpp_port,
                            aioxmpp.connector.STARTTLSConnector())])

    async def place(stack, user, res, not_pid=None):
        """A connected client (and the copies it gets, in a queue)
        whose session is not in worker not_pid."""
        for i in range(40):
            inner = contextlib.AsyncExitStack()
            client = make(user, "%s%d" % (res, i))
            await inner.enter_async_context(client.connected(
                presence=aioxmpp.PresenceState(False)))
            pid = worker_of(appliance, str(client.local_jid))
            if pid is not None and pid != not_pid:
                stack.push_async_callback(inner.aclose)
                client.copies = asyncio.Queue()
                client.inbox = []

                def on_message(msg, c=client):
                    for d in ("sent", "received"):
                        w = getattr(msg, "xep0280_" + d, None)
                        if w is not None and w.stanza is not None:
                            s = w.stanza
                            c.copies.put_nowait((d, str(msg.from_),
                                                 str(s.from_), str(s.to),
                                                 s.body.any()))
                            return
                    if msg.body:
                        c.inbox.append(msg.body.any())
                disp = client.summon(aioxmpp.dispatcher
                                     .SimpleMessageDispatcher)
                disp.register_callback(None, None, on_message)
                client.set_presence(aioxmpp.PresenceState(True), "")
                return client, pid
            await inner.aclose()
        pytest.fail("no session of %s off worker %s" % (user, not_pid))

    async def copy_of(client, body, timeout=10):
        deadline = asyncio.get_running_loop().time() + timeout
        seen = []
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return seen
            try:
                c = await asyncio.wait_for(client.copies.get(), left)
            except asyncio.TimeoutError:
                return seen
            if c[4] == body:
                return c
            seen.append(c)

    async def say(client, to, body):
        msg = aioxmpp.Message(type_=aioxmpp.MessageType.CHAT,
                              to=aioxmpp.JID.fromstr(to))
        msg.body[None] = body
        await client.send(msg)

    async def go():
        async with contextlib.AsyncExitStack() as stack:
            phone, ppid = await place(stack, "carol", "aphone")
            laptop, lpid = await place(stack, "carol", "alaptop",
                                       not_pid=ppid)
            erin, _ = await place(stack, "erin", "aerin")
            P, L, E = (str(c.local_jid) for c in (phone, laptop, erin))
            for c in (phone, laptop):
                await c.summon(aioxmpp.CarbonsClient).enable()

            await say(phone, E, "aio sent")
            sent = await copy_of(laptop, "aio sent")
            await say(erin, P, "aio received")
            received = await copy_of(laptop, "aio received")

            await laptop.summon(aioxmpp.CarbonsClient).disable()
            await say(phone, E, "aio after disable")
            await say(erin, P, "aio after disable 2")
            # both were delivered; a copy would have come with them
            deadline = asyncio.get_running_loop().time() + 10
            while "aio after disable" not in erin.inbox or \
                    "aio after disable 2" not in phone.inbox:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)
            late = []
            while not laptop.copies.empty():
                late.append(laptop.copies.get_nowait())
            return (ppid, lpid, P, L, E, sent, received, late)

    ppid, lpid, P, L, E, sent, received, late = asyncio.run(
        asyncio.wait_for(go(), 120))
    assert ppid != lpid
    assert sent == ("sent", "carol@example.com", P, E, "aio sent")
    assert received == ("received", "carol@example.com", E, P,
                        "aio received")
    assert late == []
