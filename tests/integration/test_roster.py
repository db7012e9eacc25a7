"""RFC 6121 section 2: rosters stored in MariaDB.

Real client: Debian's python3-slixmpp (roster get/set/remove, pushes,
roster versioning).  Two resources of one user sit in different nginx
workers, so pushes cross the inter-worker channel.  Malformed roster
sets go over a raw WebSocket (no real client sends them) and must get
the error conditions of RFC 6121 2.3.3.
"""

import re

import pytest

from chathelp import get_roster, roster_remove, roster_set, slix
from rawws import RawWS

MAX_ITEMS = 6
APPLIANCE_EXTRA_HTTP = "conclave_roster_max_items %d;" % MAX_ITEMS


def is_set(push):
    return push["type"] == "set"


def test_roster_set_push_get_remove_across_workers(appliance, pool):
    a1 = slix(pool, appliance, "alice", "r1")
    a2 = slix(pool, appliance, "alice", "r2", not_pid=a1.worker)
    assert a1.worker != a2.worker

    items, ver0 = get_roster(a1)
    assert items == {}
    assert ver0 != ""
    get_roster(a2)                      # a2 is interested too (2.1.6)

    roster_set(a1, "bob@example.com", name="Bob <B&>",
               groups=["Friends", "Work \u00e9"])
    for c in (a1, a2):
        p = c.wait_push(lambda p: is_set(p) and "bob@example.com" in
                        p["items"])
        item = p["items"]["bob@example.com"]
        assert item["name"] == "Bob <B&>"
        assert sorted(item["groups"]) == ["Friends", "Work \u00e9"]
        assert item["subscription"] == "none"
        assert p["ver"] and p["ver"] != ver0

    items, ver1 = get_roster(a2)
    assert items["bob@example.com"]["name"] == "Bob <B&>"
    assert ver1 != ver0

    # RFC 6121 2.4: an update replaces name and groups
    roster_set(a2, "bob@example.com", name="Robert", groups=["Work"])
    p = a1.wait_push(lambda p: is_set(p) and p["items"].get(
        "bob@example.com", {}).get("name") == "Robert")
    assert p["items"]["bob@example.com"]["groups"] == ["Work"]

    roster_remove(a1, "bob@example.com")
    for c in (a1, a2):
        c.wait_push(lambda p: is_set(p) and p["items"].get(
            "bob@example.com", {}).get("subscription") == "remove")
    items, _ = get_roster(a1)
    assert "bob@example.com" not in items


def test_roster_survives_sign_out(appliance, pool):
    c = slix(pool, appliance, "carol", "keep")
    get_roster(c)
    roster_set(c, "erin@example.com", name="Erin", groups=["Ops"])
    c.wait_push(lambda p: is_set(p) and "erin@example.com" in p["items"])
    c.disconnect()

    c = slix(pool, appliance, "carol", "back")
    items, _ = get_roster(c)
    assert items["erin@example.com"]["name"] == "Erin"
    assert items["erin@example.com"]["groups"] == ["Ops"]
    assert appliance.mariadb.scalar(
        "SELECT COUNT(*) FROM roster_item WHERE owner_jid = "
        "'carol@example.com' AND contact_jid = 'erin@example.com'",
        database=appliance.mariadb.database) == "1"


def raw(appliance, user, resource):
    ws = RawWS(appliance.nginx.http_port)
    ws.login(user, resource=resource, presence=False)
    return ws


def iq(ws, id, query, to=None, itype="set"):
    ws.send("<iq xmlns='jabber:client' type='%s' id='%s'%s>%s</iq>" % (
        itype, id, " to='%s'" % to if to else "", query))
    return ws.expect(r"id='%s'" % id)


def roster_query(*items, ver=None):
    return "<query xmlns='jabber:iq:roster'%s>%s</query>" % (
        " ver='%s'" % ver if ver is not None else "", "".join(items))


def test_roster_versioning(appliance):
    ws = raw(appliance, "frank", "ver")
    r = iq(ws, "g1", roster_query(ver=""), itype="get")
    ver = re.search(r"ver='(\d+)'", r).group(1)
    # unchanged: an empty result (RFC 6121 2.6.3)
    r = iq(ws, "g2", roster_query(ver=ver), itype="get")
    assert "type='result'" in r and "<query" not in r
    r = iq(ws, "s1", roster_query("<item jid='bob@example.com'/>"))
    assert "type='result'" in r
    r = iq(ws, "g3", roster_query(ver=ver), itype="get")
    assert "bob@example.com" in r and "ver='%s'" % ver not in r
    ws.close()


BAD_SETS = [
    # RFC 6121 2.3.3
    ("two-items", "<item jid='a@example.com'/><item jid='b@example.com'/>",
     "bad-request"),
    ("dup-groups", "<item jid='a@example.com'><group>G</group>"
     "<group>G</group></item>", "bad-request"),
    ("empty-group", "<item jid='a@example.com'><group/></item>",
     "not-acceptable"),
    ("long-group", "<item jid='a@example.com'><group>%s</group></item>"
     % ("g" * 256), "not-acceptable"),
    ("long-name", "<item jid='a@example.com' name='%s'/>" % ("n" * 256),
     "not-acceptable"),
    ("many-groups", "<item jid='a@example.com'>%s</item>"
     % "".join("<group>g%d</group>" % i for i in range(33)),
     "not-acceptable"),
    ("no-jid", "<item name='x'/>", "bad-request"),
    ("bad-jid", "<item jid='a@@example.com'/>", "jid-malformed"),
    ("no-item", "", "bad-request"),
    ("other-child", "<foo xmlns='jabber:iq:roster' jid='a@example.com'/>",
     "bad-request"),
    ("remove-unknown", "<item jid='nobody@example.com' "
     "subscription='remove'/>", "item-not-found"),
]


@pytest.mark.parametrize("name,items,condition", BAD_SETS,
                         ids=[b[0] for b in BAD_SETS])
def test_malformed_roster_set(appliance, name, items, condition):
    ws = raw(appliance, "erin", "bad-" + name)
    r = iq(ws, "bad", roster_query(items))
    assert "type='error'" in r and "<%s " % condition in r, r
    # the stream goes on
    r = iq(ws, "ok", roster_query(), itype="get")
    assert "type='result'" in r
    ws.close()


def test_roster_of_another_user_is_forbidden(appliance):
    ws = raw(appliance, "erin", "forbid")
    r = iq(ws, "f1", roster_query("<item jid='x@example.com'/>"),
           to="bob@example.com")
    assert "type='error'" in r and "<forbidden " in r
    r = iq(ws, "f2", roster_query(), to="bob@example.com", itype="get")
    assert "type='error'" in r and "<forbidden " in r
    ws.close()


def test_oversized_roster(appliance):
    ws = raw(appliance, "bob", "big")
    for i in range(MAX_ITEMS):
        r = iq(ws, "s%d" % i, roster_query(
            "<item jid='c%d@example.com'/>" % i))
        assert "type='result'" in r, r
    r = iq(ws, "over", roster_query("<item jid='over@example.com'/>"))
    assert "type='error'" in r and "<not-allowed " in r
    # an update of an existing item is still fine
    r = iq(ws, "upd", roster_query("<item jid='c0@example.com' name='x'/>"))
    assert "type='result'" in r
    r = iq(ws, "get", roster_query(), itype="get")
    assert r.count("<item ") == MAX_ITEMS
    ws.close()
