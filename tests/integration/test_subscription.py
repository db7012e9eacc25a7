"""RFC 6121 section 3 and 4: presence subscriptions, their state machine
(Appendix A) stored in MariaDB, probes and broadcast to subscribers, and
priorities (8.5.2.1.1).

Real clients: Debian's python3-slixmpp, the two parties of every
subscription in different nginx workers.  Each test uses its own pair
of users: the appliance (and its MariaDB) lives for the whole file.
"""


from chathelp import (get_roster, roster_remove, send_presence, slix,
                      worker_of)


def pair(pool, app, u1, u2):
    a = slix(pool, app, u1, "s")
    b = slix(pool, app, u2, "s", not_pid=a.worker)
    get_roster(a)
    get_roster(b)
    return a, b


def item_of(c, jid):
    items, _ = get_roster(c)
    return items.get(jid)


def push_for(c, jid, **want):
    def match(p):
        it = p["items"].get(jid)
        return p["type"] == "set" and it is not None and all(
            it.get(k) == v for k, v in want.items())
    return c.wait_push(match)["items"][jid]


def presence_from(c, bare, ptype="available", **kw):
    def match(p):
        return p["from"].split("/")[0] == bare and p["type"] == ptype and \
            all(p.get(k) == v for k, v in kw.items())
    return c.wait_presence(match, **({"timeout": 10}))


def subscribe_both_ways(a, b, ja, jb):
    send_presence(a, to=jb, ptype="subscribe")
    presence_from(b, ja, "subscribe")
    send_presence(b, to=ja, ptype="subscribed")
    push_for(a, jb, subscription="to", ask="")
    send_presence(b, to=ja, ptype="subscribe")
    presence_from(a, jb, "subscribe")
    send_presence(a, to=jb, ptype="subscribed")
    push_for(b, ja, subscription="both")
    push_for(a, jb, subscription="both")


def test_subscription_handshake_across_workers(appliance, pool):
    ja, jb = "alice@example.com", "bob@example.com"
    a, b = pair(pool, appliance, "alice", "bob")
    assert a.worker != b.worker

    # 3.1.2: pending out, pushed to the user
    send_presence(a, to=jb, ptype="subscribe")
    it = push_for(a, jb, subscription="none")
    assert it["ask"] == "subscribe"
    # 3.1.3: the contact hears it, from the user's bare JID
    p = presence_from(b, ja, "subscribe")
    assert p["from"] == ja

    # 3.1.5: approval; both rosters change, the user hears the contact
    send_presence(b, to=ja, ptype="subscribed")
    assert push_for(b, ja, subscription="from")
    push_for(a, jb, subscription="to", ask="")
    presence_from(a, jb, "subscribed")
    presence_from(a, jb, "available")

    # presence broadcast: b's changes reach a (b has a "from" subscriber)
    send_presence(b, status="in a meeting")
    presence_from(a, jb, "available", status="in a meeting")

    assert item_of(a, jb)["subscription"] == "to"
    assert item_of(b, ja)["subscription"] == "from"

    # 3.3: the user unsubscribes; the contact hears it, the user gets
    # "unavailable" from the contact's resources
    send_presence(a, to=jb, ptype="unsubscribe")
    push_for(a, jb, subscription="none")
    push_for(b, ja, subscription="none")
    presence_from(b, ja, "unsubscribe")
    presence_from(a, jb, "unavailable")


def test_pending_in_survives_offline(appliance, pool):
    jc, je = "carol@example.com", "erin@example.com"
    c = slix(pool, appliance, "carol", "s")
    get_roster(c)
    send_presence(c, to=je, ptype="subscribe")
    push_for(c, je, subscription="none", ask="subscribe")
    row = appliance.mariadb.query(
        "SELECT pending_in, listed FROM roster_item WHERE owner_jid = '%s'"
        " AND contact_jid = '%s'" % (je, jc),
        database=appliance.mariadb.database)
    assert row == [("1", "0")]

    # erin signs in later, on another worker: the request is delivered
    e = slix(pool, appliance, "erin", "s", not_pid=c.worker)
    p = presence_from(e, jc, "subscribe")
    assert p["from"] == jc
    get_roster(e)
    # not a roster item until answered
    assert item_of(e, jc) is None

    send_presence(e, to=jc, ptype="subscribed")
    push_for(c, je, subscription="to")
    presence_from(c, je, "subscribed")
    presence_from(c, je, "available")
    assert item_of(e, jc)["subscription"] == "from"

    # answered: not delivered again at the next sign-in
    e.disconnect()
    e = slix(pool, appliance, "erin", "again")
    assert not [p for p in e.drain("presences", 1.0)
                if p["type"] == "subscribe"]


