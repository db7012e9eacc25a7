"""Group chat (XEP-0045, issue 7 item 6) with Debian's slixmpp and its
xep_0045 plugin, nginx with 2 workers: rooms, occupants on different
workers, order, history, nick changes, subjects, semi-anonymous rooms,
members-only rooms, kick and ban, invitations, self-ping, discovery,
and the protocol's bad input.  The audit side is test_muc_audit.py,
persistence test_muc_persist.py.
"""

import threading
import time
import urllib.request
import uuid

import pytest

from chathelp import status, worker_of
from mucclient import MucClient, MucError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

MUC = "conference.example.com"
APPLIANCE_WORKERS = 2
APPLIANCE_EXTRA_HTTP = "conclave_muc_domain %s;" % MUC


def room_owner(app, room):
    for r in status(app).get("rooms", []):
        if r["jid"] == room:
            return r["worker_pid"]
    return None


def new_room():
    return "r%s@%s" % (uuid.uuid4().hex[:10], MUC)


def user(app, pool, uid, res=None):
    return MucClient(pool, "%s@example.com/%s" % (uid, res or uid),
                     uid + "-pw", app.nginx.xmpp_port)


def user_on_other_worker(app, pool, uid, pid, tries=30):
    for i in range(tries):
        c = user(app, pool, uid, "%s%d" % (uid, i))
        if worker_of(app, c.jid) != pid:
            return c
        c.disconnect()
    pytest.fail("no %s session landed off worker %s" % (uid, pid))


def codes_of(pres):
    return set(pres["muc"]["status_codes"])


# ---------------------------------------------------------------------


def test_occupants_on_two_workers_get_every_message_in_one_order(
        appliance, pool):
    room = new_room()
    a = user(appliance, pool, "alice")
    b = user_on_other_worker(appliance, pool, "bob",
                             worker_of(appliance, a.jid))
    assert worker_of(appliance, a.jid) != worker_of(appliance, b.jid)

    pres, subject, _, _ = a.join(room, "Alice")
    # XEP-0045 10.1.1: the creator is the owner, told with 201 and 110
    assert {110, 201} <= codes_of(pres)
    assert pres["muc"]["affiliation"] == "owner"
    assert room_owner(appliance, room) in appliance.nginx.worker_pids()

    pres, _, occupants, _ = b.join(room, "Bob")
    assert 110 in codes_of(pres)
    # slixmpp lists the joiner too
    assert sorted(str(p["from"]) for p in occupants) == [room + "/Alice",
                                                         room + "/Bob"]
    a.wait_presence(lambda p: p["from"] == room + "/Bob")

    # both send at once, 40 each: every occupant sees all 80, in the
    # same order, and each sender's in the order sent
    n = 40

    def send(c, tag):
        for i in range(n):
            c.say(room, "%s-%02d" % (tag, i))

    ta = threading.Thread(target=send, args=(a, "a"))
    tb = threading.Thread(target=send, args=(b, "b"))
    ta.start()
    tb.start()
    ta.join()
    tb.join()

    seen = {}
    for c in (a, b):
        got = []
        while len(got) < 2 * n:
            m = c.wait_groupchat(lambda m: not m["delayed"], timeout=20)
            got.append(m["body"])
        seen[c] = got
        for tag in "ab":
            mine = [x for x in got if x.startswith(tag)]
            assert mine == ["%s-%02d" % (tag, i) for i in range(n)]
    assert seen[a] == seen[b]


def test_messages_are_stamped_from_the_nick(appliance, pool):
    room = new_room()
    a = user(appliance, pool, "alice")
    b = user(appliance, pool, "bob")
    a.join(room, "Alice")
    b.join(room, "Bob")
    a.say(room, "hi there & <you>", id="m1")
    m = b.wait_groupchat(lambda m: m["id"] == "m1")
    assert m["from"] == room + "/Alice"
    assert m["body"] == "hi there & <you>"
    assert m["to"] == b.jid


