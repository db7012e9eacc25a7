"""An export of what real clients said (issue 8): alice and bob chat 1:1
and in a room through the module (slixmpp over TCP, two workers), the
module journals and ships the records and signs checkpoints, and
`conclavectl export` turns them into Actiance XML that the XSD accepts,
with the room's participants entering and leaving as they did, and that
`conclavectl verify-export` accepts.
"""

import os
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
import zipfile

from auditwait import wait_drained
from mucclient import MucClient

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
XSD = os.path.join(REPO, "audit", "xsd", "actiance.xsd")
MUC = "conference.example.com"
APPLIANCE_WORKERS = 2
# a checkpoint over every record: an export carries only signed records
APPLIANCE_EXTRA_HTTP = ("conclave_muc_domain %s;\n"
                        "    conclave_audit_checkpoint_records 1;" % MUC)
CJK = "会议纪要 ✅ 🚀"


def export(app, out, want, timeout=30.0):
    """Exports until the conversations hold `want` message bodies (the
    last checkpoint may still be on its way to MariaDB)."""
    deadline = time.monotonic() + timeout
    while True:
        d = out / str(time.monotonic_ns())
        d.mkdir()
        app.conclavectl("export", "--format", "actiance", "--output",
                        str(d), "--no-cursor")
        (z,) = list(d.glob("*.zip"))
        with zipfile.ZipFile(z) as zf:
            xml = zf.read("actiance_export.xml")
        root = ET.fromstring(xml)
        bodies = {m.findtext("Content") for m in root.iter("Message")}
        if want <= bodies or time.monotonic() > deadline:
            return str(z), xml, root
        time.sleep(0.5)


def test_live_conversations_export_and_verify(appliance, pool, tmp_path):
    app = appliance
    port = app.nginx.xmpp_port
    room = "x%s@%s" % (uuid.uuid4().hex[:10], MUC)

    a = MucClient(pool, "alice@example.com/desk", "alice-pw", port)
    b = MucClient(pool, "bob@example.com/desk", "bob-pw", port)
    a.join(room, "Alice")
    b.join(room, "Bob")
    a.say(room, CJK)
    b.wait_groupchat(lambda m: m["body"] == CJK)
    b.say(room, "<b>bold</b> & more")
    a.wait_groupchat(lambda m: m["body"] == "<b>bold</b> & more")
    b.leave(room, "Bob")
    a.wait_presence(lambda p: p["nick"] == "Bob"
                    and p["type"] == "unavailable")

    sa = pool.client("alice@example.com/phone", "alice-pw", port)
    sb = pool.client("bob@example.com/phone", "bob-pw", port)
    sa.message("bob@example.com/phone", "lunch? " + CJK)
    sb.wait_message(lambda m: m["body"] == "lunch? " + CJK)

    wait_drained(app)
    vkey = app.conclavectl("vkey").stdout.strip()
    z, xml, root = export(app, tmp_path, {CJK, "<b>bold</b> & more",
                                          "lunch? " + CJK})

    x = tmp_path / "a.xml"
    x.write_bytes(xml)
    r = subprocess.run(["xmllint", "--noout", "--schema", XSD, str(x)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

    convs = {c.get("Perspective"): c for c in root.findall("Conversation")}
    rc = convs[room]
    assert [e.findtext("LoginName") for e in
            rc.findall("ParticipantEntered")] == ["alice@example.com",
                                                  "bob@example.com"]
    assert [(m.findtext("LoginName"), m.findtext("Content"))
            for m in rc.findall("Message")] == [
        ("alice@example.com", CJK), ("bob@example.com",
                                     "<b>bold</b> & more")]
    left = [(e.findtext("LoginName"), e.findtext("DateTimeUTC"))
            for e in rc.findall("ParticipantLeft")]
    # bob left before the end; alice is still in the room at its end
    assert [u for u, _ in left] == ["bob@example.com", "alice@example.com"]
    assert left[1][1] == rc.findtext("EndTimeUTC")
    assert int(left[0][1]) >= int(rc.findall("Message")[-1]
                                  .findtext("DateTimeUTC"))

    direct = convs["alice@example.com, bob@example.com"]
    assert [m.findtext("Content") for m in direct.findall("Message")] == \
        ["lunch? " + CJK]

    r = app.conclavectl("verify-export", "--vkey", vkey, z, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith(": OK")
