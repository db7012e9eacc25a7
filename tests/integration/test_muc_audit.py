"""Group chat on the record (issue 7 item 8, COMPLIANCE.md 1.1): room
messages, joins, leaves, nick changes, subjects, kicks, bans and
configuration changes are audit records with the sender's REAL JID
(also in a semi-anonymous room) and the room's JID, so that the
participants of the room at the time of each message can be rebuilt
from the records alone (Actiance ParticipantEntered/Left).  A room
message whose record cannot be written goes to nobody.
"""

import json
import os
import subprocess
import uuid

import pytest

from appliance import Appliance, env_sanitize
from auditwait import wait_drained
from mucclient import MucClient

MUC = "conference.example.com"
APPLIANCE_WORKERS = 2
APPLIANCE_EXTRA_HTTP = "conclave_muc_domain %s;" % MUC
DB = "conclave"


def records(app, room):
    """The room's records in journal order: (event, payload dict)."""
    rows = app.mariadb.query(
        "SELECT event, payload FROM audit_record WHERE peer = '%s' "
        "ORDER BY ts_utc_us, writer_id, seq" % room, database=DB)
    return [(r[0], json.loads(r[1])) for r in rows]


def user(app, pool, uid, res=None):
    return MucClient(pool, "%s@example.com/%s" % (uid, res or uid),
                     uid + "-pw", app.nginx.xmpp_port)


def new_room():
    return "a%s@%s" % (uuid.uuid4().hex[:10], MUC)


def participants_at_each_message(recs):
    """What an exporter does: replay joins and leaves up to each
    message; returns [(body, sorted real bare JIDs present)]."""
    present, out = {}, []
    for event, p in recs:
        prm = p.get("params", {})
        if event in ("muc_create", "muc_join"):
            present[prm["jid"]] = True
        elif event == "muc_leave":
            present.pop(prm["jid"], None)
        elif event == "muc_message":
            out.append((prm["body"], sorted(
                j.split("/")[0] for j in present)))
    return out


def test_room_events_are_recorded_with_real_jids(appliance, pool):
    app = appliance
    room = new_room()
    a = user(app, pool, "alice")
    b = user(app, pool, "bob")
    c = user(app, pool, "carol")

    a.join(room, "Alice")
    b.join(room, "Bob")
    a.say(room, "one")
    b.wait_groupchat(lambda m: m["body"] == "one")
    c.join(room, "Carol")
    # the room is semi-anonymous: Carol cannot see Bob's JID ...
    b.say(room, "two")
    c.wait_groupchat(lambda m: m["body"] == "two")
    b.change_nick(room, "Robert")
    a.wait_presence(lambda p: p["nick"] == "Robert")
    a.pool.call(lambda: a.muc.set_subject(room, "Agenda"))
    a.call(lambda: a.muc.set_role(room, "Carol", "none", reason="later"))
    c.wait_presence(lambda p: p["type"] == "unavailable" and 307 in
                    p["codes"])
    b.say(room, "three")
    a.wait_groupchat(lambda m: m["body"] == "three")
    a.configure(room, roomname="Team", roomsecret="s3cret",
                passwordprotectedroom="1")
    a.call(lambda: a.muc.set_affiliation(room, "outcast",
                                         jid="carol@example.com",
                                         reason="rules"))
    b.leave(room, "Robert")
    a.wait_presence(lambda p: p["nick"] == "Robert"
                    and p["type"] == "unavailable")

    wait_drained(app)
    recs = records(app, room)
    events = [e for e, _ in recs]
    for e in ("muc_create", "muc_join", "muc_message", "muc_nick",
              "muc_subject", "muc_kick", "muc_leave", "muc_config",
              "muc_ban"):
        assert e in events, (e, events)

    for e, p in recs:
        assert p["object"] == {"type": "room", "id": room}
        assert p["actor"]["user"] in ("alice@example.com",
                                      "bob@example.com",
                                      "carol@example.com"), p

    # ... but the record holds it: real JID and session of the sender
    two = [p for e, p in recs if e == "muc_message"
           and p["params"]["body"] == "two"][0]
    assert two["actor"]["user"] == "bob@example.com"
    assert two["params"]["from"] == b.jid
    assert two["params"]["nick"] == "Bob"
    assert two["actor"]["transport"] == "tcp"
    assert two["actor"]["session_id"]
    assert two["params"]["stanza"].startswith("<message from='%s/Bob'"
                                              % room)

    kick = [p for e, p in recs if e == "muc_kick"][0]
    assert kick["actor"]["user"] == "alice@example.com"
    assert kick["params"]["jid"] == c.jid
    assert kick["params"]["reason"] == "later"
    left = [p["params"] for e, p in recs if e == "muc_leave"]
    assert [(x["nick"], x["reason"]) for x in left] == [
        ("Carol", "kicked"), ("Robert", "left")]
    ban = [p for e, p in recs if e == "muc_ban"][0]
    assert ban["params"]["jid"] == "carol@example.com"

    # a configuration change is recorded, never its password
    conf = [p for e, p in recs if e == "muc_config"][0]
    assert conf["params"]["fields"]["muc#roomconfig_roomname"] == "Team"
    assert "s3cret" not in json.dumps(recs)

    # who was in the room at each message, from the records alone
    assert participants_at_each_message(recs) == [
        ("one", ["alice@example.com", "bob@example.com"]),
        ("two", ["alice@example.com", "bob@example.com",
                 "carol@example.com"]),
        ("three", ["alice@example.com", "bob@example.com"]),
    ]


