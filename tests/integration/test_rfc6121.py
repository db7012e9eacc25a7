"""RFC 6121 rules that no other test file shows on its own: the
subscription state machine across offline periods (section 3 and
Appendix A), cancelling a subscription (3.2), an approval without a
request (3.4: no pre-approval here), unavailable presence to
subscribers and directed-presence targets (4.5.2, 4.6.3), presence
probes sent by a client (4.3.1), and the server rules for stanzas to an
unknown user (8.5.1) and to a full JID that no resource matches
(8.5.3.2.1).

Real clients: Debian's python3-slixmpp, the two parties in different
nginx workers.  Each test has its own users; docs/chat.md lists which
test shows which rule.
"""

import time


from chathelp import get_roster, send_presence, slix, worker_of


def presence_from(c, bare, ptype="available", timeout=10, **kw):
    def match(p):
        return p["from"].split("/")[0] == bare and p["type"] == ptype and \
            all(p.get(k) == v for k, v in kw.items())
    return c.wait_presence(match, timeout)


def none_from(c, bare, settle=1.5, q="presences"):
    return [p for p in c.drain(q, settle)
            if p["from"].split("/")[0] == bare]


def push_for(c, jid, **want):
    def match(p):
        it = p["items"].get(jid)
        return p["type"] == "set" and it is not None and all(
            it.get(k) == v for k, v in want.items())
    return c.wait_push(match)["items"][jid]


def gone(app, c):
    """Signed out, and out of the registry."""
    c.disconnect()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and worker_of(app, c.jid):
        time.sleep(0.05)


def test_pending_out_across_offline_periods(appliance, pool):
    """3.1.2-3.1.6 and Appendix A: the request waits for the contact
    (pending in), the approval is given while the user is away (pending
    out resolved), and at the user's next initial presence the roster
    says "to" and the contact's presence comes with the probe (4.2.2)."""
    ja, je = "alice@example.com", "erin@example.com"
    e = slix(pool, appliance, "erin", "first")
    gone(appliance, e)                    # erin is known, and offline
    a = slix(pool, appliance, "alice", "s")
    get_roster(a)
    send_presence(a, to=je, ptype="subscribe")
    assert push_for(a, je, subscription="none")["ask"] == "subscribe"
    gone(appliance, a)

    e = slix(pool, appliance, "erin", "s")
    presence_from(e, ja, "subscribe")
    send_presence(e, to=ja, ptype="subscribed")
    send_presence(e, status="approved you")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and appliance.mariadb.query(
            "SELECT sub_to, ask_out FROM roster_item WHERE owner_jid = '%s'"
            " AND contact_jid = '%s'" % (ja, je),
            database=appliance.mariadb.database) != [("1", "0")]:
        time.sleep(0.1)

    a = slix(pool, appliance, "alice", "back", not_pid=e.worker)
    presence_from(a, je, status="approved you")
    items, _ = get_roster(a)
    assert items[je]["subscription"] == "to"
    assert items[je]["ask"] in ("", None)
    # erin has a "from" subscription only: alice's presence is not hers
    assert none_from(e, ja) == []


def test_contact_cancels_subscription(appliance, pool):
    """3.2: the contact cancels a subscription it approved: both rosters
    are pushed, the user hears "unsubscribed" and "unavailable" from the
    contact's resources, and no longer gets its presence."""
    jb, jc = "bob@example.com", "carol@example.com"
    b = slix(pool, appliance, "bob", "s")
    c = slix(pool, appliance, "carol", "s", not_pid=b.worker)
    get_roster(b)
    get_roster(c)
    send_presence(b, to=jc, ptype="subscribe")
    presence_from(c, jb, "subscribe")
    send_presence(c, to=jb, ptype="subscribed")
    presence_from(b, jc)

    send_presence(c, to=jb, ptype="unsubscribed")
    push_for(c, jb, subscription="none")
    push_for(b, jc, subscription="none")
    presence_from(b, jc, "unsubscribed")
    presence_from(b, jc, "unavailable")
    send_presence(c, status="no longer yours")
    assert none_from(b, jc) == []


def test_subscribed_without_a_request_is_ignored(appliance, pool):
    """3.4 and Appendix A.2.1/A.3.1: this server offers no
    pre-approval, so a "subscribed" the contact sends without a pending
    request changes no roster and is not routed; the user's later
    request still waits for the contact's answer."""
    jc, jf = "carol@example.com", "frank@example.com"
    c = slix(pool, appliance, "carol", "pre")
    f = slix(pool, appliance, "frank", "pre", not_pid=c.worker)
    get_roster(c)
    get_roster(f)

    send_presence(f, to=jc, ptype="subscribed")
    assert none_from(c, jf) == []
    for x in (c, f):
        assert [p for p in x.drain("pushes", 0.3) if p["type"] == "set"] \
            == []
    assert appliance.mariadb.scalar(
        "SELECT COUNT(*) FROM roster_item WHERE (owner_jid = '%s' AND "
        "contact_jid = '%s') OR (owner_jid = '%s' AND contact_jid = '%s')"
        % (jc, jf, jf, jc), database=appliance.mariadb.database) == "0"

    send_presence(c, to=jf, ptype="subscribe")
    assert push_for(c, jf, subscription="none")["ask"] == "subscribe"
    presence_from(f, jc, "subscribe")
    assert [p["type"] for p in none_from(c, jf)] == []
    items, _ = get_roster(c)
    assert items[jf]["subscription"] == "none"
    assert items[jf]["ask"] == "subscribe"