def test_history_on_join_with_limits(appliance, pool):
    room = new_room()
    a = user(appliance, pool, "alice")
    a.join(room, "Alice")
    for i in range(6):
        a.say(room, "old-%d" % i)
        a.wait_groupchat(lambda m, i=i: m["body"] == "old-%d" % i)

    b = user(appliance, pool, "bob")
    _, _, _, history = b.join(room, "Bob", maxstanzas=3)
    assert [h["body"] for h in history] == ["old-3", "old-4", "old-5"]
    for h in history:
        assert h["delay"]["from"] == room

    c = user(appliance, pool, "carol")
    _, _, _, history = c.join(room, "Carol", maxstanzas=0)
    assert history == []


def test_nick_collision_and_change(appliance, pool):
    room = new_room()
    a = user(appliance, pool, "alice")
    b = user(appliance, pool, "bob")
    a.join(room, "Alice")

    # XEP-0045 7.2.9
    with pytest.raises(MucError) as e:
        b.join(room, "Alice")
    assert e.value.condition == "conflict"

    b.join(room, "Bob")
    a.wait_presence(lambda p: p["from"] == room + "/Bob")

    # XEP-0045 7.6: a change to a taken nick is refused ...
    b.change_nick(room, "Alice")
    p = b.wait_presence(lambda p: p["type"] == "error", timeout=10)
    assert p["error"] == "conflict"

    # ... a free one is announced with 303 and the new nick
    b.change_nick(room, "Robert")
    p = a.wait_presence(lambda p: p["from"] == room + "/Bob"
                        and p["type"] == "unavailable")
    assert 303 in p["codes"]
    a.wait_presence(lambda p: p["from"] == room + "/Robert"
                    and p["type"] != "unavailable")
    b.say(room, "renamed", id="rn")
    m = a.wait_groupchat(lambda m: m["id"] == "rn")
    assert m["from"] == room + "/Robert"


def test_subject(appliance, pool):
    room = new_room()
    a = user(appliance, pool, "alice")
    b = user(appliance, pool, "bob")
    a.join(room, "Alice")
    b.join(room, "Bob")

    # only moderators change the subject by default (XEP-0045 8.1)
    b.pool.call(lambda: b.muc.set_subject(room, "by bob"))
    b.wait_message(lambda m: m["type"] == "error"
                   and m["error"] == "forbidden")

    a.pool.call(lambda: a.muc.set_subject(room, "Quarterly plans"))
    time.sleep(0.5)
    c = user(appliance, pool, "carol")
    _, subject, _, _ = c.join(room, "Carol")
    assert subject["subject"] == "Quarterly plans"
    assert str(subject["from"]) == room + "/Alice"


def test_semi_anonymous_room_shows_real_jids_to_moderators_only(
        appliance, pool):
    room = new_room()
    a = user(appliance, pool, "alice")
    b = user(appliance, pool, "bob")
    c = user(appliance, pool, "carol")
    a.join(room, "Alice")                    # owner: a moderator
    _, _, occ, _ = b.join(room, "Bob")
    # the default room is semi-anonymous: no 100, no real JIDs for Bob
    others = [p for p in occ if 110 not in codes_of(p)]
    assert [p["muc"]["jid"].full for p in others] == [""]

    p = a.wait_presence(lambda p: p["from"] == room + "/Bob")
    assert p["jid"] == b.jid                 # the moderator sees it

    c.join(room, "Carol")
    p = b.wait_presence(lambda p: p["from"] == room + "/Carol")
    assert p["jid"] is None                  # a participant does not
    p = a.wait_presence(lambda p: p["from"] == room + "/Carol")
    assert p["jid"] == c.jid

    # non-anonymous now: everybody sees everybody, and joiners get 100
    a.configure(room, whois="anyone")
    d = user(appliance, pool, "erin")
    pres, _, occ, _ = d.join(room, "Erin")
    assert 100 in codes_of(pres)
    assert sorted(p["muc"]["jid"].full for p in occ) == sorted(
        [a.jid, b.jid, c.jid, d.jid])
    p = b.wait_presence(lambda p: p["from"] == room + "/Erin")
    assert p["jid"] == d.jid


