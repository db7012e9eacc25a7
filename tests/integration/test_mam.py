"""History: XEP-0359 stanza ids and XEP-0313 MAM with RSM paging,
corrections (XEP-0308) and retractions (XEP-0424), with slixmpp's own
plugins as the client (docs/history.md).

The archive is the audit_record table: a test that has just sent
messages waits until the shipper has copied them into MariaDB
(docs/history.md "Right after a send") before it queries.
"""

import asyncio
import re
import time

from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

import slixpool

DB = "conclave"
DOMAIN = "example.com"
ID_RE = re.compile(r"^[^:]+:\d+:\d+$")

# one SlixPool for the whole file: its clients live across tests
pool = slixpool.module_pool


def client(pool, appliance, user, res):
    c = pool.client("%s@%s/%s" % (user, DOMAIN, res), user + "-pw",
                    appliance.nginx.xmpp_port, connect=False)
    for plugin in ("xep_0059", "xep_0313", "xep_0359", "xep_0308",
                   "xep_0424"):
        pool.call(lambda p=plugin: c.xmpp.register_plugin(p))
    c.raw = []
    c.results = []
    pool.call(lambda: c.xmpp.add_event_handler(
        "message", lambda m: c.raw.append(m)))
    # MAM results do not reach the "message" event: a handler of our own
    pool.call(lambda: c.xmpp.register_handler(Callback(
        "mam results", MatchXPath("{jabber:client}message/"
                                  "{urn:xmpp:mam:2}result"),
        lambda m: c.results.append(m))))
    assert c.connect()
    return c


def shipped(app, actor, n, timeout=30):
    """Waits until n message records of actor are in MariaDB."""
    deadline = time.monotonic() + timeout
    while True:
        got = int(app.mariadb.scalar(
            "SELECT COUNT(*) FROM audit_record WHERE event = 'message'"
            " AND actor_user = '%s@%s'" % (actor, DOMAIN), DB))
        if got >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def mam(pool, c, timeout=20, **kw):
    """One query; returns (result messages, fin iq) or the error iq."""
    async def go():
        return await c.xmpp["xep_0313"].retrieve(timeout=timeout, **kw)
    fut = asyncio.run_coroutine_threadsafe(go(), pool.loop)
    try:
        iq = fut.result(timeout + 5)
    except Exception as e:           # IqError carries the error iq
        iq = getattr(e, "iq", None)
        if iq is None:
            raise
        return None, iq
    return list(iq["mam"]["results"]), iq


def mam_pages(pool, c, with_jid, max_, reverse=False, timeout=60,
              npages=100):
    """slixmpp's own RSM iterator (XEP-0059): each page's results, in
    the order the client asked for them; a backward walk starts with an
    empty <before/> and goes on with each page's <first/>."""
    async def go():
        pages = []
        it = c.xmpp["xep_0313"].retrieve(with_jid=with_jid, iterator=True,
                                         reverse=reverse,
                                         rsm={"max": max_})
        async for page in it:
            pages.append((list(page["mam"]["results"]), page))
            if len(pages) >= npages:
                break
        return pages
    return asyncio.run_coroutine_threadsafe(go(), pool.loop).result(timeout)


def condition(iq):
    """The error condition, read from the XML: slixmpp 1.8 does not
    know every RFC 6120 condition (policy-violation)."""
    err = iq.xml.find("{jabber:client}error")
    for child in err:
        if child.tag.startswith("{urn:ietf:params:xml:ns:xmpp-stanzas}"):
            return child.tag.split("}")[1]
    return None


def complete(fin):
    """<fin complete='true'/> (slixmpp has no interface for it)."""
    return fin.xml.find("{urn:xmpp:mam:2}fin").get("complete") == "true"


def body_of(result):
    return result["mam_result"]["forwarded"]["stanza"]["body"]


def raw_query(pool, c, xml, timeout=15):
    """Sends an iq built from raw XML and returns the answer."""
    from slixmpp.xmlstream import ET

    async def go():
        iq = c.xmpp.make_iq_set()
        iq.append(ET.fromstring(xml))
        iq["type"] = "set"
        return await iq.send(timeout=timeout)
    fut = asyncio.run_coroutine_threadsafe(go(), pool.loop)
    try:
        return fut.result(timeout + 5)
    except Exception as e:
        if getattr(e, "iq", None) is not None:
            return e.iq
        raise


