"""XEP-0163 PEP, XEP-0115 caps, XEP-0223 persistent storage, XEP-0049
private storage and XEP-0402 bookmarks with the section 5.3 bridges
(#compat for XEP-0049, #compat-pep for XEP-0223; docs/pep.md).

Real clients: Debian's python3-slixmpp with its xep_0030, xep_0060,
xep_0163, xep_0115, xep_0049, xep_0048 and xep_0223 plugins, and
python3-aioxmpp's bookmark client (XEP-0048 over XEP-0049); the parties
of each notification sit in different nginx workers.  Bad input comes
from the small raw client (tests/lib/rawtcp.py), as real clients do not
send it.  Each test uses its own users: the appliance lives for the file.
"""

import asyncio
import base64
import hashlib
import re
import time


from slixmpp.xmlstream import ET, ElementBase

from chathelp import send_presence, subscribe_both, worker_of
from rawtcp import RawTCP

MAX_ITEM = 2048
MAX_ITEMS = 5
MAX_NODE = 6000
MAX_NODES = 8
APPLIANCE_EXTRA_HTTP = ("conclave_pep_max_item_size %d;\n"
                        "    conclave_pep_max_items %d;\n"
                        "    conclave_pep_max_node_size %d;\n"
                        "    conclave_pep_max_nodes %d;\n"
                        "    conclave_private_max_size 4k;\n"
                        "    conclave_db_timeout 2s;"
                        % (MAX_ITEM, MAX_ITEMS, MAX_NODE, MAX_NODES))
APPLIANCE_LOG_LEVEL = "info"

PUBSUB = "http://jabber.org/protocol/pubsub"
EVENT = PUBSUB + "#event"
BOOKMARKS = "urn:xmpp:bookmarks:1"
PLUGINS = ("xep_0030", "xep_0004", "xep_0060", "xep_0163", "xep_0115",
           "xep_0049", "xep_0048", "xep_0223")


def pep_client(pool, app, user, resource, interests=(), not_pid=None,
               on_pid=None, presence=True, tries=40):
    """A slixmpp client with the PEP plugins, on a chosen worker, whose
    caps ask for notifications of interests (XEP-0163 4.3.1)."""
    for _ in range(tries):
        c = pool.client("%s@example.com/%s" % (user, resource),
                        "%s-pw" % user, app.nginx.xmpp_port,
                        connect=False, presence=False)

        def setup():
            for p in PLUGINS:
                c.xmpp.register_plugin(p)
            c.events = []
            c.xmpp.add_event_handler("pubsub_publish",
                                     lambda m: c.events.append(("item", m)))
            c.xmpp.add_event_handler("pubsub_retract",
                                     lambda m: c.events.append(("retract",
                                                                m)))
            c.xmpp.add_event_handler("pubsub_delete",
                                     lambda m: c.events.append(("delete",
                                                                m)))
        pool.call(setup)
        assert c.connect()
        pid = worker_of(app, c.jid)
        if (not_pid is None or pid != not_pid) and \
                (on_pid is None or pid == on_pid):
            c.worker = pid
            break
        c.disconnect()
    else:
        raise AssertionError("no session on the wanted worker")

    async def caps():
        for ns in interests:
            c.xmpp["xep_0030"].add_feature(ns + "+notify")
        await c.xmpp["xep_0115"].update_caps(broadcast=False)
    c.run(caps)
    if presence:
        c.send(lambda x: x.send_presence())
    return c