def test_semi_anonymous_variants_on_both_workers(appliance, pool):
    """The room's owner builds a presence once per variant (with the
    real JID for moderators, without for the others) and sends one
    fan-out record per other worker, which makes the copies there: a
    moderator and a participant on each worker get their own variant,
    addressed to their own JID (issue 7's fan-out, docs/muc.md)."""
    room = new_room()
    a1 = user(appliance, pool, "alice", "a1")
    here = worker_of(appliance, a1.jid)
    a2 = user_on_other_worker(appliance, pool, "alice", here)
    b = user_on_other_worker(appliance, pool, "bob", here)
    c = user(appliance, pool, "carol")
    for i in range(30):
        if worker_of(appliance, c.jid) == here:
            break
        c.disconnect()
        c = user(appliance, pool, "carol", "carol%d" % i)
    assert worker_of(appliance, c.jid) == here
    there = worker_of(appliance, b.jid)
    assert worker_of(appliance, a2.jid) == there != here

    a1.join(room, "Alice")                   # owner: a moderator
    a2.join(room, "Alice2")                  # the owner's other resource
    b.join(room, "Bob")
    c.join(room, "Carol")
    assert room_owner(appliance, room) == here
    mods, parts = (a1, a2), (b, c)

    e = user(appliance, pool, "erin")
    e.join(room, "Erin")
    for x in mods + parts:
        p = x.wait_presence(lambda p: p["from"] == room + "/Erin")
        assert p["role"] == "participant"
        assert p["jid"] == (e.jid if x in mods else None), x.jid

    # a nick change: unavailable with 303 and the new nick, then back
    e.change_nick(room, "Erin2")
    for x in mods + parts:
        p = x.wait_presence(lambda p: p["from"] == room + "/Erin"
                            and p["type"] == "unavailable")
        assert 303 in p["codes"]
        assert p["jid"] == (e.jid if x in mods else None), x.jid
        p = x.wait_presence(lambda p: p["from"] == room + "/Erin2")
        assert p["jid"] == (e.jid if x in mods else None), x.jid

    # messages: the same stanza to each, addressed to each, in order
    for i in range(5):
        e.say(room, "v-%d" % i, id="v%d" % i)
    for x in mods + parts + (e,):
        got = [x.wait_groupchat(lambda m: m["body"].startswith("v-"))
               for _ in range(5)]
        assert [m["body"] for m in got] == ["v-%d" % i for i in range(5)]
        assert {m["to"] for m in got} == {x.jid}
        assert {m["from"] for m in got} == {room + "/Erin2"}

    e.leave(room, "Erin2")
    for x in mods + parts:
        p = x.wait_presence(lambda p: p["from"] == room + "/Erin2"
                            and p["type"] == "unavailable")
        assert p["jid"] == (e.jid if x in mods else None), x.jid


def test_members_only_room(appliance, pool):
    room = new_room()
    a = user(appliance, pool, "alice")
    a.join(room, "Alice")
    a.configure(room, membersonly="1")

    b = user(appliance, pool, "bob")
    with pytest.raises(MucError) as e:
        b.join(room, "Bob")
    assert e.value.condition == "registration-required"   # 7.2.6

    a.call(lambda: a.muc.set_affiliation(room, "member",
                                         jid="bob@example.com"))
    b.join(room, "Bob")
    members = a.call(lambda: a.muc.get_affiliation_list(room, "member"))
    assert [str(j) for j in members] == ["bob@example.com"]

    # a participant may not read the lists (XEP-0045 9.5)
    with pytest.raises(MucError) as e:
        b.call(lambda: b.muc.get_affiliation_list(room, "member"))
    assert e.value.condition == "forbidden"