def send_raw(pool, c, xml):
    pool.call(lambda: c.xmpp.send_raw(xml))


def test_stanza_id_stamped_and_origin_id_kept(appliance, pool):
    a = client(pool, appliance, "alice", "sid")
    b = client(pool, appliance, "bob", "sid")

    def go():
        m = a.xmpp.make_message(mto="bob@example.com", mbody="hello sid",
                                mtype="chat")
        m["id"] = "sid-1"
        m["origin_id"]["id"] = "origin-sid-1"
        # a forged id by bob's archive must not survive
        m.append(a.xmpp["xep_0359"].stanza.StanzaID())
        m["stanza_id"]["by"] = "bob@example.com"
        m["stanza_id"]["id"] = "forged"
        m.send()
    pool.call(go)

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = [m for m in b.raw if m["body"] == "hello sid"]
        if got:
            break
        time.sleep(0.05)
    assert got, "bob got nothing"
    m = got[0]
    ids = m.xml.findall("{urn:xmpp:sid:0}stanza-id")
    assert len(ids) == 1
    sid = ids[0].get("id")
    assert ids[0].get("by") == "bob@example.com"
    assert sid != "forged" and ID_RE.match(sid), sid
    assert m["origin_id"]["id"] == "origin-sid-1"

    # the id names the audit record that holds the message
    node, writer, seq = sid.rsplit(":", 2)
    row = appliance.mariadb.query(
        "SELECT actor_user, peer, stanza_id FROM audit_record"
        " WHERE node = '%s' AND writer_id = %s AND seq = %s"
        % (node, writer, seq), DB) if shipped(appliance, "alice", 1) else []
    assert row == [("alice@example.com", "bob@example.com", "sid-1")]

    # and it is the MAM id of the message in both archives
    assert shipped(appliance, "alice", 1) >= 1
    for c in (a, b):
        res, fin = mam(pool, c, with_jid="bob@example.com"
                       if c is a else "alice@example.com")
        assert fin["type"] == "result"
        mine = [r for r in res if body_of(r) == "hello sid"]
        assert [r["mam_result"]["id"] for r in mine] == [sid]
    a.disconnect()
    b.disconnect()


def test_paging_across_1000_messages(appliance, pool):
    a = client(pool, appliance, "carol", "pg")
    b = client(pool, appliance, "erin", "pg")
    before = shipped(appliance, "carol", 0)

    for i in range(1000):
        a.message("erin@example.com", "page %04d" % i)
    assert shipped(appliance, "carol", before + 1000, timeout=60) \
        == before + 1000

    # forward, 50 at a time, from the start of the conversation
    seen, after, pages = [], None, 0
    while True:
        rsm = {"max": 50}
        if after:
            rsm["after"] = after
        res, fin = mam(pool, a, with_jid="erin@example.com", rsm=rsm)
        assert fin["type"] == "result"
        pages += 1
        seen += [body_of(r) for r in res]
        assert len(res) <= 50
        if complete(fin):
            break
        assert len(res) == 50, (pages, len(seen), str(fin))
        after = fin["mam_fin"]["rsm"]["last"]
        assert after == res[-1]["mam_result"]["id"]
        assert pages < 30
    assert seen == ["page %04d" % i for i in range(1000)]
    # 1,000 = 20 pages of 50: the 20th already says it is the last
    assert pages == 20

    # backward from the end, from erin's side (the received copy)
    pages = mam_pages(pool, b, "carol@example.com", 50, reverse=True)
    seen = []
    for res, fin in pages:
        seen = [body_of(r) for r in res] + seen
    assert seen == ["page %04d" % i for i in range(1000)]
    # the walk ends on the page that says complete='true'
    assert complete(pages[19][1]) and not complete(pages[18][1])

    # after-id / before-id (extended fields) bound a range
    res, fin = mam(pool, a, with_jid="erin@example.com", rsm={"max": 5})
    ids = [r["mam_result"]["id"] for r in res]
    xml = ("<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data'"
           " type='submit'><field var='FORM_TYPE'><value>urn:xmpp:mam:2"
           "</value></field><field var='after-id'><value>%s</value>"
           "</field><field var='before-id'><value>%s</value></field></x>"
           "</query>" % (ids[0], ids[4]))
    del a.results[:]
    fin = raw_query(pool, a, xml)
    assert fin["type"] == "result"
    assert [m["mam_result"]["id"] for m in a.results] == ids[1:4]
    a.disconnect()
    b.disconnect()