def events(c, kind, node, timeout=10, count=1):
    """Waits for count pubsub events of kind on node; returns them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = [m for k, m in list(c.events)
               if k == kind and m["pubsub_event"]["items"]["node"] == node]
        if len(got) >= count:
            return got
        time.sleep(0.05)
    raise AssertionError("%s: %d %s event(s) on %s expected, have %r" % (
        c.jid, count, kind, node, [(k, str(m)) for k, m in c.events]))


def no_events(c, node, settle=1.5):
    time.sleep(settle)
    return [m for k, m in list(c.events)
            if m["pubsub_event"]["items"]["node"] == node]


def item_xml(ns, text):
    e = ET.Element("{%s}entry" % ns)
    e.text = text
    return e


def publish(c, node, payload, id=None, options=None, timeout=15):
    def go():
        return c.xmpp["xep_0060"].publish(None, node, id=id,
                                          payload=payload,
                                          options=options)
    return c.run(go, timeout)


def error_of(c, make, timeout=15):
    """The condition and app-specific conditions of an iq error."""
    try:
        c.run(make, timeout)
    except Exception as e:      # slixmpp.exceptions.IqError
        iq = e.iq
        err = iq.xml.find("{jabber:client}error")
        names = [ch.tag.split("}")[1] for ch in err]
        return err.get("type"), names
    raise AssertionError("no error")


def form(**fields):
    f = ET.Element("{jabber:x:data}x", type="submit")
    fields = dict({"FORM_TYPE": PUBSUB + "#publish-options"}, **fields)
    for var, value in fields.items():
        fe = ET.SubElement(f, "{jabber:x:data}field", var=var)
        if var == "FORM_TYPE":
            fe.set("type", "hidden")
        ET.SubElement(fe, "{jabber:x:data}value").text = str(value)
    return f


def options(c, **fields):
    f = c.xmpp["xep_0004"].make_form(ftype="submit")
    f.add_field(var="FORM_TYPE", ftype="hidden",
                value=PUBSUB + "#publish-options")
    for var, value in fields.items():
        f.add_field(var=var, value=value)
    return f


# ---- XEP-0115 and disco ----

def caps_ver(identities, features):
    """XEP-0115 section 5.1 for a query without forms."""
    s = ""
    for cat, typ, lang, name in sorted(identities):
        s += "%s/%s/%s/%s<" % (cat, typ, lang, name)
    for f in sorted(features):
        s += f + "<"
    return base64.b64encode(hashlib.sha1(s.encode()).digest()).decode()


def test_server_caps_match_disco_info(appliance):
    c = RawTCP(appliance.nginx.xmpp_port)
    try:
        feats = c.open()
        if "starttls" in feats:
            c.starttls()
            c.open()
        assert "<success" in c.auth("alice", "alice-pw")
        feats = c.open()
        m = re.search(r"<c xmlns='http://jabber.org/protocol/caps' "
                      r"hash='sha-1' node='([^']+)' ver='([^']+)'/>", feats)
        assert m, feats
        node, ver = m.groups()
        c.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:"
               "xmpp-bind'/></iq>")
        c.expect(r"</iq>")
        # XEP-0115 6.2: the ver's node answers like the plain query
        c.send("<iq type='get' id='d1' to='example.com'><query xmlns="
               "'http://jabber.org/protocol/disco#info' node='%s#%s'/></iq>"
               % (node, ver))
        r = c.expect(r"id='d1'.*?</iq>")
        idents = [(a, b, "", n) for a, b, n in re.findall(
            r"<identity category='([^']*)' type='([^']*)' name='([^']*)'/>",
            r)]
        feats = re.findall(r"<feature var='([^']*)'/>", r)
        assert "jabber:iq:private" in feats
        assert caps_ver(idents, feats) == ver
        # the account: XEP-0163 section 6 and XEP-0402 section 5.3
        c.send("<iq type='get' id='d2' to='alice@example.com'><query "
               "xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        r = c.expect(r"id='d2'.*?</iq>")
        assert "<identity category='pubsub' type='pep'/>" in r
        for f in ("#publish", "#publish-options", "#access-whitelist",
                  "#auto-create", "#persistent-items", "#last-published"):
            assert "var='%s%s'" % (PUBSUB, f) in r, f
        assert "var='urn:xmpp:bookmarks:1#compat'" in r
    finally:
        c.close()


def raw_session(app, user, resource):
    c = RawTCP(app.nginx.xmpp_port)
    c.login(user, resource=resource)
    return c


def test_caps_cached_only_when_hash_matches(appliance):
    """A wrong disco#info is used for that session but not cached: the
    next session with the same ver is asked again; a right one is
    cached: the next session is not asked (XEP-0115 5.4)."""
    feats = ["http://jabber.org/protocol/disco#info", "urn:x:raw+notify"]
    good = caps_ver([("client", "pc", "", "raw")], feats)
    bad = caps_ver([("client", "pc", "", "raw")], feats + ["x"])

    def present(c, ver):
        c.send("<presence><c xmlns='http://jabber.org/protocol/caps' "
               "hash='sha-1' node='urn:raw' ver='%s'/></presence>" % ver)

    def answer(c, ver, timeout=None):
        q = c.expect(r"<iq[^>]*type='get'[^>]*>.*?</iq>", timeout)
        assert "node='urn:raw#%s'" % ver in q, q
        qid = re.search(r"id='([^']+)'", q).group(1)
        fs = "".join("<feature var='%s'/>" % f for f in feats)
        c.send("<iq type='result' to='example.com' id='%s'><query xmlns="
               "'http://jabber.org/protocol/disco#info' node='urn:raw#%s'>"
               "<identity category='client' type='pc' name='raw'/>%s"
               "</query></iq>" % (qid, ver, fs))

    sessions = []
    try:
        # bad ver, answered with features that do not hash to it
        for i in range(2):
            c = raw_session(appliance, "erin", "bad%d" % i)
            sessions.append(c)
            present(c, bad)
            answer(c, bad)
        # the matching ver: asked once per worker at most
        asked = 0
        for i in range(6):
            c = raw_session(appliance, "erin", "good%d" % i)
            sessions.append(c)
            present(c, good)
            try:
                answer(c, good, 2)
                asked += 1
            except TimeoutError:
                pass
        assert 1 <= asked <= 2, asked     # 2 workers, one cache each
    finally:
        for c in sessions:
            c.close()


def test_caps_hash_with_forms_and_languages(appliance):
    """XEP-0115 section 5.3, the complex example: identities in two
    languages and an extended form hash to the spec's ver, so the answer
    is cached and the next session with that ver is not asked."""
    ver = "q07IKJEyjvHSyhy//CH0CxmKi8w="
    info = (
        "<identity xml:lang='en' category='client' name='Psi 0.11' "
        "type='pc'/><identity xml:lang='el' category='client' "
        "name='\u03a8 0.11' type='pc'/>"
        "<feature var='http://jabber.org/protocol/caps'/>"
        "<feature var='http://jabber.org/protocol/disco#info'/>"
        "<feature var='http://jabber.org/protocol/disco#items'/>"
        "<feature var='http://jabber.org/protocol/muc'/>"
        "<x xmlns='jabber:x:data' type='result'>"
        "<field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:"
        "softwareinfo</value></field>"
        "<field var='ip_version'><value>ipv4</value><value>ipv6</value>"
        "</field><field var='os'><value>Mac</value></field>"
        "<field var='os_version'><value>10.5.1</value></field>"
        "<field var='software'><value>Psi</value></field>"
        "<field var='software_version'><value>0.11</value></field></x>")
    sessions = []
    asked = 0
    try:
        for i in range(6):
            c = raw_session(appliance, "erin", "psi%d" % i)
            sessions.append(c)
            c.send("<presence><c xmlns='http://jabber.org/protocol/caps' "
                   "hash='sha-1' node='http://psi-im.org' ver='%s'/>"
                   "</presence>" % ver)
            try:
                q = c.expect(r"<iq[^>]*type='get'[^>]*>.*?</iq>", 2)
            except TimeoutError:
                continue
            asked += 1
            qid = re.search(r"id='([^']+)'", q).group(1)
            c.send("<iq type='result' to='example.com' id='%s'><query "
                   "xmlns='http://jabber.org/protocol/disco#info' "
                   "node='http://psi-im.org#%s'>%s</query></iq>"
                   % (qid, ver, info))
        assert 1 <= asked <= 2, asked
    finally:
        for c in sessions:
            c.close()


# ---- XEP-0163 ----

def test_publish_notifies_subscribed_contacts_across_workers(appliance,
                                                             pool):
    node = "urn:example:tune"
    a = pep_client(pool, appliance, "alice", "pub", [node])
    b = pep_client(pool, appliance, "bob", "sub", [node], not_pid=a.worker)
    subscribe_both(a, b)
    # interested but not subscribed: nothing
    carol = pep_client(pool, appliance, "carol", "x", [node])
    # subscribed but not interested in this node: nothing
    b2 = pep_client(pool, appliance, "bob", "other", ["urn:other"],
                    on_pid=a.worker)
    a2 = pep_client(pool, appliance, "alice", "own", [node],
                    not_pid=a.worker)

    r = publish(a, node, item_xml(node, "song 1"), id="current")
    assert r["pubsub"]["publish"]["item"]["id"] == "current"

    for c in (b, a2, a):
        m = events(c, "item", node)[0]
        item = m["pubsub_event"]["items"]["item"]
        assert item["id"] == "current"
        assert item["payload"].text == "song 1"
        assert str(m["from"]) == "alice@example.com"
        assert m["type"] == "headline"
    assert no_events(carol, node) == []
    assert no_events(b2, node, settle=0.1) == []

    # retract with notify (XEP-0060 7.2.2.1), then delete (8.4)
    a.run(lambda: a.xmpp["xep_0060"].retract(None, node, "current",
                                             notify=True))
    m = events(b, "retract", node)[0]
    assert m["pubsub_event"]["items"]["retract"]["id"] == "current"
    publish(a, node, item_xml(node, "song 2"), id="current")
    events(b, "item", node, count=2)
    a.run(lambda: a.xmpp["xep_0060"].delete_node(None, node))
    deadline = time.monotonic() + 10
    while not [1 for k, m in b.events if k == "delete"]:
        assert time.monotonic() < deadline, b.events
        time.sleep(0.05)
    assert error_of(b, lambda: b.xmpp["xep_0060"].get_items(
        "alice@example.com", node)) == ("cancel", ["item-not-found"])


def test_last_item_sent_on_available_presence(appliance, pool):
    node = "urn:example:mood"
    d = pep_client(pool, appliance, "erin", "pub", [node])
    e = pep_client(pool, appliance, "frank", "x", [node], not_pid=d.worker)
    subscribe_both(d, e)
    publish(d, node, item_xml(node, "first"), id="1")
    publish(d, node, item_xml(node, "happy"), id="2")
    events(e, "item", node, count=2)

    # a later session of the contact gets the last item only (4.3.2)
    e2 = pep_client(pool, appliance, "frank", "late", [node],
                    not_pid=d.worker)
    got = events(e2, "item", node)
    time.sleep(1)
    got = [m for k, m in e2.events if k == "item"]
    assert [m["pubsub_event"]["items"]["item"]["id"] for m in got] == ["2"]
    # and one without the interest gets nothing
    e3 = pep_client(pool, appliance, "frank", "none", ["urn:unrelated"])
    assert no_events(e3, node) == []


def test_items_max_items_by_id_and_fifo(appliance, pool):
    node = "urn:example:log"
    f = pep_client(pool, appliance, "frank", "a")
    opts = options(f, **{"pubsub#max_items": "3",
                         "pubsub#access_model": "presence"})
    for i in range(5):
        publish(f, node, item_xml(node, "n%d" % i), id="i%d" % i,
                options=opts)
    r = f.run(lambda: f.xmpp["xep_0060"].get_items(None, node))
    ids = [it["id"] for it in r["pubsub"]["items"]]
    # XEP-0060 7.1.3.6: the oldest went first
    assert ids == ["i2", "i3", "i4"]
    r = f.run(lambda: f.xmpp["xep_0060"].get_items(None, node,
                                                   max_items=1))
    assert [it["id"] for it in r["pubsub"]["items"]] == ["i4"]
    r = f.run(lambda: f.xmpp["xep_0060"].get_item(None, node, "i3"))
    items = list(r["pubsub"]["items"])
    assert [it["id"] for it in items] == ["i3"]
    assert items[0]["payload"].text == "n3"

    # publish-options are preconditions (7.1.5)
    bad = options(f, **{"pubsub#access_model": "open"})
    assert error_of(f, lambda: f.xmpp["xep_0060"].publish(
        None, node, payload=item_xml(node, "x"), options=bad)) == \
        ("cancel", ["conflict", "precondition-not-met"])
    # the owner's configuration (XEP-0060 8.2)
    cfg = f.run(lambda: f.xmpp["xep_0060"].get_node_config(None, node))
    values = cfg["pubsub_owner"]["configure"]["form"].get_values()
    assert values["pubsub#max_items"] == "3"
    assert values["pubsub#access_model"] == "presence"


def test_access_models(appliance, pool):
    g = pep_client(pool, appliance, "carol", "own")
    a = pep_client(pool, appliance, "erin", "reader")
    for node, model in (("urn:x:open", "open"), ("urn:x:pres", "presence"),
                        ("urn:x:wl", "whitelist")):
        publish(g, node, item_xml(node, model), id="v",
                options=options(g, **{"pubsub#access_model": model}))

    owner = "carol@example.com"
    r = a.run(lambda: a.xmpp["xep_0060"].get_items(owner, "urn:x:open"))
    assert [it["id"] for it in r["pubsub"]["items"]] == ["v"]
    # XEP-0060 6.5.9.18 and 6.5.9.19
    assert error_of(a, lambda: a.xmpp["xep_0060"].get_items(
        owner, "urn:x:pres")) == \
        ("auth", ["not-authorized", "presence-subscription-required"])
    assert error_of(a, lambda: a.xmpp["xep_0060"].get_items(
        owner, "urn:x:wl")) == ("cancel", ["not-allowed", "closed-node"])
    assert error_of(a, lambda: a.xmpp["xep_0060"].get_items(
        owner, "urn:x:none")) == ("cancel", ["item-not-found"])
    # publishing to someone else's PEP service
    assert error_of(a, lambda: a.xmpp["xep_0060"].publish(
        owner, "urn:x:open", payload=item_xml("urn:x:open", "mine"))) == \
        ("auth", ["forbidden"])
    assert error_of(a, lambda: a.xmpp["xep_0060"].delete_node(
        owner, "urn:x:open")) == ("auth", ["forbidden"])

    # a presence subscription opens the presence node, not the whitelist
    subscribe_both(g, a)
    r = a.run(lambda: a.xmpp["xep_0060"].get_items(owner, "urn:x:pres"))
    assert [it["id"] for it in r["pubsub"]["items"]] == ["v"]
    assert error_of(a, lambda: a.xmpp["xep_0060"].get_items(
        owner, "urn:x:wl"))[1] == ["not-allowed", "closed-node"]


def test_limits_and_malformed_publish(appliance):
    c = raw_session(appliance, "bob", "raw")
    try:
        def iq(body, id):
            c.send("<iq type='set' id='%s'>%s</iq>" % (id, body))
            return c.expect(r"<iq[^>]*id='%s'[^>]*(/>|>.*?</iq>)" % id)

        def pub(node, payload, id, item_id="x"):
            return iq("<pubsub xmlns='%s'><publish node='%s'><item id='%s'>"
                      "%s</item></publish></pubsub>"
                      % (PUBSUB, node, item_id, payload), id)

        big = "<big xmlns='urn:x'>%s</big>" % ("y" * MAX_ITEM)
        r = pub("urn:x:big", big, "p1")
        assert "type='error'" in r and "<not-acceptable" in r \
            and "<payload-too-big" in r, r
        # node size limit: items of 1.5 KB, max_items max
        opts = ("<publish-options><x xmlns='jabber:x:data' type='submit'>"
                "<field var='pubsub#max_items'><value>max</value></field>"
                "</x></publish-options>")
        half = "<h xmlns='urn:x'>%s</h>" % ("z" * 1500)
        results = []
        for i in range(MAX_ITEMS):
            results.append(iq("<pubsub xmlns='%s'><publish node='urn:x:full'>"
                              "<item id='%d'>%s</item></publish>%s</pubsub>"
                              % (PUBSUB, i, half, opts), "f%d" % i))
        assert "type='result'" in results[0]
        assert any("<policy-violation" in r for r in results), results
        # max_items over conclave_pep_max_items
        r = iq("<pubsub xmlns='%s'><publish node='urn:x:m'><item id='1'>"
               "<a xmlns='urn:x'/></item></publish><publish-options><x "
               "xmlns='jabber:x:data' type='submit'><field var='pubsub#"
               "max_items'><value>%d</value></field></x></publish-options>"
               "</pubsub>" % (PUBSUB, MAX_ITEMS + 1), "m1")
        assert "<policy-violation" in r, r
        # malformed publishes (XEP-0060 7.1.3)
        r = iq("<pubsub xmlns='%s'><publish node='urn:x:a'/></pubsub>"
               % PUBSUB, "e1")
        assert "<bad-request" in r and "<item-required" in r, r
        r = pub("urn:x:a", "", "e2")
        assert "<bad-request" in r and "<payload-required" in r, r
        r = pub("urn:x:a", "<a xmlns='u'/><b xmlns='u'/>", "e3")
        assert "<bad-request" in r and "<invalid-payload" in r, r
        r = iq("<pubsub xmlns='%s'><publish/></pubsub>" % PUBSUB, "e4")
        assert "<bad-request" in r and "<nodeid-required" in r, r
        r = pub("n" * 300, "<a xmlns='u'/>", "e5")
        assert "<not-acceptable" in r, r
        r = iq("<pubsub xmlns='%s'><subscribe node='urn:x:a' jid='bob@"
               "example.com'/></pubsub>" % PUBSUB, "e6")
        assert "<feature-not-implemented" in r, r
        # too many nodes
        codes = [pub("urn:x:n%d" % i, "<a xmlns='u'/>", "n%d" % i)
                 for i in range(MAX_NODES + 1)]
        assert "<policy-violation" in codes[-1], codes[-1]
        # the stream survived all of it
        c.send("<iq type='get' id='ping'><ping xmlns='urn:xmpp:ping'/></iq>")
        c.expect(r"id='ping'")
    finally:
        c.close()


def test_concurrent_first_publishes(appliance):
    """Two resources (on both workers, most likely) publish the first
    item of the same new nodes at once: each publish succeeds, once the
    race for the node's row is run again."""
    a = raw_session(appliance, "alice", "race1")
    b = raw_session(appliance, "alice", "race2")
    try:
        for i in range(4):
            for c, who in ((a, "a"), (b, "b")):
                c.send("<iq type='set' id='r%d%s'><pubsub xmlns='%s'>"
                       "<publish node='urn:x:race%d'><item id='%s'><v "
                       "xmlns='urn:x'/></item></publish></pubsub></iq>"
                       % (i, who, PUBSUB, i, who))
        for c, who in ((a, "a"), (b, "b")):
            got = {}
            while len(got) < 4:
                r = c.expect(r"<iq[^>]*id='r\d%s'[^>]*(/>|>.*?</iq>)" % who)
                iq = r[r.rindex("<iq"):]
                got[re.search(r"id='(r\d)", iq).group(1)] = iq
            for iq in got.values():
                assert "type='result'" in iq, iq
    finally:
        a.close()
        b.close()