def test_kick_and_ban(appliance, pool):
    room = new_room()
    a = user(appliance, pool, "alice")
    b = user(appliance, pool, "bob")
    c = user(appliance, pool, "carol")
    a.join(room, "Alice")
    b.join(room, "Bob")
    c.join(room, "Carol")

    # a participant cannot kick (XEP-0045 8.2)
    with pytest.raises(MucError) as e:
        c.call(lambda: c.muc.set_role(room, "Bob", "none"))
    assert e.value.condition == "forbidden"

    a.call(lambda: a.muc.set_role(room, "Bob", "none", reason="spam"))
    p = b.wait_presence(lambda p: p["type"] == "unavailable"
                        and p["from"] == room + "/Bob")
    assert {110, 307} <= set(p["codes"])
    p = c.wait_presence(lambda p: p["type"] == "unavailable"
                        and p["from"] == room + "/Bob")
    assert 307 in p["codes"]

    # kicked is not banned: Bob comes back
    b.join(room, "Bob")

    a.call(lambda: a.muc.set_affiliation(room, "outcast",
                                         jid="bob@example.com",
                                         reason="again"))
    p = b.wait_presence(lambda p: p["type"] == "unavailable"
                        and 301 in p["codes"])
    assert 110 in p["codes"]

    # a banned user rejoining is refused (XEP-0045 7.2.7)
    with pytest.raises(MucError) as e:
        b.join(room, "Bobby")
    assert e.value.condition == "forbidden"
    outcasts = a.call(lambda: a.muc.get_affiliation_list(room, "outcast"))
    assert [str(j) for j in outcasts] == ["bob@example.com"]


def test_admins_moderators_voice_and_visitors(appliance, pool):
    """The affiliations and roles not shown above.  In a moderated room a
    newcomer is a visitor (5.1.2) whose message is refused (7.4); a
    moderator gives voice (8.3) and takes it back (8.4); a participant
    may do neither.  The owner makes an admin (10.6), who is then a
    moderator, may not make admins nor touch the owner's role, grants
    the moderator role (9.6), and kicks; a moderator without an
    affiliation may not kick an admin (8.2)."""
    room = new_room()
    a = user(appliance, pool, "alice")
    b = user(appliance, pool, "bob")
    c = user(appliance, pool, "carol")
    a.join(room, "Alice")                    # owner
    a.configure(room, moderatedroom="1")
    pres, _, _, _ = b.join(room, "Bob")
    assert (pres["muc"]["role"], pres["muc"]["affiliation"]) == \
        ("visitor", "none")
    pres, _, _, _ = c.join(room, "Carol")
    assert pres["muc"]["role"] == "visitor"

    b.say(room, "may I?", id="vis1")
    m = b.wait_message(lambda m: m["id"] == "vis1")
    assert m["type"] == "error" and m["error"] == "forbidden"
    with pytest.raises(AssertionError):
        a.wait_groupchat(lambda m: m["id"] == "vis1", timeout=1)

    # voice, by the owner (a moderator)
    a.call(lambda: a.muc.set_role(room, "Bob", "participant"))
    p = c.wait_presence(lambda p: p["from"] == room + "/Bob"
                        and p["role"] == "participant")
    assert p["affiliation"] == "none"
    b.say(room, "thanks", id="vis2")
    c.wait_groupchat(lambda m: m["id"] == "vis2")
    # a participant gives no voice
    with pytest.raises(MucError) as e:
        b.call(lambda: b.muc.set_role(room, "Carol", "participant"))
    assert e.value.condition == "forbidden"
    # and loses it again
    a.call(lambda: a.muc.set_role(room, "Bob", "visitor"))
    b.wait_presence(lambda p: p["from"] == room + "/Bob"
                    and p["role"] == "visitor")
    b.say(room, "again?", id="vis3")
    m = b.wait_message(lambda m: m["id"] == "vis3")
    assert m["error"] == "forbidden"

    # an admin is a moderator
    a.call(lambda: a.muc.set_affiliation(room, "admin",
                                         jid="bob@example.com"))
    p = c.wait_presence(lambda p: p["from"] == room + "/Bob"
                        and p["affiliation"] == "admin")
    assert p["role"] == "moderator"
    admins = a.call(lambda: a.muc.get_affiliation_list(room, "admin"))
    assert [str(j) for j in admins] == ["bob@example.com"]
    # ... who makes no admins and leaves the owner's role alone
    with pytest.raises(MucError) as e:
        b.call(lambda: b.muc.set_affiliation(room, "admin",
                                             jid="carol@example.com"))
    assert e.value.condition == "forbidden"
    with pytest.raises(MucError) as e:
        b.call(lambda: b.muc.set_role(room, "Alice", "none"))
    assert e.value.condition == "not-allowed"

    # the admin grants the moderator role; that moderator, with no
    # affiliation, cannot kick the admin
    b.call(lambda: b.muc.set_role(room, "Carol", "moderator"))
    p = a.wait_presence(lambda p: p["from"] == room + "/Carol"
                        and p["role"] == "moderator")
    assert p["affiliation"] == "none"
    with pytest.raises(MucError) as e:
        c.call(lambda: c.muc.set_role(room, "Bob", "none"))
    assert e.value.condition == "not-allowed"
    # the admin can kick her
    b.call(lambda: b.muc.set_role(room, "Carol", "none", reason="enough"))
    p = c.wait_presence(lambda p: p["type"] == "unavailable"
                        and p["from"] == room + "/Carol")
    assert {110, 307} <= set(p["codes"])