def fin_set(fin, name):
    """<fin><set><name/></set></fin> of the RSM answer, or None."""
    return fin.xml.find("{urn:xmpp:mam:2}fin/"
                        "{http://jabber.org/protocol/rsm}set/"
                        "{http://jabber.org/protocol/rsm}" + name)


def form_page(pool, c, fields, rsm):
    """One page through raw XML: the form's fields (after-id and
    before-id, which slixmpp has no interface for) and an RSM <set/>;
    returns (results, fin)."""
    xml = ("<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data'"
           " type='submit'><field var='FORM_TYPE'><value>urn:xmpp:mam:2"
           "</value></field>%s</x><set xmlns='http://jabber.org/protocol/"
           "rsm'>%s</set></query>" % (
               "".join("<field var='%s'><value>%s</value></field>" % f
                       for f in fields), rsm))
    del c.results[:]
    fin = raw_query(pool, c, xml)
    return list(c.results), fin


def walk(pool, c, fields, backward, max_=50):
    """Every page of a range, forward (RSM <after/> the last id) or
    backward (an empty <before/>, then <before/> the first id), each
    page in time order; returns (bodies in time order, pages)."""
    seen, pos, pages = [], None, 0
    while True:
        if backward:
            rsm = "<max>%d</max><before>%s</before>" % (max_, pos or "")
        else:
            rsm = "<max>%d</max>%s" % (
                max_, "<after>%s</after>" % pos if pos else "")
        res, fin = form_page(pool, c, fields, rsm)
        assert fin["type"] == "result", fin
        pages += 1
        bodies = [body_of(r) for r in res]
        seen = bodies + seen if backward else seen + bodies
        # no <count/> on a page with results: XEP-0059 2.6 allows
        # leaving it out, and counting a large range costs a scan
        assert res and fin_set(fin, "count") is None
        if complete(fin):
            return seen, pages
        assert len(res) == max_
        pos = (fin_set(fin, "first") if backward
               else fin_set(fin, "last")).text
        assert pos == res[0 if backward else -1]["mam_result"]["id"]
        assert pages < 100