def test_probe_at_initial_presence(appliance, pool):
    jf, jb = "frank@example.com", "bob@example.com"
    f, b = pair(pool, appliance, "frank", "bob")
    subscribe_both_ways(f, b, jf, jb)
    send_presence(b, status="busy", priority=5)
    presence_from(f, jb, "available", status="busy")
    f.disconnect()
    presence_from(b, jf, "unavailable")

    # 4.2.2: at frank's initial presence the server probes bob, who is on
    # another worker, and bob's last presence comes back
    f = slix(pool, appliance, "frank", "back", not_pid=b.worker)
    p = presence_from(f, jb, "available", status="busy")
    assert p["priority"] == 5
    # and bob hears frank arrive
    presence_from(b, jf, "available")


def test_deny_and_remove(appliance, pool):
    ja, je = "alice@example.com", "erin@example.com"
    a, e = pair(pool, appliance, "alice", "erin")

    # a request denied (3.2): the requester hears "unsubscribed"
    send_presence(a, to=je, ptype="subscribe")
    presence_from(e, ja, "subscribe")
    send_presence(e, to=ja, ptype="unsubscribed")
    presence_from(a, je, "unsubscribed")
    push_for(a, je, subscription="none", ask="")

    # again, approved both ways, then removed (2.5.2): the contact hears
    # unsubscribe and unsubscribed and both rosters change
    subscribe_both_ways(a, e, ja, je)
    roster_remove(a, je)
    push_for(a, je, subscription="remove")
    presence_from(e, ja, "unsubscribe")
    presence_from(e, ja, "unsubscribed")
    push_for(e, ja, subscription="none")
    presence_from(a, je, "unavailable")
    assert item_of(a, je) is None


def test_subscribe_when_already_approved(appliance, pool):
    jc, jf = "carol@example.com", "frank@example.com"
    c, f = pair(pool, appliance, "carol", "frank")
    subscribe_both_ways(c, f, jc, jf)
    # 3.1.3: the contact's server answers for an approved subscription
    send_presence(c, to=jf, ptype="subscribe")
    presence_from(c, jf, "subscribed")
    assert not [p for p in f.drain("presences", 1.0)
                if p["type"] == "subscribe"]


def test_subscription_to_self_and_remote_are_not_stored(appliance, pool):
    b = slix(pool, appliance, "bob", "self")
    send_presence(b, to="bob@example.com", ptype="subscribe")
    send_presence(b, to="x@elsewhere.org", ptype="subscribe")
    p = b.wait_presence(lambda p: p["type"] == "error")
    assert p["error"] == "remote-server-not-found"
    assert appliance.mariadb.scalar(
        "SELECT COUNT(*) FROM roster_item WHERE owner_jid = "
        "'bob@example.com' AND contact_jid IN ('bob@example.com',"
        " 'x@elsewhere.org')", database=appliance.mariadb.database) == "0"


def test_priority_routing(appliance, pool):
    """RFC 6121 8.5.2.1.1: a message to the bare JID goes to the highest
    non-negative priority; a negative priority never gets one."""
    hi = slix(pool, appliance, "erin", "hi")
    lo = slix(pool, appliance, "erin", "lo", not_pid=hi.worker)
    neg = slix(pool, appliance, "erin", "neg")
    send_presence(hi, priority=10)
    send_presence(lo, priority=1)
    send_presence(neg, priority=-1)
    s = slix(pool, appliance, "carol", "prio")
    # wait until the priorities are in the registry
    for c in (hi, lo, neg):
        c.drain("presences", 0.3)
    s.message("erin@example.com", "to the best")
    m = hi.wait_message(lambda m: m["body"] == "to the best")
    assert m["from"] == s.jid
    assert not lo.drain(settle=0.5) and not neg.drain(settle=0.1)
    assert worker_of(appliance, hi.jid) != worker_of(appliance, lo.jid)