def test_malformed_forms_are_refused(appliance, pool):
    room = new_room()
    a = user(appliance, pool, "alice")
    a.join(room, "Alice")
    for field, value in (("maxusers", "lots"), ("maxusers", "0"),
                         ("whois", "everybody"), ("membersonly", "maybe"),
                         ("roomname", "x" * 5000)):
        with pytest.raises(MucError) as e:
            a.configure(room, **{field: value})
        assert e.value.condition == "not-acceptable", field

    # not a form at all, and a form of another kind
    a.send_raw("<iq type='set' id='bad1' to='%s'><query xmlns="
               "'http://jabber.org/protocol/muc#owner'><x xmlns='jabber:"
               "x:data' type='result'/></query></iq>" % room)

    def bad(xmpp):
        iq = xmpp.make_iq_set(ito=room)
        iq.append(__import__("xml.etree.ElementTree", fromlist=["x"])
                  .fromstring("<query xmlns='http://jabber.org/protocol/"
                              "muc#owner'><x xmlns='jabber:x:data' "
                              "type='submit'><field var='FORM_TYPE'>"
                              "<value>urn:other</value></field></x>"
                              "</query>"))
        return iq
    with pytest.raises(MucError) as e:
        a.iq(bad)
    assert e.value.condition == "not-acceptable"

    # a non-owner gets no form
    b = user(appliance, pool, "bob")
    b.join(room, "Bob")
    with pytest.raises(MucError) as e:
        b.call(lambda: b.muc.get_room_config(room))
    assert e.value.condition == "forbidden"

    # the room still works
    a.say(room, "still here", id="ok")
    b.wait_groupchat(lambda m: m["id"] == "ok")


def test_room_flood_gets_errors_not_a_queue(make_appliance, pool):
    app = make_appliance(workers=2, extra_http=APPLIANCE_EXTRA_HTTP
                         + " conclave_muc_rate 50;")
    room = new_room()
    a = user(app, pool, "alice")
    b = user(app, pool, "bob")
    a.join(room, "Alice")
    b.join(room, "Bob")

    n = 400                                   # conclave_muc_rate 50
    for i in range(n):
        a.say(room, "f%03d" % i, id="f%03d" % i)

    errors = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            m = a.xmpp.messages.get(timeout=1)
        except Exception:
            if errors:
                break
            continue
        if m["type"] == "error":
            assert m["error"] == "resource-constraint"
            errors.add(m["id"])

    got = [m["body"] for m in b.drain(b.xmpp.groupchat, settle=1.0)]
    assert errors, "a flood of %d got no error" % n
    assert got, "nothing of the flood got through"
    # what got through is in order, and nothing is both refused and sent
    assert got == sorted(got)
    assert not (set(got) & errors)
    assert len(got) + len(errors) == n
    # counted by the limit it met (docs/operations.md)
    with urllib.request.urlopen(app.nginx.base_url + "/metrics",
                                timeout=10) as r:
        text = r.read().decode()
    assert 'conclave_muc_refused_total{limit="rate"} %d\n' % len(errors) \
        in text
    assert 'conclave_muc_refused_total{limit="queue"} 0\n' in text

    # the room recovers once the burst is over
    time.sleep(1.2)
    a.say(room, "after", id="after")
    b.wait_groupchat(lambda m: m["id"] == "after")