def test_paging_1000_both_directions_every_filter(appliance, pool):
    """1,000 messages that go both ways, so that every page merges what
    the user sent with what they received, paged forward and backward
    with each filter: with, start, end, after-id, before-id."""
    from datetime import datetime, timezone

    a = client(pool, appliance, "bob", "all")
    b = client(pool, appliance, "frank", "all")
    n_a, n_b = shipped(appliance, "bob", 0), shipped(appliance, "frank", 0)
    time.sleep(0.01)
    t0 = datetime.now(timezone.utc)
    for i in range(1000):
        (a if i % 2 == 0 else b).message(
            ("frank" if i % 2 == 0 else "bob") + "@example.com",
            "mix %04d" % i)
        if i % 100 == 99:
            # each side's messages in order of sending, both sides
            # interleaved: wait for the other side's last one
            (b if i % 2 == 0 else a).wait_message(
                lambda m, i=i: m["body"] == "mix %04d" % i, timeout=30)
    assert shipped(appliance, "bob", n_a + 500, timeout=60) == n_a + 500
    assert shipped(appliance, "frank", n_b + 500, timeout=60) == n_b + 500
    want = ["mix %04d" % i for i in range(1000)]
    start = [("start", t0.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))]
    with_b = [("with", "frank@example.com")]

    # the two senders' messages interleave in the archive's one order
    # (time of recording, then id), each sender's own in sending order
    order = None
    for fields in (start, with_b):
        for backward in (False, True):
            seen, pages = walk(pool, a, fields, backward)
            assert sorted(seen) == want, (fields, backward, len(seen))
            assert [x for x in seen if int(x[4:]) % 2] == want[1::2]
            assert [x for x in seen if not int(x[4:]) % 2] == want[0::2]
            order = order or seen
            assert seen == order, (fields, backward)
            assert pages == 20

    # ids of the range: every 100th message, from bob's archive
    seen_ids = {}
    res, fin = form_page(pool, a, start, "<max>250</max>")
    for r in res:
        seen_ids[body_of(r)] = r["mam_result"]["id"]
    res, fin = form_page(pool, a, start, "<max>250</max><after>%s</after>"
                         % res[-1]["mam_result"]["id"])
    for r in res:
        seen_ids[body_of(r)] = r["mam_result"]["id"]
    lo, hi = seen_ids["mix 0099"], seen_ids["mix 0420"]

    # after-id / before-id bound the range; pages within it both ways
    for backward in (False, True):
        seen, pages = walk(pool, a, with_b + [("after-id", lo),
                                              ("before-id", hi)], backward)
        inner = order[order.index("mix 0099") + 1:order.index("mix 0420")]
        assert seen == inner
        assert pages == (len(inner) + 49) // 50

    # end: a stamp of the archive ends the range there (inclusive)
    res, fin = form_page(pool, a, with_b, "<max>1</max><after>%s</after>"
                         % seen_ids["mix 0200"])
    end = res[0]["mam_result"]["forwarded"]["delay"]["stamp"]
    end = end.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    seen, pages = walk(pool, a, start + [("end", end)], True)
    n = order.index("mix 0200") + 2
    # a message of the same microsecond may join the range's end
    assert seen[:n] == order[:n] and len(seen) <= n + 1

    # past the last message: an empty page, complete, <count>0</count>
    with_a = [("with", "bob@example.com")]
    res, fin = form_page(pool, b, with_a, "<max>1</max><before/>")
    res, fin = form_page(pool, b, with_a, "<max>50</max><after>%s</after>"
                         % res[-1]["mam_result"]["id"])
    assert res == [] and complete(fin)
    assert fin_set(fin, "count").text == "0"

    # a well-formed id that is not in frank's archive, and one that is
    # in bob's but names a message frank never saw: not found
    carol = client(pool, appliance, "carol", "all")
    carol.message("erin@example.com", "not frank's")
    assert shipped(appliance, "carol", 1) >= 1
    res, fin = mam(pool, carol, with_jid="erin@example.com",
                   rsm={"max": 1, "before": ""})
    foreign = res[-1]["mam_result"]["id"]
    for bad in (foreign, foreign.rsplit(":", 1)[0] + ":999999999"):
        for rsm in ("<after>%s</after>" % bad, "<before>%s</before>" % bad):
            res, iq = form_page(pool, b, [], "<max>5</max>" + rsm)
            assert iq["type"] == "error" and condition(iq) == \
                "item-not-found", (bad, rsm)
        res, iq = form_page(pool, b, [("after-id", bad)], "<max>5</max>")
        assert iq["type"] == "error" and condition(iq) == "item-not-found"
    for c in (a, b, carol):
        c.disconnect()


def test_with_start_end_filters(appliance, pool):
    a = client(pool, appliance, "alice", "flt")
    d = client(pool, appliance, "frank", "flt")
    n0 = shipped(appliance, "frank", 0)
    d.message("alice@example.com", "from frank 1")
    time.sleep(1.1)
    t_mid = time.time()
    time.sleep(1.1)
    d.message("alice@example.com", "from frank 2")
    assert shipped(appliance, "frank", n0 + 2) == n0 + 2

    res, fin = mam(pool, a, with_jid="frank@example.com")
    bodies = [body_of(r) for r in res]
    assert bodies[-2:] == ["from frank 1", "from frank 2"]
    assert all(str(r["mam_result"]["forwarded"]["stanza"]["from"].bare)
               in ("frank@example.com", "alice@example.com") for r in res)

    from datetime import datetime, timezone
    mid = datetime.fromtimestamp(t_mid, timezone.utc)
    res, _ = mam(pool, a, with_jid="frank@example.com", start=mid)
    assert [body_of(r) for r in res] == ["from frank 2"]
    res, _ = mam(pool, a, with_jid="frank@example.com", end=mid)
    assert "from frank 2" not in [body_of(r) for r in res]
    assert "from frank 1" in [body_of(r) for r in res]
    # a delay stamp on every result
    assert all(r["mam_result"]["forwarded"]["delay"]["stamp"] for r in res)
    a.disconnect()
    d.disconnect()


