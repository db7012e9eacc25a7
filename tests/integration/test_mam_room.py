"""History of a room: XEP-0313 section 5, a MAM query to the room's bare
JID, answered by the room's owner from the room's audit records
(docs/history.md "Rooms"), with Debian's slixmpp (xep_0045, xep_0313,
xep_0059) on two nginx workers: paging across 1,000 messages, who may
read, real JIDs by the XEP-0045 rules, corrections and retractions,
bad input, and a frozen MariaDB that stalls only the query.
"""

import asyncio
import time
import uuid

import pytest

from mucclient import MucClient
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

MUC = "conference.example.com"
DB = "conclave"
APPLIANCE_WORKERS = 2
# 1,000 messages in a few seconds: above the default room rate
APPLIANCE_EXTRA_HTTP = ("conclave_muc_domain %s;\n"
                        "    conclave_muc_rate 100000;" % MUC)
NS_MAM = "urn:xmpp:mam:2"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"


def new_room():
    return "m%s@%s" % (uuid.uuid4().hex[:10], MUC)


def user(app, pool, uid, res=None):
    c = MucClient(pool, "%s@example.com/%s" % (uid, res or uid),
                  uid + "-pw", app.nginx.xmpp_port, connect=False)
    for plugin in ("xep_0059", "xep_0313", "xep_0359", "xep_0308",
                   "xep_0424"):
        pool.call(lambda p=plugin: c.xmpp.register_plugin(p))
    c.results = []
    pool.call(lambda: c.xmpp.register_handler(Callback(
        "mam results", MatchXPath("{jabber:client}message/"
                                  "{urn:xmpp:mam:2}result"),
        lambda m: c.results.append(m))))
    c.connect()
    return c


def worker_of(app, c):
    import json
    import urllib.request
    with urllib.request.urlopen(app.status_url, timeout=5) as r:
        st = json.loads(r.read())
    bare, _, res = c.jid.partition("/")
    for s in st["sessions"]:
        if s["jid"] == bare and s["resource"] == res:
            return s["worker_pid"]
    return None


def user_off(app, pool, uid, pid):
    """A session of uid on another worker than pid."""
    for i in range(30):
        c = user(app, pool, uid, "%s%d" % (uid, i))
        if worker_of(app, c) != pid:
            return c
        c.disconnect()
    pytest.fail("no %s session off worker %s" % (uid, pid))


