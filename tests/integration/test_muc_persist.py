"""Persistent rooms (XEP-0045 10.2, issue 7 item 6): stored in MariaDB,
they survive a restart of nginx with their configuration, members,
subject and history (read back from the audit records); temporary rooms
do not.  A frozen MariaDB delays only the room being loaded: chat and
rooms already loaded carry on (the event loop never waits for it).
"""

import json
import time
import uuid

import pytest

from auditwait import wait_drained
from mucclient import MucClient, MucError
from slixclient import SlixPool

MUC = "conference.example.com"
EXTRA = """
    conclave_muc_domain %s;
    conclave_db_timeout 2s;
""" % MUC


def user(app, pool, uid, res=None):
    return MucClient(pool, "%s@example.com/%s" % (uid, res or uid),
                     uid + "-pw", app.nginx.xmpp_port)


def new_room():
    return "p%s@%s" % (uuid.uuid4().hex[:10], MUC)


def codes(pres):
    return set(pres["muc"]["status_codes"])


def test_persistent_room_survives_restart(make_appliance):
    app = make_appliance(workers=2, extra_http=EXTRA)
    room, temp = new_room(), new_room()
    pool = SlixPool()

    a = user(app, pool, "alice")
    b = user(app, pool, "bob")
    a.join(room, "Alice")
    a.configure(room, persistentroom="1", membersonly="1",
                roomname="Plans", roomdesc="Where we plan")
    a.call(lambda: a.muc.set_affiliation(room, "member",
                                         jid="bob@example.com"))
    b.join(room, "Bob")
    a.pool.call(lambda: a.muc.set_subject(room, "Q3"))
    for i in range(4):
        a.say(room, "before-%d" % i)
        b.wait_groupchat(lambda m, i=i: m["body"] == "before-%d" % i)
    a.join(temp, "Alice")

    # the room is saved in the db thread pool after each change: the
    # last save may still be on its way
    want = {"alice@example.com": "owner", "bob@example.com": "member"}
    deadline = time.monotonic() + 20
    while True:
        rows = app.mariadb.query("SELECT jid, config, affiliations FROM "
                                 "muc_room", database="conclave")
        if (len(rows) == 1 and json.loads(rows[0][2]) == want
                or time.monotonic() > deadline):
            break
        time.sleep(0.2)
    assert [r[0] for r in rows] == [room]
    conf = json.loads(rows[0][1])
    assert conf["persistent"] and conf["members_only"]
    assert conf["name"] == "Plans"
    assert json.loads(rows[0][2]) == {"alice@example.com": "owner",
                                      "bob@example.com": "member"}

    # history after a restart comes from the shipped audit records
    wait_drained(app)
    pool.close()
    app.nginx.stop()
    app.nginx.start()

    with SlixPool() as pool2:
        b = user(app, pool2, "bob")
        pres, subject, _, history = b.join(room, "Bob", maxstanzas=10)
        assert 201 not in codes(pres)             # not created anew
        assert pres["muc"]["affiliation"] == "member"
        assert subject["subject"] == "Q3"
        assert [h["body"] for h in history] == ["before-%d" % i
                                                for i in range(4)]

        # members-only still: carol is refused, the owner is the owner
        c = user(app, pool2, "carol")
        with pytest.raises(MucError) as e:
            c.join(room, "Carol")
        assert e.value.condition == "registration-required"
        a = user(app, pool2, "alice")
        pres, _, _, _ = a.join(room, "Alice", maxstanzas=0)
        assert pres["muc"]["affiliation"] == "owner"

        info = a.call(lambda: a.xmpp.plugin["xep_0030"].get_info(jid=room))
        assert "muc_persistent" in info["disco_info"]["features"]

        # the temporary room is gone: joining makes a new one
        pres, _, _, _ = a.join(temp, "Alice")
        assert 201 in codes(pres)

        # destroyed, the persistent room leaves MariaDB
        a.call(lambda: a.muc.destroy(room, reason="done"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            n = app.mariadb.query("SELECT COUNT(*) FROM muc_room",
                                  database="conclave")[0][0]
            if int(n) == 0:
                break
            time.sleep(0.2)
        assert int(n) == 0


def test_frozen_mariadb_stalls_only_the_room_being_loaded(make_appliance,
                                                          pool):
    # a wait long enough that the room's load is still pending when the
    # chat below is done, however loaded the machine (and the connection's
    # own timeouts longer still)
    app = make_appliance(workers=1, extra_http=EXTRA.replace(
        "conclave_db_timeout 2s", "conclave_db_timeout 8s;\n"
        "    conclave_audit_db_timeout 30s"))
    room = new_room()
    a = user(app, pool, "alice")
    b = user(app, pool, "bob")
    a.join(room, "Alice")
    b.join(room, "Bob")

    app.mariadb.pause()
    try:
        # a room nobody has loaded: its owner asks MariaDB and waits
        c = user(app, pool, "carol")
        other = new_room()
        c.send_raw("<presence to='%s/Carol'><x xmlns='http://jabber.org/"
                   "protocol/muc'/></presence>" % other)

        # meanwhile the loaded room and 1:1 chat go on at once
        for i in range(5):
            a.say(room, "live-%d" % i, id="live-%d" % i)
            b.wait_groupchat(lambda m, i=i: m["id"] == "live-%d" % i,
                             timeout=5)
        # (on the clients' loop: a send from this thread waits for the
        # loop's next wake-up)
        a.pool.call(lambda: a.xmpp.send_message(mto=b.jid, mbody="direct",
                                                mtype="chat"))
        b.wait_message(lambda m: m["body"] == "direct", timeout=5)
        # ... while the join still waits for MariaDB
        assert not [p for p in c.drain(c.xmpp.presences, 0.05)
                    if p["type"] == "error"]

        # the waiting join gets an error once conclave_db_timeout passes
        p = c.wait_presence(lambda p: p["type"] == "error", timeout=30)
        assert p["error"] == "internal-server-error"
    finally:
        app.mariadb.resume()

    # MariaDB back: the same room can be joined (and is created)
    deadline = time.monotonic() + 20
    while True:
        try:
            pres, _, _, _ = c.join(other, "Carol", timeout=5)
            break
        except (MucError, Exception):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    assert 201 in codes(pres)


def affiliations(app, room):
    rows = app.mariadb.query("SELECT affiliations FROM muc_room WHERE "
                             "jid = '%s'" % room, database="conclave")
    return json.loads(rows[0][0]) if rows else None


def test_a_room_save_that_times_out_is_tried_again(make_appliance, pool):
    """A change saved while MariaDB is frozen times out and is rolled
    back (its request's answer was "not saved"); the room tries again and
    MariaDB catches up once it answers, with no further change needed."""
    app = make_appliance(workers=1, extra_http=EXTRA.replace(
        "conclave_db_timeout 2s", "conclave_db_timeout 2s;\n"
        "    conclave_audit_db_timeout 30s"))
    room = new_room()
    a = user(app, pool, "alice")
    a.join(room, "Alice")
    a.configure(room, persistentroom="1")
    deadline = time.monotonic() + 20
    while affiliations(app, room) != {"alice@example.com": "owner"}:
        assert time.monotonic() < deadline
        time.sleep(0.2)

    app.mariadb.pause()
    try:
        a.call(lambda: a.muc.set_affiliation(room, "member",
                                             jid="bob@example.com"))
        deadline = time.monotonic() + 30
        while "not saved (3)" not in app.nginx.error_log():
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        app.mariadb.resume()

    deadline = time.monotonic() + 30
    while affiliations(app, room) != {"alice@example.com": "owner",
                                      "bob@example.com": "member"}:
        assert time.monotonic() < deadline, affiliations(app, room)
        time.sleep(0.2)
    assert "trying again" in app.nginx.error_log()