def test_with_a_full_jid_keeps_resources_apart(appliance, pool):
    """XEP-0313 4.1.1: 'with' a full JID returns only what was exchanged
    with that resource (what the user sent to it, what it sent); the
    bare JID returns all of the contact's resources."""
    a = client(pool, appliance, "alice", "fj")
    phone = client(pool, appliance, "frank", "phone")
    desk = client(pool, appliance, "frank", "desk")
    na = shipped(appliance, "alice", 0)
    nf = shipped(appliance, "frank", 0)
    a.message("frank@example.com/phone", "to phone")
    a.message("frank@example.com/desk", "to desk")
    a.message("frank@example.com", "to bare")
    phone.message("alice@example.com/fj", "from phone")
    desk.message("alice@example.com/fj", "from desk")
    assert shipped(appliance, "alice", na + 3) == na + 3
    assert shipped(appliance, "frank", nf + 2) == nf + 2

    res, fin = mam(pool, a, with_jid="frank@example.com/phone")
    assert [body_of(r) for r in res] == ["to phone", "from phone"]
    assert complete(fin)
    res, _ = mam(pool, a, with_jid="frank@example.com/desk")
    assert [body_of(r) for r in res] == ["to desk", "from desk"]
    res, _ = mam(pool, a, with_jid="frank@example.com/nowhere")
    assert res == []
    res, _ = mam(pool, a, with_jid="frank@example.com")
    assert [body_of(r) for r in res][-5:] == [
        "to phone", "to desk", "to bare", "from phone", "from desk"]
    for c in (a, phone, desk):
        c.disconnect()


def test_query_right_after_send_sees_it(appliance, pool):
    """No waiting for the shipper on the client's side: the server holds
    the query until MariaDB has what was journaled before it came."""
    a = client(pool, appliance, "erin", "now")
    b = client(pool, appliance, "frank", "now")
    for i in range(10):
        a.message("frank@example.com", "now %d" % i)
        b.wait_message(lambda m, i=i: m["body"] == "now %d" % i)
        # the receiver asks at once, from its own archive
        res, fin = mam_pages(pool, b, "erin@example.com", 1,
                             reverse=True, npages=1)[0]
        assert [body_of(r) for r in res] == ["now %d" % i]
    a.disconnect()
    b.disconnect()


def test_someone_elses_archive_is_forbidden(appliance, pool):
    a = client(pool, appliance, "alice", "forb")
    res, iq = mam(pool, a, jid="bob@example.com")
    assert iq["type"] == "error"
    assert condition(iq) == "forbidden"
    a.disconnect()


def test_oversized_page_and_bad_input(appliance, pool):
    a = client(pool, appliance, "alice", "big")
    res, iq = mam(pool, a, rsm={"max": 100000})
    assert iq["type"] == "error"
    assert condition(iq) == "policy-violation"

    # the largest allowed page is served
    res, iq = mam(pool, a, rsm={"max": 250})
    assert iq["type"] == "result"

    for xml, cond in [
        ("<query xmlns='urn:xmpp:mam:2'><set xmlns="
         "'http://jabber.org/protocol/rsm'><after>nope</after></set>"
         "</query>", "item-not-found"),
        ("<query xmlns='urn:xmpp:mam:2'><set xmlns="
         "'http://jabber.org/protocol/rsm'><after>local:0:999999999</after>"
         "</set></query>", "item-not-found"),
        ("<query xmlns='urn:xmpp:mam:2'><set xmlns="
         "'http://jabber.org/protocol/rsm'><max>-3</max></set></query>",
         "bad-request"),
        ("<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data'"
         " type='submit'><field var='start'><value>yesterday</value>"
         "</field></x></query>", "bad-request"),
        ("<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data'"
         " type='submit'><field var='with'><value>@@</value>"
         "</field></x></query>", "jid-malformed"),
        ("<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data'"
         " type='submit'><field var='fulltext'><value>x</value>"
         "</field></x></query>", "feature-not-implemented"),
    ]:
        iq = raw_query(pool, a, xml)
        assert iq["type"] == "error", xml
        assert condition(iq) == cond, xml
    a.disconnect()