def test_shared_directory_contacts(make_appliance, pool):
    """Shared directory contacts (issue 6.3, subscribed both ways with no
    roster row) get live notifications, may read presence nodes, and get
    the last item when they become available."""
    app = make_appliance(extra_http='conclave_ldap_shared_group '
                         '"cn=engineering,ou=groups,dc=example,dc=com";')
    node = "urn:example:team"
    a = pep_client(pool, app, "alice", "pub", [node])
    b = pep_client(pool, app, "bob", "sub", [node], not_pid=a.worker)
    publish(a, node, item_xml(node, "hello team"), id="h")
    m = events(b, "item", node)[0]
    assert m["pubsub_event"]["items"]["item"]["payload"].text == \
        "hello team"
    r = b.run(lambda: b.xmpp["xep_0060"].get_items("alice@example.com",
                                                   node))
    assert [it["id"] for it in r["pubsub"]["items"]] == ["h"]
    late = pep_client(pool, app, "bob", "late", [node], not_pid=a.worker)
    assert events(late, "item", node)[0]["pubsub_event"]["items"][
        "item"]["id"] == "h"


# ---- XEP-0049, XEP-0223, XEP-0402 ----

def test_private_storage_and_xep0223_survive_restart(appliance, pool):
    from slixmpp.plugins.xep_0049.stanza import PrivateXML
    from slixmpp.xmlstream import register_stanza_plugin

    class Prefs(ElementBase):
        namespace = "urn:example:prefs"
        name = "prefs"
        plugin_attrib = "prefs"
        interfaces = set()

    register_stanza_plugin(PrivateXML, Prefs)
    h = pep_client(pool, appliance, "alice", "priv")
    data = Prefs()
    data.xml.text = "dark mode"
    h.run(lambda: h.xmpp["xep_0049"].store(data))
    # XEP-0223: publish-options persist + whitelist, then read back
    class Secret(ElementBase):
        namespace = "urn:example:secret"
        name = "secret"
        plugin_attrib = "secret"
        interfaces = set()

    secret = Secret()
    secret.xml.text = "42"
    h.run(lambda: h.xmpp["xep_0223"].store(secret, node="urn:example:secret",
                                           id="current"))

    appliance.nginx.stop()
    appliance.nginx.start()

    h2 = pep_client(pool, appliance, "alice", "again")
    r = h2.run(lambda: h2.xmpp["xep_0049"].retrieve("prefs"))
    got = r["private"].xml.find("{urn:example:prefs}prefs")
    assert got is not None and got.text == "dark mode"
    r = h2.run(lambda: h2.xmpp["xep_0223"].retrieve("urn:example:secret"))
    item = list(r["pubsub"]["items"])[0]
    assert item["id"] == "current" and item["payload"].text == "42"
    cfg = h2.run(lambda: h2.xmpp["xep_0060"].get_node_config(
        None, "urn:example:secret"))
    values = cfg["pubsub_owner"]["configure"]["form"].get_values()
    assert values["pubsub#access_model"] == "whitelist"
    assert values["pubsub#persist_items"] in ("true", True)