def test_invitations_mediated_and_direct(appliance, pool):
    room = new_room()
    a = user(appliance, pool, "alice")
    b = user(appliance, pool, "bob")
    c = user(appliance, pool, "carol")
    a.join(room, "Alice")

    # XEP-0045 7.8.2: through the room, which names the inviter
    a.pool.call(lambda: a.muc.invite(room, "bob@example.com", "join us"))
    m = b.wait_message(lambda m: m["invite_from"] is not None)
    assert m["from"] == room
    assert m["invite_from"] == "alice@example.com"

    # XEP-0249: straight to the invitee
    a.pool.call(lambda: a.xmpp.plugin["xep_0249"].send_invitation(
        c.jid, room, reason="see you"))
    m = c.wait_message(lambda m: m["direct_invite"] is not None)
    assert m["direct_invite"] == room
    assert m["from"] == a.jid


def test_invitation_to_an_offline_user_is_kept(appliance, pool):
    """XEP-0045 7.8.2: a mediated invitation to a user with no available
    resource goes to offline storage (XEP-0160) like a message, and
    reaches the invitee once, with a <delay/>, at the next sign-in."""
    room = new_room()
    e = user(appliance, pool, "erin", "first")
    # an account has offline storage once it has been available
    deadline = time.monotonic() + 10
    while appliance.mariadb.scalar(
            "SELECT COUNT(*) FROM chat_user WHERE jid = 'erin@example.com'",
            appliance.mariadb.database) != "1":
        assert time.monotonic() < deadline, "erin never became known"
        time.sleep(0.1)
    e.disconnect()

    a = user(appliance, pool, "alice", "inviter")
    a.join(room, "Alice")
    a.pool.call(lambda: a.muc.invite(room, "erin@example.com", "later"))
    deadline = time.monotonic() + 15
    while int(appliance.mariadb.scalar(
            "SELECT COUNT(*) FROM offline_message"
            " WHERE owner_jid = 'erin@example.com'",
            appliance.mariadb.database)) < 1:
        assert time.monotonic() < deadline, "the invitation was not kept"
        time.sleep(0.1)

    got = []
    e = MucClient(pool, "erin@example.com/back", "erin-pw",
                  appliance.nginx.xmpp_port, connect=False)
    pool.call(lambda: e.xmpp.register_handler(Callback(
        "delayed invites", MatchXPath("{jabber:client}message/"
                                      "{urn:xmpp:delay}delay"),
        lambda m: got.append(m))))
    e.connect()
    m = e.wait_message(lambda m: m["invite_from"] is not None, timeout=15)
    assert m["from"] == room
    assert m["invite_from"] == "alice@example.com"
    time.sleep(1.0)
    assert e.drain(e.xmpp.messages) == []          # once
    assert len(got) == 1
    assert got[0].xml.find("{urn:xmpp:delay}delay") is not None
    e.disconnect()
    a.disconnect()