def test_corrections_and_retractions(appliance, pool):
    a = client(pool, appliance, "alice", "fix")
    b = client(pool, appliance, "bob", "fix")
    n0 = shipped(appliance, "alice", 0)

    a.message("bob@example.com", "teh original", id="fx-1")

    def correct(body):
        m = a.xmpp.make_message(mto="bob@example.com", mbody=body,
                                mtype="chat")
        m["replace"]["id"] = "fx-1"          # XEP-0308 section 3
        m.send()
    pool.call(lambda: correct("the original"))
    pool.call(lambda: correct("the final"))
    a.message("bob@example.com", "regrettable", id="fx-2")
    pool.call(lambda: a.xmpp["xep_0424"].send_retraction(
        "bob@example.com", "fx-2", mtype="chat",
        fallback_text="retracted"))
    # the current retraction namespace, as Conversations sends it
    send_raw(pool, a, "<message xmlns='jabber:client' type='chat'"
             " to='bob@example.com' id='fx-3'><body>oops</body></message>")
    send_raw(pool, a, "<message xmlns='jabber:client' type='chat'"
             " to='bob@example.com' id='fx-4'><retract"
             " xmlns='urn:xmpp:message-retract:1' id='fx-3'/>"
             "<body>retracted</body></message>")
    assert shipped(appliance, "alice", n0 + 7) == n0 + 7

    for c, peer in ((a, "bob@example.com"), (b, "alice@example.com")):
        res, fin = mam_pages(pool, c, peer, 7, reverse=True)[0]
        by_id = {r["mam_result"]["forwarded"]["stanza"]["id"]: r
                 for r in res}
        orig = by_id["fx-1"]["mam_result"]["forwarded"]["stanza"]
        assert orig["body"] == "the final"
        gone = by_id["fx-2"]["mam_result"]["forwarded"]["stanza"]
        assert gone["body"] == ""
        assert gone.xml.find("{urn:xmpp:message-retract:0}retracted") \
            is not None
        gone = by_id["fx-3"]["mam_result"][
            "forwarded"]["stanza"]
        assert gone["body"] == ""
        assert gone.xml.find("{urn:xmpp:message-retract:1}retracted") \
            is not None
        # the corrections and retractions are in the history too
        assert len(res) == 7

    # compliance still sees every original word
    bodies = [r[0] for r in appliance.mariadb.query(
        "SELECT body FROM audit_record WHERE actor_user ="
        " 'alice@example.com' AND event = 'message' ORDER BY ts_utc_us"
        " DESC, seq DESC LIMIT 7", DB)]
    assert "teh original" in bodies and "regrettable" in bodies \
        and "oops" in bodies
    a.disconnect()
    b.disconnect()


def test_frozen_database_stalls_only_the_query(appliance, pool):
    """A query waits for MariaDB in a pool thread, never in the event
    loop: while mariadbd is stopped (SIGSTOP) chat goes on, and the
    query is answered when it comes back."""
    a = client(pool, appliance, "alice", "frz")
    b = client(pool, appliance, "bob", "frz")
    appliance.mariadb.pause()
    try:
        async def go():
            return await a.xmpp["xep_0313"].retrieve(timeout=30,
                                                     rsm={"max": 1})
        fut = asyncio.run_coroutine_threadsafe(go(), pool.loop)
        time.sleep(0.3)
        for i in range(3):
            a.message(b.jid, "while frozen %d" % i)
            b.wait_message(lambda m: m["body"] == "while frozen %d" % i)
        assert not fut.done()
    finally:
        appliance.mariadb.resume()
    iq = fut.result(35)
    assert iq["type"] == "result"
    a.disconnect()
    b.disconnect()