def test_private_storage_errors(appliance):
    c = raw_session(appliance, "erin", "raw")
    try:
        def iq(body, id, typ="set", to=""):
            c.send("<iq type='%s' id='%s'%s>%s</iq>" % (
                typ, id, " to='%s'" % to if to else "", body))
            return c.expect(r"<iq[^>]*id='%s'[^>]*(/>|>.*?</iq>)" % id)

        r = iq("<query xmlns='jabber:iq:private'><a xmlns='urn:a'/></query>",
               "o1", "get", to="alice@example.com")
        assert "<forbidden" in r, r
        r = iq("<query xmlns='jabber:iq:private'><a xmlns='jabber:x'/>"
               "</query>", "o2")
        assert "<not-acceptable" in r, r
        r = iq("<query xmlns='jabber:iq:private'><a xmlns='urn:a'/><b "
               "xmlns='urn:b'/></query>", "o3")
        assert "<bad-request" in r, r
        r = iq("<query xmlns='jabber:iq:private'><a xmlns='urn:a'>%s</a>"
               "</query>" % ("q" * 5000), "o4")
        assert "<not-acceptable" in r, r
        r = iq("<query xmlns='jabber:iq:private'><a xmlns='urn:a'/></query>",
               "o5", "get")
        assert "type='result'" in r and "<a xmlns='urn:a'/>" in r, r
    finally:
        c.close()


