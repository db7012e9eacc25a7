"""vCards and avatars from the directory (issue 6, item 4).

XEP-0054: a vCard get to a user's bare JID (one's own or a colleague's)
is answered from the directory entry: FN, N, TITLE, ORG/ORGUNIT, EMAIL,
TEL and PHOTO (jpegPhoto, base64).  The directory owns those fields: a
set keeps them (and stores the others, test_avatar.py); one to another
user's JID is <forbidden/>.  XEP-0153: every
available presence carries the server's photo hash, whatever the client
put there.  Bad input: a garbage jpegPhoto and one over
conclave_ldap_photo_max are left out with a log line, never a crash; a
frozen directory makes a vCard get wait (then <remote-server-timeout/>)
while other users' chat goes on.

Real client: Debian's python3-slixmpp with its xep_0054 and xep_0153
plugins; raw WebSocket for what no real client sends.
"""

import base64
import hashlib
import os
import subprocess
import time

import pytest

from chathelp import slix
from appliance import env_sanitize
from nginx import NGINX, Nginx
from rawws import RawWS
from slapd import user_dn

PHOTO_MAX = 64 * 1024

# a JPEG by its magic number (SOI + APP0 JFIF) and some payload
JPEG = (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01"
        b"\x00\x00" + os.urandom(3000) + b"\xff\xd9")
GARBAGE = b"this is not an image at all \x00\x01\x02" + os.urandom(500)
BIG_JPEG = b"\xff\xd8\xff\xe0" + os.urandom(PHOTO_MAX + 1000)

APPLIANCE_EXTRA_HTTP = """
    conclave_ldap_photo_max %d;
    conclave_ldap_vcard_cache_ttl 1s;
""" % PHOTO_MAX


def set_photo(app, uid, data):
    app.ldap.modify("dn: %s\nchangetype: modify\nreplace: jpegPhoto\n"
                    "jpegPhoto:: %s\n" % (user_dn(uid),
                                          base64.b64encode(data).decode()))


@pytest.fixture(scope="module")
def photos(appliance):
    set_photo(appliance, "alice", JPEG)
    set_photo(appliance, "carol", GARBAGE)
    set_photo(appliance, "dave", BIG_JPEG)
    return appliance


def client(pool, app, user, res, presence=True, **kw):
    c = slix(pool, app, user, res, presence=False, **kw)
    for plugin in ("xep_0054", "xep_0153"):
        c.send(lambda x, p=plugin: x.register_plugin(p))
    c.photos = []
    c.send(lambda x: x.add_event_handler("presence", lambda p: c.photos.append(
        (str(p["from"]), p.xml.findall(
            "{vcard-temp:x:update}x/{vcard-temp:x:update}photo")))))
    if presence:
        c.send(lambda x: x.send_presence())
    return c


def vcard(c, jid):
    """The <vCard/> element of the answer, or the error condition."""
    from slixmpp.exceptions import IqError
    try:
        iq = c.run(lambda: c.xmpp["xep_0054"].get_vcard(jid, timeout=20),
                   timeout=30)
    except IqError as e:
        return e.iq["error"]["condition"]
    return iq.xml.find("{vcard-temp}vCard")


def text(v, path):
    e = v.find("/".join("{vcard-temp}" + p for p in path.split("/")))
    return None if e is None else e.text


def wait_log(app, line, timeout=10):
    deadline = time.monotonic() + timeout
    while line not in app.nginx.error_log():
        assert time.monotonic() < deadline, "not logged: " + line
        time.sleep(0.1)


def test_own_vcard_from_the_directory(photos, pool):
    a = client(pool, photos, "alice", "vc")
    v = vcard(a, "alice@example.com")
    assert text(v, "FN") == "Alice Anderson"
    assert text(v, "N/GIVEN") == "Alice"
    assert text(v, "N/FAMILY") == "Anderson"
    assert text(v, "TITLE") == "Software Engineer"
    assert text(v, "ORG/ORGUNIT") == "100"      # departmentNumber
    assert text(v, "EMAIL/USERID") == "alice@example.com"
    assert text(v, "TEL/NUMBER") == "+1 555 0101"
    assert text(v, "JABBERID") == "alice@example.com"
    assert text(v, "PHOTO/TYPE") == "image/jpeg"
    assert base64.b64decode(text(v, "PHOTO/BINVAL")) == JPEG
    # slixmpp's own decoding agrees
    iq = a.run(lambda: a.xmpp["xep_0054"].get_vcard("alice@example.com"))
    assert iq["vcard_temp"]["PHOTO"]["BINVAL"] == JPEG


def test_colleague_vcard_and_unknown_user(photos, pool):
    b = client(pool, photos, "bob", "vc")
    v = vcard(b, "alice@example.com")
    assert text(v, "FN") == "Alice Anderson"
    assert text(v, "TITLE") == "Software Engineer"
    v = vcard(b, "carol@example.com")
    assert text(v, "FN") == "Carol Clark"
    assert vcard(b, "nobody@example.com") == "item-not-found"
    # an injection attempt through the JID is just a name nobody has
    assert vcard(b, "a*@example.com") in ("item-not-found", "jid-malformed")