def test_unavailable_reaches_subscribers_and_directed(appliance, pool):
    """4.5.2 and 4.6.3: unavailable presence goes to the subscribers and
    to the entities the user sent directed presence to, and after it no
    presence of the user reaches the directed target."""
    jf, ja, jd = "frank@example.com", "alice@example.com", "bob@example.com"
    f = slix(pool, appliance, "frank", "u")
    a = slix(pool, appliance, "alice", "u", not_pid=f.worker)
    d = slix(pool, appliance, "bob", "u")
    get_roster(f)
    get_roster(a)
    send_presence(a, to=jf, ptype="subscribe")
    presence_from(f, ja, "subscribe")
    send_presence(f, to=ja, ptype="subscribed")
    presence_from(a, jf)

    # bob is not subscribed: he hears frank only through directed presence
    send_presence(f, to=jd, status="just for bob")
    presence_from(d, jf, status="just for bob")
    send_presence(f, ptype="unavailable")
    presence_from(a, jf, "unavailable")
    presence_from(d, jf, "unavailable")
    # frank comes back: the subscriber hears it, bob does not (4.6.3)
    send_presence(f, status="back")
    presence_from(a, jf, status="back")
    assert none_from(d, jf) == []


def test_probe_sent_by_a_client(appliance, pool):
    """4.3.1 (note) and 4.3.2: a probe a client sends to a local contact
    is the server's to answer: the prober gets the contact's presence
    only with a subscription (else "unsubscribed"), and the contact's
    client never sees the probe."""
    jc, je = "carol@example.com", "erin@example.com"
    c = slix(pool, appliance, "carol", "probe")
    e = slix(pool, appliance, "erin", "probe", not_pid=c.worker)
    b = slix(pool, appliance, "bob", "probe")
    get_roster(c)
    send_presence(c, to=je, ptype="subscribe")
    presence_from(e, jc, "subscribe")
    send_presence(e, to=jc, ptype="subscribed")
    presence_from(c, je)
    send_presence(e, status="erin here")
    presence_from(c, je, status="erin here")

    send_presence(c, to=je, ptype="probe")
    presence_from(c, je, status="erin here")
    # no subscription: "unsubscribed", nothing of erin's presence
    send_presence(b, to=je, ptype="probe")
    assert [p["type"] for p in none_from(b, je)] == ["unsubscribed"]
    assert [p for p in e.drain("presences", 0.5) if p["type"] == "probe"] \
        == []


def test_stanzas_to_unknown_user(appliance, pool):
    """8.5.1: an iq gets <service-unavailable/>, a message too (it has no
    offline storage: the account never existed here), presence is
    silently ignored."""
    a = slix(pool, appliance, "alice", "unknown")
    a.message("ghost@example.com", "anyone?", id="gh1")
    e = a.wait_message(lambda m: m["id"] == "gh1")
    assert e["type"] == "error" and e["error"] == "service-unavailable"

    async def ping():
        from slixmpp.exceptions import IqError
        try:
            await a.xmpp["xep_0199"].send_ping("ghost@example.com/x",
                                               timeout=10)
            return None
        except IqError as err:
            return err.iq["error"]["condition"]
    a.send(lambda x: x.register_plugin("xep_0199"))
    assert a.run(ping) == "service-unavailable"

    send_presence(a, to="ghost@example.com", status="hello ghost")
    send_presence(a, to="ghost@example.com/x", status="hello ghost")
    assert [p for p in a.drain("presences", 1.0)
            if p["type"] == "error"] == []


def test_message_to_a_full_jid_no_resource_matches(appliance, pool):
    """8.5.3.2.1: a chat message is handled as if sent to the bare JID;
    a normal, headline or groupchat one gets <service-unavailable/>
    instead of reaching another resource; an error is dropped."""
    s = slix(pool, appliance, "frank", "full")
    r = slix(pool, appliance, "erin", "desk", not_pid=s.worker)
    gone_res = "erin@example.com/laptop"
    s.message(gone_res, "chat falls back", id="fj1", mtype="chat")
    m = r.wait_message(lambda m: m["id"] == "fj1")
    assert m["to"] == gone_res and m["body"] == "chat falls back"
    for mid, mtype in (("fj2", "normal"), ("fj3", "headline"),
                       ("fj4", "groupchat")):
        s.message(gone_res, "not for another resource", id=mid, mtype=mtype)
        e = s.wait_message(lambda m: m["id"] == mid)
        assert e["type"] == "error" and e["error"] == "service-unavailable"
    s.message(gone_res, "an error", id="fj5", mtype="error")
    assert [m for m in r.drain(settle=1.0) if m["id"] != "fj1"] == []
    assert [m for m in s.drain(settle=0.2) if m["id"] == "fj5"] == []


def test_frozen_mariadb_delays_only_the_probe(appliance, pool):
    """The probe's roster read runs in a pool thread with a timer: while
    MariaDB is frozen it waits, and chat between others goes on."""
    a = slix(pool, appliance, "alice", "fz")
    b = slix(pool, appliance, "bob", "fz", not_pid=a.worker)
    c = slix(pool, appliance, "carol", "fz")
    appliance.mariadb.pause()
    try:
        for i in range(3):
            send_presence(c, to="erin@example.com", ptype="probe")
        for i in range(5):
            a.message(b.jid, "frozen %d" % i, id="fz%d" % i)
            b.wait_message(lambda m: m["body"] == "frozen %d" % i, 10)
    finally:
        appliance.mariadb.resume()
    # the session that probed is still served
    c.message(a.jid, "still here", id="fz-c")
    a.wait_message(lambda m: m["body"] == "still here", 15)