def conference(jid, name, autojoin, nick):
    e = ET.Element("{%s}conference" % BOOKMARKS, name=name,
                   autojoin="true" if autojoin else "false")
    ET.SubElement(e, "{%s}nick" % BOOKMARKS).text = nick
    return e


def test_bookmarks_xep0049_to_xep0402(appliance, pool):
    """An old client writes storage:bookmarks; a new client reads the
    XEP-0402 node and is notified (section 5.3)."""
    new = pep_client(pool, appliance, "frank", "new", [BOOKMARKS])
    old = pep_client(pool, appliance, "frank", "old", not_pid=new.worker)

    bm = old.xmpp["xep_0048"].stanza.Bookmarks()
    bm.add_conference("team@conference.example.com", "franky",
                      name="Team", autojoin=True)
    bm.add_conference("ops@conference.example.com", "f", name="Ops")
    old.run(lambda: old.xmpp["xep_0048"].set_bookmarks(bm, method=
                                                       "xep_0049"))

    got = events(new, "item", BOOKMARKS, count=2)
    assert {m["pubsub_event"]["items"]["item"]["id"] for m in got} == {
        "team@conference.example.com", "ops@conference.example.com"}
    r = new.run(lambda: new.xmpp["xep_0060"].get_items(None, BOOKMARKS))
    items = {it["id"]: it["payload"] for it in r["pubsub"]["items"]}
    team = items["team@conference.example.com"]
    assert team.tag == "{%s}conference" % BOOKMARKS
    assert team.get("name") == "Team" and team.get("autojoin") == "true"
    assert team.find("{%s}nick" % BOOKMARKS).text == "franky"
    # the node has the options XEP-0402 section 3 asks for
    cfg = new.run(lambda: new.xmpp["xep_0060"].get_node_config(None,
                                                              BOOKMARKS))
    values = cfg["pubsub_owner"]["configure"]["form"].get_values()
    assert values["pubsub#access_model"] == "whitelist"

    # removing one through XEP-0049 retracts it for the new client
    bm = old.xmpp["xep_0048"].stanza.Bookmarks()
    bm.add_conference("team@conference.example.com", "franky",
                      name="Team", autojoin=True)
    old.run(lambda: old.xmpp["xep_0048"].set_bookmarks(bm, method=
                                                       "xep_0049"))
    m = events(new, "retract", BOOKMARKS)[0]
    assert m["pubsub_event"]["items"]["retract"]["id"] == \
        "ops@conference.example.com"