def test_aioxmpp_and_slixmpp_occupants_on_two_workers(appliance, pool):
    """Two client libraries nobody here wrote in one room: Debian's
    python3-aioxmpp (aioxmpp.muc) and slixmpp (xep_0045), their
    sessions on different workers; each gets the other's messages, in
    order, from the occupant's room JID."""
    import asyncio
    import aioxmpp
    import aioxmpp.muc

    room = new_room()
    b = user(appliance, pool, "bob", "slix")
    b.join(room, "Bob")
    b_pid = worker_of(appliance, b.jid)

    async def go():
        loop = asyncio.get_running_loop()
        for i in range(30):
            client = aioxmpp.PresenceManagedClient(
                aioxmpp.JID.fromstr("alice@example.com/aio%d" % i),
                aioxmpp.make_security_layer("alice-pw", no_verify=True),
                override_peer=[("127.0.0.1", appliance.nginx.xmpp_port,
                                aioxmpp.connector.STARTTLSConnector())])
            async with client.connected(
                    presence=aioxmpp.PresenceState(False)):
                jid = str(client.local_jid)
                a_pid = worker_of(appliance, jid)
                if a_pid == b_pid:
                    continue
                got = []
                muc = client.summon(aioxmpp.MUCClient)
                hist = aioxmpp.muc.xso.History(maxstanzas=0)
                mroom, joined = muc.join(aioxmpp.JID.fromstr(room),
                                         "Alice", history=hist)
                mroom.on_message.connect(
                    lambda msg, member, source, **kw: got.append(
                        (str(msg.from_), msg.body.any())))
                await asyncio.wait_for(joined, 15)
                await loop.run_in_executor(None, lambda: b.wait_presence(
                    lambda p: p["from"] == room + "/Alice"))

                for n in range(5):
                    msg = aioxmpp.Message(type_=aioxmpp.MessageType.GROUPCHAT)
                    msg.body[None] = "from aioxmpp %d" % n
                    await mroom.send_message(msg)
                for n in range(5):
                    await loop.run_in_executor(
                        None, lambda n=n: b.wait_groupchat(
                            lambda m: m["body"] == "from aioxmpp %d" % n
                            and m["from"] == room + "/Alice"))
                for n in range(5):
                    b.say(room, "from slixmpp %d" % n)
                deadline = loop.time() + 15
                while len([g for g in got if g[0] == room + "/Bob"]) < 5:
                    assert loop.time() < deadline, got
                    await asyncio.sleep(0.05)
                await mroom.leave()
                return a_pid, got
        pytest.fail("no aioxmpp session landed off worker %s" % b_pid)

    a_pid, got = asyncio.run(asyncio.wait_for(go(), 120))
    assert a_pid is not None and b_pid is not None and a_pid != b_pid
    from_bob = [body for frm, body in got if frm == room + "/Bob"]
    assert from_bob == ["from slixmpp %d" % n for n in range(5)]
    b.disconnect()


def test_self_ping(appliance, pool):
    room = new_room()
    a = user(appliance, pool, "alice")
    b = user(appliance, pool, "bob")
    a.join(room, "Alice")
    # XEP-0410: joined, the own occupant JID answers
    a.ping(room + "/Alice")
    # not joined: not-acceptable
    with pytest.raises(MucError) as e:
        b.ping(room + "/Alice")
    assert e.value.condition == "not-acceptable"
    a.leave(room, "Alice")
    a.wait_presence(lambda p: p["type"] == "unavailable")
    with pytest.raises(MucError) as e:
        a.ping(room + "/Alice")
    assert e.value.condition in ("not-acceptable", "item-not-found")