def shipped(app, room, n, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        got = int(app.mariadb.scalar(
            "SELECT COUNT(*) FROM audit_record WHERE event = 'muc_message'"
            " AND peer = '%s'" % room, DB))
        if got >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def mam(c, room, timeout=20, **kw):
    """One query to the room; (results, fin) or (None, error iq)."""
    async def go():
        return await c.xmpp["xep_0313"].retrieve(jid=room, timeout=timeout,
                                                 **kw)
    fut = asyncio.run_coroutine_threadsafe(go(), c.pool.loop)
    try:
        iq = fut.result(timeout + 5)
    except Exception as e:
        iq = getattr(e, "iq", None)
        if iq is None:
            raise
        return None, iq
    return list(iq["mam"]["results"]), iq


def raw_query(c, room, xml, timeout=15):
    async def go():
        iq = c.xmpp.make_iq_set(ito=room)
        iq.append(ET.fromstring(xml))
        return await iq.send(timeout=timeout)
    fut = asyncio.run_coroutine_threadsafe(go(), c.pool.loop)
    try:
        return fut.result(timeout + 5)
    except Exception as e:
        if getattr(e, "iq", None) is not None:
            return e.iq
        raise


def form_query(fields, rsm=""):
    """A query with the form's fields (name, value) and an RSM set."""
    return ("<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data'"
            " type='submit'><field var='FORM_TYPE'><value>urn:xmpp:mam:2"
            "</value></field>%s</x>%s</query>" % (
                "".join("<field var='%s'><value>%s</value></field>" % f
                        for f in fields),
                "<set xmlns='http://jabber.org/protocol/rsm'>%s</set>" % rsm
                if rsm else ""))


def raw_page(c, room, fields=(), rsm=""):
    """(results, fin) of a query sent as raw XML: an empty <before/>
    (XEP-0059 2.5) is not something slixmpp's rsm dict can send."""
    del c.results[:]
    fin = raw_query(c, room, form_query(fields, rsm))
    return list(c.results), fin


def stamp(result):
    d = result["mam_result"]["forwarded"].xml.find("{urn:xmpp:delay}delay")
    return d.get("stamp")


def condition(iq):
    err = iq.xml.find("{jabber:client}error")
    for child in err:
        if child.tag.startswith("{urn:ietf:params:xml:ns:xmpp-stanzas}"):
            return child.tag.split("}")[1]
    return None


def complete(fin):
    return fin.xml.find("{%s}fin" % NS_MAM).get("complete") == "true"


def fwd(result):
    return result["mam_result"]["forwarded"]["stanza"]


def real_jid(result):
    x = fwd(result).xml.find("{%s}x" % NS_MUC_USER)
    if x is None:
        return None
    item = x.find("{%s}item" % NS_MUC_USER)
    return item.get("jid") if item is not None else None


# ---------------------------------------------------------------------


def test_paging_across_1000_room_messages(appliance, pool):
    room = new_room()
    a = user(appliance, pool, "alice", "pg")
    b = user_off(appliance, pool, "bob", worker_of(appliance, a))
    a.join(room, "Alice")
    b.join(room, "Bob")
    before = shipped(appliance, room, 0)

    a.drain(a.xmpp.groupchat)
    for i in range(1000):
        (a if i % 2 == 0 else b).say(room, "room %04d" % i)
    # the last one seen live carries the room's stanza-id (XEP-0359)
    live = []
    b.pool.call(lambda: b.xmpp.add_event_handler(
        "groupchat_message", lambda m: live.append(m)))
    a.say(room, "room tail")
    b.wait_groupchat(lambda m: m["body"] == "room tail", timeout=60)
    assert shipped(appliance, room, before + 1001) == before + 1001

    # forward, 100 a page, from the start of the room, by bob (another
    # worker than the room's owner may be)
    seen, after, pages, archive_id = [], None, 0, {}
    while True:
        rsm = {"max": 100}
        if after:
            rsm["after"] = after
        res, fin = mam(b, room, rsm=rsm)
        assert fin["type"] == "result", fin
        assert str(fin["from"]) == room
        pages += 1
        for r in res:
            m = fwd(r)
            seen.append(m["body"])
            archive_id[m["body"]] = r["mam_result"]["id"]
            # the occupant's room JID as from (XEP-0313 section 5)
            assert str(m["from"]) in (room + "/Alice", room + "/Bob")
            assert str(r["from"]) == room
        if complete(fin):
            break
        assert len(res) == 100
        after = fin["mam_fin"]["rsm"]["last"]
        assert pages < 20
    # every message once, in the room's one order: the order in which
    # its occupants got them live (two senders interleave)
    order = [m["body"] for m in a.drain(a.xmpp.groupchat)
             if m["body"].startswith("room ")]
    assert len(order) == 1001
    assert sorted(seen) == sorted(["room %04d" % i for i in range(1000)]
                                  + ["room tail"])
    assert seen == order
    assert pages == 11

    # the id seen live is the archive's id of that message
    tail = [m for m in live if m["body"] == "room tail"][0]
    sid = tail.xml.find("{urn:xmpp:sid:0}stanza-id")
    assert sid is not None and sid.get("by") == room
    assert archive_id["room tail"] == sid.get("id")
    res, fin = raw_page(b, room, rsm="<max>1</max><before/>")
    assert fwd(res[0])["body"] == order[-1]

    # backward: the last page first, then before its <first/>
    res, fin = raw_page(a, room, rsm="<max>10</max><before/>")
    assert [fwd(r)["body"] for r in res] == order[-10:]
    assert not complete(fin)
    first = fin.xml.find("{%s}fin/{http://jabber.org/protocol/rsm}set/"
                         "{http://jabber.org/protocol/rsm}first" % NS_MAM)
    res, fin = raw_page(a, room, rsm="<max>10</max><before>%s</before>"
                        % first.text)
    assert [fwd(r)["body"] for r in res] == order[-20:-10]

    # after-id / before-id bound a range; start/end by timestamp
    res, fin = mam(a, room, rsm={"max": 5})
    ids = [r["mam_result"]["id"] for r in res]
    got, fin = raw_page(a, room, [("after-id", ids[0]),
                                  ("before-id", ids[4])])
    assert fin["type"] == "result"
    assert [r["mam_result"]["id"] for r in got] == ids[1:4]
    got, fin = raw_page(a, room, [("start", stamp(res[1])),
                                  ("end", stamp(res[3]))])
    # messages of the same microsecond may join the range's ends
    got_ids = [r["mam_result"]["id"] for r in got]
    assert set(ids[1:4]) <= set(got_ids) and ids[4] not in got_ids \
        or stamp(res[4]) == stamp(res[3])
    a.disconnect()
    b.disconnect()


def test_members_only_room_forbids_non_members(appliance, pool):
    room = new_room()
    a = user(appliance, pool, "alice", "mo")
    c = user(appliance, pool, "carol", "mo")
    b = user(appliance, pool, "bob", "mo")
    a.join(room, "Alice")
    a.configure(room, membersonly="1")
    a.call(lambda: a.muc.set_affiliation(room, "member",
                                         jid="bob@example.com"))
    a.say(room, "members only")
    shipped(appliance, room, 1)

    res, iq = mam(c, room)
    assert res is None and iq["type"] == "error"
    assert condition(iq) == "forbidden"
    assert iq["error"]["type"] == "auth"

    # a member who is not joined may read
    res, fin = mam(b, room)
    assert fin["type"] == "result"
    assert [fwd(r)["body"] for r in res] == ["members only"]

    # an outcast of an open room may not either
    room2 = new_room()
    a.join(room2, "Alice")
    a.call(lambda: a.muc.set_affiliation(room2, "outcast",
                                         jid="carol@example.com"))
    res, iq = mam(c, room2)
    assert condition(iq) == "forbidden"
    a.disconnect()
    b.disconnect()
    c.disconnect()


def test_real_jids_semi_anonymous_and_non_anonymous(appliance, pool):
    room = new_room()
    a = user(appliance, pool, "alice", "sa")
    b = user(appliance, pool, "bob", "sa")
    a.join(room, "Alice")
    b.join(room, "Bob")
    # the default room is semi-anonymous (whois: moderators)
    b.say(room, "who am I")
    shipped(appliance, room, 1)

    res, fin = mam(b, room)
    assert [fwd(r)["body"] for r in res] == ["who am I"]
    # a participant sees the nick only
    assert str(fwd(res[0])["from"]) == room + "/Bob"
    assert real_jid(res[0]) is None
    # the owner, a moderator, sees the real JID (XEP-0313 5.1.3)
    res, fin = mam(a, room)
    assert real_jid(res[0]) == b.jid

    # non-anonymous: everyone sees it
    a.configure(room, whois="anyone")
    res, fin = mam(b, room)
    assert real_jid(res[0]) == b.jid

    # and disco#info of the room advertises the archive
    info = a.call(lambda: a.xmpp["xep_0030"].get_info(jid=room))
    assert NS_MAM in info["disco_info"]["features"]
    a.disconnect()
    b.disconnect()


def test_corrections_and_retractions_in_a_room(appliance, pool):
    room = new_room()
    a = user(appliance, pool, "alice", "fx")
    b = user(appliance, pool, "bob", "fx")
    a.join(room, "Alice")
    b.join(room, "Bob")
    a.say(room, "teh original", id="rf-1")
    a.send_raw("<message xmlns='jabber:client' type='groupchat' to='%s'"
               " id='rf-2'><body>the fixed</body><replace"
               " xmlns='urn:xmpp:message-correct:0' id='rf-1'/></message>"
               % room)
    # bob may not correct alice's message
    b.send_raw("<message xmlns='jabber:client' type='groupchat' to='%s'"
               " id='rf-3'><body>hijack</body><replace"
               " xmlns='urn:xmpp:message-correct:0' id='rf-1'/></message>"
               % room)
    a.say(room, "regrettable", id="rf-4")
    b.wait_groupchat(lambda m: m["body"] == "regrettable")
    live = shipped(appliance, room, 4)
    assert live == 4
    sid = appliance.mariadb.scalar(
        "SELECT CONCAT(node, ':', writer_id, ':', seq) FROM audit_record"
        " WHERE peer = '%s' AND stanza_id = 'rf-4'" % room, DB)
    # XEP-0424: in a room the retraction names the room's stanza-id
    a.send_raw("<message xmlns='jabber:client' type='groupchat' to='%s'"
               " id='rf-5'><retract xmlns='urn:xmpp:message-retract:1'"
               " id='%s'/><body>retracted</body></message>" % (room, sid))
    assert shipped(appliance, room, 5) == 5

    res, fin = mam(b, room)
    by_id = {fwd(r)["id"]: fwd(r) for r in res}
    assert by_id["rf-1"]["body"] == "the fixed"
    gone = by_id["rf-4"]
    assert gone["body"] == ""
    assert gone.xml.find("{urn:xmpp:message-retract:1}retracted") \
        is not None
    assert len(res) == 5
    # compliance still has every word
    bodies = [r[0] for r in appliance.mariadb.query(
        "SELECT body FROM audit_record WHERE peer = '%s'"
        " AND event = 'muc_message'" % room, DB)]
    assert "teh original" in bodies and "regrettable" in bodies
    a.disconnect()
    b.disconnect()


def bodies(res):
    return [fwd(r)["body"] for r in res]


def test_with_in_a_room(appliance, pool):
    """XEP-0313 4.1.1 'with' in a room's archive (docs/history.md
    "Rooms"): a nick is what was said under it, as the record holds it;
    a real JID only for who may see real JIDs (XEP-0045 4.2), anyone
    else gets <forbidden/>; a JID nobody in the room can be, nothing."""
    room = new_room()
    a = user(appliance, pool, "alice", "wa")
    b = user(appliance, pool, "bob", "wa")
    c = user(appliance, pool, "carol", "wa")
    a.join(room, "Alice")
    b.join(room, "Bob")
    c.join(room, "Carol")

    def say(who, body, nick):
        who.say(room, body)
        m = a.wait_groupchat(lambda m: m["body"] == body)
        # the room applied every nick change before the message
        assert str(m["from"]) == room + "/" + nick

    for i in range(5):
        say(b, "bob %d" % i, "Bob")
        if i % 2 == 0:
            say(a, "alice %d" % i, "Alice")
    say(c, "carol 0", "Carol")
    # the nick is what the room showed: bob as Robert, then carol as Bob
    b.change_nick(room, "Robert")
    say(b, "robert 0", "Robert")
    c.change_nick(room, "Bob")
    say(c, "carol as bob", "Bob")
    assert shipped(appliance, room, 11) == 11
    by_bob = ["bob %d" % i for i in range(5)] + ["carol as bob"]
    bob_said = ["bob %d" % i for i in range(5)] + ["robert 0"]

    # a nick, paged forward 4 at a time by a plain occupant
    nick = [("with", room + "/Bob")]
    res, fin = raw_page(b, room, nick, "<max>4</max>")
    assert fin["type"] == "result" and not complete(fin)
    assert bodies(res) == by_bob[:4]
    assert all(str(fwd(r)["from"]) == room + "/Bob" for r in res)
    assert all(real_jid(r) is None for r in res)
    last = fin["mam_fin"]["rsm"]["last"]
    res2, fin = raw_page(b, room, nick, "<max>4</max><after>%s</after>"
                         % last)
    assert bodies(res2) == by_bob[4:] and complete(fin)
    # backward: the last page first (XEP-0059 2.5)
    res3, fin = raw_page(b, room, nick, "<max>4</max><before/>")
    assert bodies(res3) == by_bob[-4:] and not complete(fin)
    # with after-id / before-id from the unfiltered archive's ids
    ids = [r["mam_result"]["id"] for r in res]
    res4, fin = raw_page(b, room, nick + [("after-id", ids[0]),
                                          ("before-id", ids[3])])
    assert bodies(res4) == by_bob[1:3]
    res5, fin = raw_page(b, room, [("with", room + "/Robert")])
    assert bodies(res5) == ["robert 0"] and complete(fin)
    # the room's own JID: every message is from it
    res6, fin = raw_page(b, room, [("with", room)], "<max>100</max>")
    assert len(res6) == 11

    # a plain occupant of a semi-anonymous room may not ask by real JID,
    # bare or full, whether or not that user spoke here
    for who in ("alice@example.com", b.jid, "nobody@example.com"):
        res, iq = raw_page(b, room, [("with", who)])
        assert iq["type"] == "error" and res == []
        assert condition(iq) == "forbidden"
        assert iq["error"]["type"] == "auth"

    # the owner (a moderator) may: bob's messages under both his nicks
    res, fin = raw_page(a, room, [("with", "bob@example.com")],
                        "<max>4</max>")
    assert bodies(res) == bob_said[:4] and not complete(fin)
    assert all(real_jid(r) == b.jid for r in res)
    res, fin = raw_page(a, room, [("with", "bob@example.com")],
                        "<max>4</max><after>%s</after>"
                        % fin["mam_fin"]["rsm"]["last"])
    assert bodies(res) == bob_said[4:] and complete(fin)
    # a full JID: that resource only
    res, fin = raw_page(a, room, [("with", b.jid)], "<max>50</max>")
    assert bodies(res) == bob_said
    res, fin = raw_page(a, room, [("with", "bob@example.com/elsewhere")])
    assert res == [] and complete(fin)

    # JIDs nobody here can be: nothing, for anyone
    for who in (room + "/Nobody", new_room(), new_room() + "/Bob",
                MUC, "example.com", "nobody@example.com"):
        res, fin = raw_page(a, room, [("with", who)])
        assert fin["type"] == "result" and res == [] and complete(fin), who
    for who in (new_room() + "/Bob", "example.com"):
        res, fin = raw_page(b, room, [("with", who)])
        assert fin["type"] == "result" and res == [] and complete(fin), who

    # non-anonymous: every occupant may ask by real JID
    a.configure(room, whois="anyone")
    res, fin = raw_page(b, room, [("with", "alice@example.com")])
    assert bodies(res) == ["alice 0", "alice 2", "alice 4"]
    assert all(real_jid(r) == a.jid for r in res)
    a.disconnect()
    b.disconnect()
    c.disconnect()


FILL = """
    INSERT INTO audit_record (node, writer_id, seq, ts_utc_us, event,
        status, actor_user, peer, msg_type, body, payload, prev_hash,
        entry_hash)
    SELECT 'gapfill', 1, s.seq, t.ts + 1, 'muc_message', 'success',
        'filler@example.com', '%(room)s', 'groupchat', 'filler',
        CONCAT('{"v":1,"event":"muc_message","params":{"nick":"Filler",',
            '"from":"filler@example.com/x","type":"groupchat","stanza":',
            '"<message from=\\'%(room)s/Filler\\' type=\\'groupchat\\'',
            ' xmlns=\\'jabber:client\\'><body>filler</body></message>"}}'),
        REPEAT(0x00, 32), REPEAT(0x00, 32)
    FROM seq_1_to_120000 s,
        (SELECT MAX(ts_utc_us) AS ts FROM audit_record
         WHERE peer = '%(room)s') t"""


def test_with_a_nick_reads_a_bounded_part_of_the_room(appliance, pool):
    """A nick is only in the records' payload: a page 'with' a nick reads
    at most 100,000 of the room's records (docs/history.md "Rooms").
    120,000 records of another nick, as the room writes them, between
    two of alice's: a page that found some of hers and stopped is not
    the last; one that found none says so (<policy-violation/>); a time
    range past the gap finds the rest."""
    room = new_room()
    a = user(appliance, pool, "alice", "gap")
    a.join(room, "Alice")
    a.say(room, "early")
    a.wait_groupchat(lambda m: m["body"] == "early")
    shipped(appliance, room, 1)
    appliance.mariadb.query(FILL % {"room": room}, DB, timeout=300)
    a.say(room, "late")
    a.wait_groupchat(lambda m: m["body"] == "late")
    assert shipped(appliance, room, 120002) == 120002

    nick = [("with", room + "/Alice")]
    res, fin = raw_page(a, room, nick, "<max>5</max>")
    assert fin["type"] == "result" and bodies(res) == ["early"]
    assert not complete(fin)
    res, iq = raw_page(a, room, nick, "<max>5</max><after>%s</after>"
                       % fin["mam_fin"]["rsm"]["last"])
    assert iq["type"] == "error" and condition(iq) == "policy-violation"
    res, iq = raw_page(a, room, [("with", room + "/Nobody")])
    assert iq["type"] == "error" and condition(iq) == "policy-violation"
    # the same from the end: the newest first
    res, fin = raw_page(a, room, nick, "<max>5</max><before/>")
    assert bodies(res) == ["late"] and not complete(fin)
    res, fin = raw_page(a, room, nick + [("start", stamp(res[0]))])
    assert bodies(res) == ["late"] and complete(fin)
    # a real JID reads its own index range: no gap to cross
    res, fin = raw_page(a, room, [("with", "alice@example.com")])
    assert bodies(res) == ["early", "late"] and complete(fin)
    a.disconnect()


def test_bad_room_queries(appliance, pool):
    room = new_room()
    a = user(appliance, pool, "alice", "bad")
    a.join(room, "Alice")
    a.say(room, "one")
    shipped(appliance, room, 1)

    # a page over conclave_mam_max_page
    res, iq = mam(a, room, rsm={"max": 100000})
    assert condition(iq) == "policy-violation"
    # an id that is not in this room's archive
    res, iq = mam(a, room, rsm={"after": "node:1:999999999"})
    assert condition(iq) == "item-not-found"
    res, iq = mam(a, room, rsm={"after": "garbage"})
    assert condition(iq) == "item-not-found"
    # a field a room does not offer, a malformed date, a 'with' that is
    # not a JID (RFC 7622: an empty localpart)
    for field, value, cond in (("frobnicate", "1",
                                "feature-not-implemented"),
                               ("start", "yesterday", "bad-request"),
                               ("with", "@example.com", "jid-malformed")):
        xml = ("<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data'"
               " type='submit'><field var='FORM_TYPE'><value>"
               "urn:xmpp:mam:2</value></field><field var='%s'><value>%s"
               "</value></field></x></query>" % (field, value))
        iq = raw_query(a, room, xml)
        assert iq["type"] == "error" and condition(iq) == cond
    # the form itself (XEP-0313 section 4.1.1)
    async def go():
        iq = a.xmpp.make_iq_get(ito=room)
        iq.append(ET.fromstring("<query xmlns='urn:xmpp:mam:2'/>"))
        return await iq.send(timeout=10)
    form = asyncio.run_coroutine_threadsafe(go(), pool.loop).result(15)
    fields = [f.get("var") for f in form.xml.iter(
        "{jabber:x:data}field")]
    assert "FORM_TYPE" in fields and "after-id" in fields
    assert "with" in fields
    # an id another room's record has is not found here
    other = new_room()
    a.join(other, "Alice")
    a.say(other, "elsewhere")
    shipped(appliance, other, 1)
    res, fin = mam(a, other)
    oid = res[0]["mam_result"]["id"]
    res, iq = mam(a, room, rsm={"after": oid})
    assert condition(iq) == "item-not-found"
    a.disconnect()


def test_frozen_mariadb_stalls_only_the_room_query(appliance, pool):
    """The query runs in the database pool: while mariadbd is stopped
    the room goes on (its owner's event loop is free) and 1:1 chat too;
    the answer comes when MariaDB is back."""
    room = new_room()
    a = user(appliance, pool, "alice", "frz")
    b = user_off(appliance, pool, "bob", worker_of(appliance, a))
    a.join(room, "Alice")
    b.join(room, "Bob")
    a.say(room, "before the freeze")
    shipped(appliance, room, 1)

    appliance.mariadb.pause()
    try:
        async def go():
            return await b.xmpp["xep_0313"].retrieve(jid=room, timeout=40,
                                                     rsm={"max": 5})
        fut = asyncio.run_coroutine_threadsafe(go(), pool.loop)
        time.sleep(1.5)
        for i in range(3):
            a.say(room, "while frozen %d" % i)
            b.wait_groupchat(lambda m: m["body"] == "while frozen %d" % i)
        a.run(lambda: a.xmpp["xep_0199"].send_ping(room, timeout=5))
        assert not fut.done()
    finally:
        appliance.mariadb.resume()
    iq = fut.result(45)
    assert iq["type"] == "result"
    assert "before the freeze" in [fwd(r)["body"]
                                   for r in iq["mam"]["results"]]
    a.disconnect()
    b.disconnect()