def test_bookmarks_xep0402_to_xep0049_aioxmpp(appliance, pool):
    """A new client publishes XEP-0402 bookmarks; aioxmpp's bookmark
    client (XEP-0048 over XEP-0049 private storage) reads them."""
    import aioxmpp
    import aioxmpp.bookmarks

    new = pep_client(pool, appliance, "carol", "new")
    opts = options(new, **{"pubsub#persist_items": "true",
                           "pubsub#max_items": "max",
                           "pubsub#send_last_published_item": "never",
                           "pubsub#access_model": "whitelist"})
    publish(new, BOOKMARKS, conference("x", "Lunch", True, "cc"),
            id="lunch@conference.example.com", options=opts)
    publish(new, BOOKMARKS, conference("x", "Dev", False, "carol"),
            id="dev@conference.example.com", options=opts)

    async def old_client():
        client = aioxmpp.PresenceManagedClient(
            aioxmpp.JID.fromstr("carol@example.com/aio"),
            aioxmpp.make_security_layer("carol-pw", no_verify=True),
            override_peer=[("127.0.0.1", appliance.nginx.xmpp_port,
                            aioxmpp.connector.STARTTLSConnector())])
        async with client.connected(presence=aioxmpp.PresenceState(False)):
            bms = client.summon(aioxmpp.bookmarks.BookmarkClient)
            got = await bms.get_bookmarks()
            # and write one back through XEP-0049
            got.append(aioxmpp.bookmarks.Conference(
                "Ops", aioxmpp.JID.fromstr("ops@conference.example.com"),
                autojoin=True, nick="c"))
            await bms.set_bookmarks(got)
            return got

    got = asyncio.run(asyncio.wait_for(old_client(), 30))
    confs = {str(b.jid): b for b in got
             if isinstance(b, aioxmpp.bookmarks.Conference)}
    assert confs["lunch@conference.example.com"].name == "Lunch"
    assert confs["lunch@conference.example.com"].autojoin is True
    assert confs["lunch@conference.example.com"].nick == "cc"
    assert confs["dev@conference.example.com"].autojoin is False

    r = new.run(lambda: new.xmpp["xep_0060"].get_items(None, BOOKMARKS))
    assert {it["id"] for it in r["pubsub"]["items"]} == {
        "lunch@conference.example.com", "dev@conference.example.com",
        "ops@conference.example.com"}