def test_discovery(appliance, pool):
    room = new_room()
    a = user(appliance, pool, "alice")
    a.join(room, "Alice")
    disco = a.xmpp.plugin["xep_0030"]

    info = a.call(lambda: disco.get_info(jid=MUC))
    ids = info["disco_info"]["identities"]
    assert ("conference", "text") in [(i[0], i[1]) for i in ids]
    assert "http://jabber.org/protocol/muc" in info["disco_info"]["features"]

    items = a.call(lambda: disco.get_items(jid=MUC))
    assert room in [i[0] for i in items["disco_items"]["items"]]

    info = a.call(lambda: disco.get_info(jid=room))
    feats = info["disco_info"]["features"]
    for f in ("http://jabber.org/protocol/muc", "muc_temporary",
              "muc_open", "muc_semianonymous", "muc_unsecured"):
        assert f in feats

    # a hidden room is not listed (XEP-0045 6.3), but answers itself
    a.configure(room, publicroom="0")
    items = a.call(lambda: disco.get_items(jid=MUC))
    assert room not in [i[0] for i in items["disco_items"]["items"]]
    info = a.call(lambda: disco.get_info(jid=room))
    assert "muc_hidden" in info["disco_info"]["features"]

    # a room nobody created
    with pytest.raises(MucError) as e:
        a.call(lambda: disco.get_info(jid=new_room()))
    assert e.value.condition == "item-not-found"


def test_bad_input(appliance, pool):
    room = new_room()
    a = user(appliance, pool, "alice")
    b = user(appliance, pool, "bob")
    a.join(room, "Alice")

    # groupchat from a non-occupant (7.4): not-acceptable
    b.say(room, "let me in", id="nope")
    m = b.wait_message(lambda m: m["id"] == "nope")
    assert m["error"] == "not-acceptable"
    # groupchat to an occupant JID is no private message (7.5)
    a.send_raw("<message type='groupchat' to='%s/Alice' id='pm1'>"
               "<body>x</body></message>" % room)
    m = a.wait_message(lambda m: m["id"] == "pm1")
    assert m["error"] == "bad-request"
    # a message to a room that does not exist
    b.say(new_room(), "anyone?", id="ghost")
    m = b.wait_message(lambda m: m["id"] == "ghost")
    assert m["error"] == "item-not-found"
    # the room is unharmed
    a.say(room, "fine", id="fine")
    a.wait_groupchat(lambda m: m["id"] == "fine")


def test_leaving_and_disconnecting_are_seen(appliance, pool):
    room = new_room()
    a = user(appliance, pool, "alice")
    b = user(appliance, pool, "bob")
    c = user(appliance, pool, "carol")
    a.join(room, "Alice")
    b.join(room, "Bob")
    c.join(room, "Carol")
    b.leave(room, "Bob")
    p = a.wait_presence(lambda p: p["from"] == room + "/Bob"
                        and p["type"] == "unavailable")
    assert p["role"] == "none"
    # a session that ends leaves its rooms (RFC 6121 4.6.3 + XEP-0045)
    c.disconnect()
    a.wait_presence(lambda p: p["from"] == room + "/Carol"
                    and p["type"] == "unavailable")


@pytest.mark.parametrize("fsync", ["off", "interval"])
def test_rooms_when_records_are_not_waited_for(make_appliance, pool, fsync):
    """With conclave_audit_fsync off or interval a room event runs as
    soon as its record is appended: the same room life, in one call."""
    app = make_appliance(workers=2, extra_http=APPLIANCE_EXTRA_HTTP
                         + " conclave_audit_fsync %s;" % fsync)
    room = new_room()
    a = user(app, pool, "alice")
    b = user(app, pool, "bob")
    a.join(room, "Alice")
    b.join(room, "Bob")
    a.say(room, "hello", id="h1")
    b.wait_groupchat(lambda m: m["id"] == "h1")
    b.change_nick(room, "Robert")
    a.wait_presence(lambda p: p["nick"] == "Robert")
    a.call(lambda: a.muc.set_role(room, "Robert", "none"))
    b.wait_presence(lambda p: 307 in p["codes"])
    # the last occupant leaves: the temporary room ends ...
    a.leave(room, "Alice")
    a.wait_presence(lambda p: p["type"] == "unavailable"
                    and p["nick"] == "Alice")
    deadline = time.monotonic() + 5
    while room_owner(app, room) is not None:
        assert time.monotonic() < deadline, "the room outlived everyone"
        time.sleep(0.1)
    # ... and the next join makes a new one
    pres, _, _, history = b.join(room, "Bob", maxstanzas=10)
    assert 201 in codes_of(pres)
    assert history == []