def test_session_end_is_a_leave_on_the_record(appliance, pool):
    room = new_room()
    a = user(appliance, pool, "alice")
    b = user(appliance, pool, "bob")
    a.join(room, "Alice")
    b.join(room, "Bob")
    b.disconnect()
    a.wait_presence(lambda p: p["nick"] == "Bob"
                    and p["type"] == "unavailable")
    wait_drained(appliance)
    left = [p["params"] for e, p in records(appliance, room)
            if e == "muc_leave"]
    assert [(x["nick"], x["jid"]) for x in left] == [("Bob", b.jid)]


def test_banning_a_present_occupant_is_a_leave_on_the_record(appliance,
                                                             pool):
    """A ban (XEP-0045 9.1) of someone in the room ends their presence
    there: the records hold the ban and a leave with the reason, so the
    participants of the next message, rebuilt from the records alone,
    no longer include them."""
    room = new_room()
    a = user(appliance, pool, "alice")
    b = user(appliance, pool, "bob")
    c = user(appliance, pool, "carol")
    a.join(room, "Alice")
    b.join(room, "Bob")
    c.join(room, "Carol")
    a.say(room, "before the ban")
    c.wait_groupchat(lambda m: m["body"] == "before the ban")
    a.call(lambda: a.muc.set_affiliation(room, "outcast",
                                         jid="bob@example.com",
                                         reason="rules"))
    b.wait_presence(lambda p: p["type"] == "unavailable"
                    and 301 in p["codes"])
    a.say(room, "after the ban")
    c.wait_groupchat(lambda m: m["body"] == "after the ban")

    wait_drained(appliance)
    recs = records(appliance, room)
    ban = [p for e, p in recs if e == "muc_ban"]
    assert len(ban) == 1
    assert ban[0]["actor"]["user"] == "alice@example.com"
    assert ban[0]["params"]["jid"] == "bob@example.com"
    left = [p for e, p in recs if e == "muc_leave"]
    assert [(x["params"]["nick"], x["params"]["jid"], x["params"]["reason"])
            for x in left] == [("Bob", b.jid, "banned")]
    assert left[0]["actor"]["user"] == "bob@example.com"
    assert participants_at_each_message(recs) == [
        ("before the ban", ["alice@example.com", "bob@example.com",
                            "carol@example.com"]),
        ("after the ban", ["alice@example.com", "carol@example.com"]),
    ]


# --- a journal that cannot be written --------------------------------


@pytest.fixture
def small_journal_app(tmp_path, conclave_module):
    app = Appliance(str(tmp_path / "app"), module_so=conclave_module,
                    sanitize=env_sanitize(), workers=1,
                    extra_http=APPLIANCE_EXTRA_HTTP)
    os.makedirs(app.nginx.audit_dir, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700",
                        "tmpfs", app.nginx.audit_dir],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail("cannot mount a tmpfs for the journal: " + r.stderr,
                    pytrace=False)
    try:
        app.start()
        yield app
    finally:
        app.stop()
        subprocess.run(["umount", app.nginx.audit_dir], capture_output=True)
        problems = app.check_logs()
        assert not problems, problems


def test_room_message_without_record_goes_nowhere(small_journal_app, pool):
    app = small_journal_app
    room = new_room()
    a = user(app, pool, "alice")
    b = user(app, pool, "bob")
    a.join(room, "Alice")
    b.join(room, "Bob")

    filler = "x" * 1500
    refused = None
    for i in range(2000):
        body = "full-%d %s" % (i, filler)
        a.say(room, body, id="full-%d" % i)
        try:
            b.wait_groupchat(lambda m, i=i: m["id"] == "full-%d" % i,
                             timeout=3)
            continue
        except AssertionError:
            pass
        m = a.wait_message(lambda m, i=i: m["id"] == "full-%d" % i,
                           timeout=5)
        assert m["type"] == "error"
        assert m["error"] == "resource-constraint"
        refused = "full-%d" % i
        break
    assert refused, "the 256k journal never filled up"

    # not delivered later either, to anybody
    with pytest.raises(AssertionError):
        b.wait_groupchat(lambda m: m["id"] == refused, timeout=2)
    with pytest.raises(AssertionError):
        a.wait_groupchat(lambda m: m["id"] == refused, timeout=1)
    assert "room event refused" in app.nginx.error_log()