STORAGE_BM = "storage:bookmarks"


def legacy_confs(storage):
    """{room JID: name} of a XEP-0048 <storage/> element."""
    return {c.get("jid"): c.get("name")
            for c in storage.findall("{%s}conference" % STORAGE_BM)}


def test_bookmarks_compat_pep_xep0223(appliance, pool):
    """XEP-0402 section 5.3 #compat-pep: a XEP-0048 client that keeps its
    bookmarks in the XEP-0223 node storage:bookmarks (slixmpp's xep_0048
    with method xep_0223) and a XEP-0402 client see the same bookmarks,
    and each hears of the other's changes, on different workers."""
    new = pep_client(pool, appliance, "erin", "b402", [BOOKMARKS])
    old = pep_client(pool, appliance, "erin", "b48", [STORAGE_BM],
                     not_pid=new.worker)

    info = new.run(lambda: new.xmpp["xep_0030"].get_info(
        jid="erin@example.com"))
    feats = set(info["disco_info"]["features"])
    assert BOOKMARKS + "#compat" in feats
    assert BOOKMARKS + "#compat-pep" in feats

    # nothing stored yet: the view's node does not exist (XEP-0060 6.5.9.11)
    assert error_of(old, lambda: old.xmpp["xep_0048"].get_bookmarks(
        method="xep_0223")) == ("cancel", ["item-not-found"])

    # the old client publishes its list over PEP
    bm = old.xmpp["xep_0048"].stanza.Bookmarks()
    bm.add_conference("plan@conference.example.com", "e", name="Plan",
                      autojoin=True)
    old.run(lambda: old.xmpp["xep_0048"].set_bookmarks(bm, method=
                                                       "xep_0223"))
    m = events(new, "item", BOOKMARKS)[0]
    assert m["pubsub_event"]["items"]["item"]["id"] == \
        "plan@conference.example.com"
    # its own +notify hears the node it wrote, as any PEP publisher does
    m = events(old, "item", STORAGE_BM)[0]
    assert legacy_confs(m["pubsub_event"]["items"]["item"]["payload"]) \
        == {"plan@conference.example.com": "Plan"}

    # the new client adds one: the old one is notified with the list
    opts = options(new, **{"pubsub#persist_items": "true",
                           "pubsub#max_items": "max",
                           "pubsub#send_last_published_item": "never",
                           "pubsub#access_model": "whitelist"})
    publish(new, BOOKMARKS, conference("x", "Lunch", False, "e"),
            id="lunch@conference.example.com", options=opts)
    m = events(old, "item", STORAGE_BM, count=2)[-1]
    assert m["pubsub_event"]["items"]["item"]["id"] == "current"
    assert legacy_confs(m["pubsub_event"]["items"]["item"]["payload"]) \
        == {"plan@conference.example.com": "Plan",
            "lunch@conference.example.com": "Lunch"}

    # and reads the same through the XEP-0223 node
    r = old.run(lambda: old.xmpp["xep_0048"].get_bookmarks(
        method="xep_0223"))
    item = r["pubsub"]["items"]["item"]
    assert item["id"] == "current"
    assert set(legacy_confs(item["payload"])) == {
        "plan@conference.example.com", "lunch@conference.example.com"}

    # a retraction through XEP-0402 reaches the old client too
    new.run(lambda: new.xmpp["xep_0060"].retract(
        None, BOOKMARKS, "plan@conference.example.com", notify=True))
    m = events(old, "item", STORAGE_BM, count=3)[-1]
    assert legacy_confs(m["pubsub_event"]["items"]["item"]["payload"]) \
        == {"lunch@conference.example.com": "Lunch"}

    # the view takes a publish of <storage/> and an items request only
    assert error_of(old, lambda: old.xmpp["xep_0060"].retract(
        None, STORAGE_BM, "current")) == ("cancel", [
            "feature-not-implemented", "text"])
    assert error_of(old, lambda: old.xmpp["xep_0060"].publish(
        None, STORAGE_BM, id="current",
        payload=ET.Element("{urn:x:other}storage"))) == (
            "modify", ["bad-request", "invalid-payload"])


