"""Roster pushes when department membership changes (issue 6, item 3).

Every conclave_ldap_refresh each worker re-reads the shared groups and
pushes the difference to its own interested resources (RFC 6121 2.1.6):
a colleague who joins a department group arrives as an item with
subscription 'both' and the group, one who leaves as subscription
'remove'.  The change is made with ldapmodify in the real slapd while
the clients (Debian's python3-slixmpp) are signed in; with two workers
the members' sessions sit in different processes.
"""


from chathelp import get_roster, slix
from slapd import user_dn

GROUPS = "ou=groups,dc=example,dc=com"
ENG = "cn=engineering," + GROUPS

APPLIANCE_EXTRA_HTTP = """
    conclave_ldap_shared_group "%s";
    conclave_ldap_shared_group "cn=sales,%s";
    conclave_ldap_refresh 1s;
""" % (ENG, GROUPS)

WAIT = 15          # several refresh intervals on a busy machine


def member(app, uid, op):
    app.ldap.modify("dn: %s\nchangetype: modify\n%s: member\nmember: %s\n"
                    % (ENG, op, user_dn(uid)))


def item(c, jid, pred):
    return c.wait_push(lambda p: p["type"] == "set" and jid in p["items"]
                       and pred(p["items"][jid]), timeout=WAIT)["items"][jid]


def test_join_and_leave_a_department_pushes(appliance, pool):
    alice = slix(pool, appliance, "alice", "push")
    bob = slix(pool, appliance, "bob", "push", not_pid=alice.worker)
    carol = slix(pool, appliance, "carol", "push")
    for c in (alice, bob, carol):
        get_roster(c)                    # interested (RFC 6121 2.1.6)
    assert "carol@example.com" not in get_roster(alice)[0]

    member(appliance, "carol", "add")
    try:
        for c in (alice, bob):
            it = item(c, "carol@example.com",
                      lambda i: i["subscription"] == "both")
            assert it["name"] == "Carol Clark"
            assert it["groups"] == ["engineering"]
        # the newcomer gets her new colleagues, sales stays as it was
        it = item(carol, "alice@example.com",
                  lambda i: i["subscription"] == "both")
        assert it["groups"] == ["engineering"]
        item(carol, "bob@example.com", lambda i: i["subscription"] == "both")
        assert get_roster(alice)[0]["carol@example.com"]["groups"] == [
            "engineering"]
    finally:
        member(appliance, "carol", "delete")

    for c in (alice, bob):
        item(c, "carol@example.com", lambda i: i["subscription"] == "remove")
    item(carol, "alice@example.com", lambda i: i["subscription"] == "remove")
    item(carol, "bob@example.com", lambda i: i["subscription"] == "remove")
    assert "carol@example.com" not in get_roster(bob)[0]


def test_no_push_to_resources_that_never_asked(appliance, pool):
    """Pushes go to interested resources only (RFC 6121 2.1.6)."""
    quiet = slix(pool, appliance, "alice", "quiet")
    loud = slix(pool, appliance, "alice", "loud")
    get_roster(loud)
    member(appliance, "erin", "add")
    try:
        item(loud, "erin@example.com", lambda i: i["subscription"] == "both")
    finally:
        member(appliance, "erin", "delete")
    item(loud, "erin@example.com", lambda i: i["subscription"] == "remove")
    assert quiet.drain("pushes", settle=1.0) == []