def test_vcard_set_keeps_directory_fields(photos, pool):
    """A set stores the fields the directory does not map (NICKNAME
    here, test_avatar.py has the rest); FN stays the directory's."""
    from slixmpp.plugins.xep_0054 import VCardTemp
    a = client(pool, photos, "alice", "set")
    card = VCardTemp()
    card["FN"] = "Mallory"
    card["NICKNAME"] = "al"
    a.run(lambda: a.xmpp["xep_0054"].publish_vcard(card))
    # the directory still has the last word on its own fields
    v = vcard(a, "alice@example.com")
    assert text(v, "FN") == "Alice Anderson"
    assert text(v, "NICKNAME") == "al"

    ws = RawWS(photos.nginx.http_port)
    ws.login("bob", resource="raw", presence=False)
    ws.send("<iq xmlns='jabber:client' type='set' id='s1' "
            "to='alice@example.com'><vCard xmlns='vcard-temp'><FN>x</FN>"
            "</vCard></iq>")
    r = ws.expect(r"id='s1'")
    assert "type='error'" in r and "<forbidden" in r
    ws.close()


def photo_hash_of(c, frm, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for who, ph in list(c.photos):
            if who == frm and ph:
                return [p.text or "" for p in ph]
        time.sleep(0.05)
    raise AssertionError("no presence from %s with a photo: %r"
                         % (frm, c.photos))


def test_avatar_hash_in_presence(photos, pool):
    """XEP-0153: the server's hash, even over a client's own claim."""
    watcher = client(pool, photos, "alice", "watch")
    # the watcher is available once its own presence comes back: only
    # then does the liar's presence reach it (RFC 6121 4.2.2)
    photo_hash_of(watcher, watcher.jid)
    ws = RawWS(photos.nginx.http_port)
    ws.login("alice", resource="liar", presence=False)
    ws.send("<presence xmlns='jabber:client'><x xmlns='vcard-temp:x:update'>"
            "<photo>0000000000000000000000000000000000000000</photo></x>"
            "</presence>")
    assert photo_hash_of(watcher, "alice@example.com/liar") == [
        hashlib.sha1(JPEG).hexdigest()]
    ws.close()


def test_broken_and_oversized_photos_are_left_out(photos, pool):
    b = client(pool, photos, "bob", "bad")
    for uid, size in (("carol", len(GARBAGE)), ("dave", len(BIG_JPEG))):
        v = vcard(b, "%s@example.com" % uid)
        assert v is not None and v.tag == "{vcard-temp}vCard", uid
        assert v.find("{vcard-temp}PHOTO") is None, uid
        assert text(v, "FN"), uid
        wait_log(photos, 'photo of "%s" left out of the vCard: %d bytes'
                 % (uid, size))

    # their presence says "no photo": an empty <photo/> (XEP-0153 4.1)
    c2 = client(pool, photos, "carol", "q")
    c = client(pool, photos, "carol", "p")
    assert photo_hash_of(c2, c.jid) == [""]
    # and the session goes on
    c.message(b.jid, "still here")
    b.wait_message(lambda m: m["body"] == "still here")


def test_frozen_directory_does_not_stall_chat(photos, pool):
    a = client(pool, photos, "alice", "f")
    b = client(pool, photos, "bob", "f")
    time.sleep(1.2)                          # the 1 s cache has expired
    answers = []
    photos.ldap.pause()
    try:
        a.send(lambda x: x.wrap(_record(x, "erin@example.com", answers)))
        t0 = time.monotonic()
        b.message(a.jid, "during the freeze")
        a.wait_message(lambda m: m["body"] == "during the freeze")
        # delivered while the vCard is still waiting on the directory
        assert answers == [], answers
        deadline = t0 + 30
        while not answers and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        photos.ldap.resume()
    assert answers == ["remote-server-timeout"], answers
    assert text(vcard(a, "erin@example.com"), "FN")


async def _record(x, jid, answers):
    from slixmpp.exceptions import IqError
    try:
        await x["xep_0054"].get_vcard(jid, timeout=30)
        answers.append("result")
    except IqError as e:
        answers.append(e.iq["error"]["condition"])


@pytest.mark.parametrize("line, why", [
    ("conclave_ldap_vcard_attribute FOO bar;", 'unknown vCard field "FOO"'),
    ("conclave_ldap_vcard_attribute FN \"cn)(x\";",
     'invalid vCard attribute "cn)(x"'),
    ("conclave_ldap_photo_max 2m;", '"conclave_ldap_photo_max" must'),
])
def test_vcard_directives_are_checked(tmp_path, conclave_module, line, why):
    n = Nginx(str(tmp_path / "t"), conclave_module, sanitize=env_sanitize(),
              extra_http=line)
    n.render_conf()
    r = subprocess.run([NGINX, "-t", "-p", n.workdir + "/", "-c",
                        "conf/nginx.conf"], env=n.env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert why in r.stderr, r.stderr