def test_frozen_mariadb_does_not_stall_chat(appliance, pool):
    """PEP waits for MariaDB in a pool thread with a timer: a frozen
    server gives the publisher a clear error, and chat between others
    (on both workers) goes on meanwhile.  Runs last: it freezes the
    file's MariaDB."""
    c = pep_client(pool, appliance, "carol", "fz")
    e = pep_client(pool, appliance, "erin", "fz", not_pid=c.worker)
    r = raw_session(appliance, "frank", "frozen")
    pub = ("<iq type='set' id='%s'><pubsub xmlns='" + PUBSUB + "'><publish"
           " node='urn:x:frozen'><item id='1'><a xmlns='urn:x'/></item>"
           "</publish></pubsub></iq>")
    try:
        appliance.mariadb.pause()
        try:
            r.send(pub % "fz1")
            for i in range(10):
                c.message(e.jid, "on %d" % i)
                e.wait_message(lambda m: m["body"] == "on %d" % i, 5)
            out = r.expect(r"<iq[^>]*id='fz1'.*?</iq>", 15)
            assert "type='error'" in out and \
                "<internal-server-error" in out, out
        finally:
            appliance.mariadb.resume()
        # back: the same publish works again
        deadline = time.monotonic() + 30
        while True:
            r.send(pub % "fz2")
            out = r.expect(r"<iq[^>]*id='fz2'.*?(/>|</iq>)", 15)
            if "type='result'" in out:
                break
            assert time.monotonic() < deadline, out
            time.sleep(0.5)
    finally:
        r.close()


def test_last_item_sent_on_subscription_approval(appliance, pool):
    """XEP-0163 4.3.2 and 6.1: when the publisher approves a presence
    subscription, the new subscriber's available resources that want
    the node get its last item at once, on whatever worker they are,
    not at their next available presence."""
    node = "urn:example:activity"
    g = pep_client(pool, appliance, "erin", "pubact", [node])
    publish(g, node, item_xml(node, "old"), id="a1")
    publish(g, node, item_xml(node, "current"), id="a2")
    d = pep_client(pool, appliance, "bob", "actx", [node], not_pid=g.worker)
    d2 = pep_client(pool, appliance, "bob", "acty", [node], on_pid=g.worker)
    uninterested = pep_client(pool, appliance, "bob", "actz", ["urn:none"])
    assert no_events(d, node, settle=0.5) == []

    send_presence(d, to="erin@example.com", ptype="subscribe")
    g.wait_presence(lambda p: p["type"] == "subscribe")
    send_presence(g, to="bob@example.com", ptype="subscribed")
    for c in (d, d2):
        got = events(c, "item", node)
        time.sleep(0.5)
        got = [m for k, m in c.events if k == "item"]
        assert [m["pubsub_event"]["items"]["item"]["id"] for m in got] \
            == ["a2"]
        assert str(got[0]["from"]) == "erin@example.com"
    assert no_events(uninterested, node, settle=0.2) == []
