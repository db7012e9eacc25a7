"""XEP-0084 avatars, XEP-0398 conversion and user-set vCard fields
(issue 6.4, docs/directory.md "vCards and avatars").

A directory photo is served as the user's XEP-0084 avatar (metadata id =
SHA-1 of the photo = the XEP-0153 hash of presence) and cannot be
overwritten; a user without one publishes their own, which becomes
their vCard's PHOTO and presence hash (and a vCard PHOTO becomes their
XEP-0084 avatar).  vCard fields the directory does not map are stored in
MariaDB and merged on every get; the directory's fields stay its own.

Real client: Debian's python3-slixmpp with its xep_0030, xep_0054,
xep_0060, xep_0084, xep_0153 and xep_0163 plugins.
"""

import base64
import hashlib
import os
import struct
import time

import pytest

from chathelp import slix
from slapd import user_dn

VCARD_MAX = 1024
APPLIANCE_EXTRA_HTTP = """
    conclave_vcard_max_size %d;
    conclave_ldap_vcard_cache_ttl 1s;
    conclave_db_timeout 2s;
""" % VCARD_MAX
APPLIANCE_LOG_LEVEL = "info"

PLUGINS = ("xep_0030", "xep_0004", "xep_0060", "xep_0163", "xep_0084",
           "xep_0054", "xep_0153")
META = "urn:xmpp:avatar:metadata"
DATA = "urn:xmpp:avatar:data"

# JFIF with a SOF0 of 40x30, then payload
JPEG = (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01"
        b"\x00\x00\xff\xc0\x00\x11\x08\x00\x1e\x00\x28\x03\x01\x22\x00"
        b"\x02\x11\x01\x03\x11\x01" + os.urandom(2000) + b"\xff\xd9")
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR" + struct.pack(">II", 64, 48)
       + b"\x08\x06\x00\x00\x00" + os.urandom(1500))
GIF = b"GIF89a" + struct.pack("<HH", 16, 12) + os.urandom(800)


def sha1(b):
    return hashlib.sha1(b).hexdigest()


@pytest.fixture(scope="module")
def app(appliance):
    appliance.ldap.modify(
        "dn: %s\nchangetype: modify\nreplace: jpegPhoto\njpegPhoto:: %s\n"
        % (user_dn("alice"), base64.b64encode(JPEG).decode()))
    return appliance


def client(pool, app, user, res, presence=True):
    c = slix(pool, app, user, res, presence=False, plugins=PLUGINS)
    c.photos = []
    c.send(lambda x: x.add_event_handler("presence", lambda p: c.photos.append(
        (str(p["from"]), p.xml.findall(
            "{vcard-temp:x:update}x/{vcard-temp:x:update}photo")))))
    if presence:
        c.send(lambda x: x.send_presence())
    return c


def iq_error(c, make):
    from slixmpp.exceptions import IqError
    try:
        c.run(make, timeout=30)
    except IqError as e:
        return e.iq["error"]["condition"], e.iq["error"]["text"]
    return None


def items(c, owner, node):
    iq = c.run(lambda: c.xmpp["xep_0060"].get_items(owner, node, timeout=20),
               timeout=30)
    return iq.xml.findall(".//{http://jabber.org/protocol/pubsub}item")


def vcard(c, jid):
    iq = c.run(lambda: c.xmpp["xep_0054"].get_vcard(jid, timeout=20),
               timeout=30)
    return iq.xml.find("{vcard-temp}vCard")


def text(v, path):
    e = v.find("/".join("{vcard-temp}" + p for p in path.split("/")))
    return None if e is None else e.text


def photo_of(c, frm, want, timeout=15):
    """Waits for a presence of frm whose photo hash is want."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for who, ph in list(c.photos):
            if who == frm and ph and [p.text or "" for p in ph] == [want]:
                return
        time.sleep(0.05)
    raise AssertionError("no presence from %s with photo %r: %r"
                         % (frm, want, c.photos))


def publish_avatar(c, img, mime, info_id=None):
    c.run(lambda: c.xmpp["xep_0084"].publish_avatar(img, timeout=20),
          timeout=30)
    c.run(lambda: c.xmpp["xep_0084"].publish_avatar_metadata(
        {"id": info_id or sha1(img), "type": mime, "bytes": len(img)},
        timeout=20), timeout=30)


def test_account_advertises_the_conversion(app, pool):
    b = client(pool, app, "bob", "disco", presence=False)
    info = b.run(lambda: b.xmpp["xep_0030"].get_info(
        jid="bob@example.com", timeout=20), timeout=30)
    assert "urn:xmpp:pep-vcard-conversion:0" in info["disco_info"]["features"]


def test_directory_photo_is_the_xep0084_avatar(app, pool):
    """Contacts read alice's metadata and data: the directory's photo,
    with the id that her presence carries (XEP-0153)."""
    b = client(pool, app, "bob", "read")
    meta = items(b, "alice@example.com", META)
    assert [i.get("id") for i in meta] == [sha1(JPEG)]
    info = meta[0].find("{%s}metadata/{%s}info" % (META, META))
    assert info.get("id") == sha1(JPEG)
    assert info.get("bytes") == str(len(JPEG))
    assert info.get("type") == "image/jpeg"
    assert (info.get("width"), info.get("height")) == ("40", "30")
    iq = b.run(lambda: b.xmpp["xep_0084"].retrieve_avatar(
        "alice@example.com", sha1(JPEG), timeout=20), timeout=30)
    data = iq.xml.find(".//{%s}data" % DATA)
    assert base64.b64decode(data.text) == JPEG
    # all items of the data node: the one photo
    assert [i.get("id") for i in items(b, "alice@example.com", DATA)] == [
        sha1(JPEG)]
    # her presence has the same hash as the avatar's id
    a = client(pool, app, "alice", "pres")
    photo_of(a, a.jid, sha1(JPEG))


def test_directory_photo_cannot_be_overwritten(app, pool):
    a = client(pool, app, "alice", "pub", presence=False)
    err = iq_error(a, lambda: a.xmpp["xep_0084"].publish_avatar(
        PNG, timeout=20))
    assert err and err[0] == "not-allowed", err
    assert "directory" in err[1]
    err = iq_error(a, lambda: a.xmpp["xep_0084"].publish_avatar_metadata(
        {"id": sha1(PNG), "type": "image/png", "bytes": len(PNG)},
        timeout=20))
    assert err and err[0] == "not-allowed", err
    # a vCard PHOTO of hers is not taken either
    from slixmpp.plugins.xep_0054 import VCardTemp
    card = VCardTemp()
    card["PHOTO"]["TYPE"] = "image/png"
    card["PHOTO"]["BINVAL"] = PNG
    a.run(lambda: a.xmpp["xep_0054"].publish_vcard(card, timeout=20))
    v = vcard(a, "alice@example.com")
    assert base64.b64decode(text(v, "PHOTO/BINVAL")) == JPEG
    assert [i.get("id") for i in items(a, "alice@example.com", META)] == [
        sha1(JPEG)]


def test_own_avatar_becomes_vcard_and_presence_hash(app, pool):
    """XEP-0398 3.1: bob has no directory photo; his XEP-0084 avatar is
    his vCard's PHOTO and the hash of his presence, also in sessions
    that sign in later (the hash is read before the bind result)."""
    watch = client(pool, app, "bob", "watch")
    photo_of(watch, watch.jid, "")
    b = client(pool, app, "bob", "pub")
    publish_avatar(b, PNG, "image/png")
    e = client(pool, app, "erin", "look", presence=False)
    v = vcard(e, "bob@example.com")
    assert text(v, "PHOTO/TYPE") == "image/png"
    assert base64.b64decode(text(v, "PHOTO/BINVAL")) == PNG
    assert text(v, "FN")                   # the directory's fields stay
    # the next presence of a running session carries the new hash
    b.send(lambda x: x.send_presence(pstatus="new avatar"))
    photo_of(watch, b.jid, sha1(PNG))
    # and so does the first presence of a new session (another worker
    # or not): the avatar hash is read at bind
    later = client(pool, app, "bob", "later")
    photo_of(watch, later.jid, sha1(PNG))
    # XEP-0084 4.6: empty metadata disables the avatar everywhere
    b.run(lambda: b.xmpp["xep_0084"].stop(timeout=20), timeout=30)
    assert vcard(e, "bob@example.com").find("{vcard-temp}PHOTO") is None
    b.send(lambda x: x.send_presence(pstatus="no avatar"))
    photo_of(watch, b.jid, "")


def test_metadata_must_name_published_data(app, pool):
    g = client(pool, app, "erin", "bad", presence=False)
    # data of one image, metadata claiming another
    g.run(lambda: g.xmpp["xep_0084"].publish_avatar(GIF, timeout=20))
    err = iq_error(g, lambda: g.xmpp["xep_0084"].publish_avatar_metadata(
        {"id": sha1(PNG), "type": "image/png", "bytes": len(PNG)},
        timeout=20))
    assert err and err[0] == "not-acceptable", err
    # an id that is no SHA-1
    err = iq_error(g, lambda: g.xmpp["xep_0084"].publish_avatar_metadata(
        {"id": "not-a-hash", "type": "image/gif", "bytes": 3}, timeout=20))
    assert err and err[0] == "not-acceptable", err
    # nothing was taken: no photo in her vCard
    assert vcard(g, "erin@example.com").find("{vcard-temp}PHOTO") is None


def test_vcard_photo_becomes_xep0084_avatar(app, pool):
    """XEP-0398 3.2: a vCard PHOTO of a user without a directory photo
    is published to both avatar nodes, with a notification."""
    from slixmpp.plugins.xep_0054 import VCardTemp
    f = client(pool, app, "frank", "vc")
    f.events = []
    f.send(lambda x: x["xep_0163"].add_interest(META))
    f.send(lambda x: x.add_event_handler(
        "avatar_metadata_publish", lambda m: f.events.append(m)))
    f.send(lambda x: x.send_presence())
    card = VCardTemp()
    card["NICKNAME"] = "frankie"
    card["PHOTO"]["TYPE"] = "image/gif"
    card["PHOTO"]["BINVAL"] = GIF
    f.run(lambda: f.xmpp["xep_0054"].publish_vcard(card, timeout=20))
    meta = items(f, "frank@example.com", META)
    assert [i.get("id") for i in meta] == [sha1(GIF)]
    info = meta[0].find("{%s}metadata/{%s}info" % (META, META))
    assert info.get("type") == "image/gif"
    assert (info.get("width"), info.get("height")) == ("16", "12")
    data = items(f, "frank@example.com", DATA)
    assert base64.b64decode(data[0].find("{%s}data" % DATA).text) == GIF
    deadline = time.monotonic() + 15
    while not f.events and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f.events, "no metadata notification"
    v = vcard(f, "frank@example.com")
    assert text(v, "NICKNAME") == "frankie"
    assert base64.b64decode(text(v, "PHOTO/BINVAL")) == GIF


def test_user_fields_are_stored_and_merged(app, pool):
    """Fields the directory does not map are the user's; the directory
    keeps its own (FN here), whatever a set says."""
    from slixmpp.plugins.xep_0054 import VCardTemp
    d = client(pool, app, "erin", "set", presence=False)
    card = VCardTemp()
    card["FN"] = "Mallory"
    card["NICKNAME"] = "dd"
    card["URL"] = "https://example.com/~erin"
    card["DESC"] = "likes <angle> & brackets"
    card["BDAY"] = "1990-01-02"
    d.run(lambda: d.xmpp["xep_0054"].publish_vcard(card, timeout=20))
    other = client(pool, app, "bob", "get", presence=False)
    time.sleep(1.2)                        # past the 1 s vCard cache
    for c in (d, other):
        v = vcard(c, "erin@example.com")
        assert text(v, "FN") and text(v, "FN") != "Mallory"
        assert text(v, "NICKNAME") == "dd"
        assert text(v, "URL") == "https://example.com/~erin"
        assert text(v, "DESC") == "likes <angle> & brackets"
        assert text(v, "BDAY") == "1990-01-02"
        assert text(v, "JABBERID") == "erin@example.com"
    # a set replaces the user's fields (XEP-0054 3.2)
    card = VCardTemp()
    card["URL"] = "https://example.com/erin2"
    d.run(lambda: d.xmpp["xep_0054"].publish_vcard(card, timeout=20))
    v = vcard(other, "erin@example.com")
    assert text(v, "URL") == "https://example.com/erin2"
    assert text(v, "NICKNAME") is None


def test_user_fields_have_a_size_limit(app, pool):
    from slixmpp.plugins.xep_0054 import VCardTemp
    c = client(pool, app, "carol", "big", presence=False)
    card = VCardTemp()
    card["NICKNAME"] = "cc"
    c.run(lambda: c.xmpp["xep_0054"].publish_vcard(card, timeout=20))
    card = VCardTemp()
    card["DESC"] = "x" * (VCARD_MAX + 1)
    err = iq_error(c, lambda: c.xmpp["xep_0054"].publish_vcard(
        card, timeout=20))
    assert err and err[0] == "not-acceptable", err
    assert "conclave_vcard_max_size" in err[1]
    v = vcard(c, "carol@example.com")
    assert text(v, "NICKNAME") == "cc" and text(v, "DESC") is None


def test_frozen_mariadb_delays_only_the_merge(app, pool):
    """The user's fields come from MariaDB in the db thread pool: while
    it is frozen a vCard get answers with the directory's fields after
    conclave_db_timeout, and chat goes on meanwhile."""
    a = client(pool, app, "alice", "fz")
    b = client(pool, app, "bob", "fz")
    got = []
    app.mariadb.pause()
    try:
        b.send(lambda x: x.wrap(_get(x, "dave@example.com", got)))
        a.message(b.jid, "during the freeze")
        b.wait_message(lambda m: m["body"] == "during the freeze")
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        app.mariadb.resume()
    assert got and got[0] is not None, got
    assert got[0].find("{vcard-temp}FN") is not None


async def _get(x, jid, got):
    iq = await x["xep_0054"].get_vcard(jid, timeout=30)
    got.append(iq.xml.find("{vcard-temp}vCard"))
