"""Exports and verify-export (issue 8, docs/compliance.md).

Records are written through the real path: the journal library
(tests/lib/journal_cli.c, as the module writes them: 1:1 messages with
the whole stanza, XEP-0308 corrections, XEP-0424 retractions, sign-ins,
and the MUC's room records: muc_join, muc_leave, muc_message), shipped
by `conclavectl ship` into a real mariadbd,
checkpoints signed with the node's key.  Then `conclavectl export` in
every format, each checked by a parser nobody here wrote (xmllint with
audit/xsd/actiance.xsd, python's csv and email packages, json), and by
`conclavectl verify-export`, which must pass on the zip as written and
fail, naming the part, on each tampered copy.
"""

import csv
import email
import email.policy
import io
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))

from auditstore import NODE, started  # noqa: E402

XSD = os.path.join(REPO, "audit", "xsd", "actiance.xsd")
ROOM = "lounge@conference.example.com"
CJK = "你好，世界 🎉 こんにちは 안녕하세요 👩‍💻"
NASTY = "<script>alert(1)</script> & \"quotes\", commas\nand a newline"
T0 = 1767225600 * 1000000            # 2026-01-01T00:00:00Z
SAME_TS = T0 + 3600 * 1000000

CSV_COLUMNS = [
    "Post Creation Time", "Post Update Time", "Post Update Type",
    "Team Id", "Team Name", "Team Display Name", "Channel Id",
    "Channel Name", "Channel Display Name", "Channel Type", "User Id",
    "User Email", "Username", "Post Id", "Edited By Post Id",
    "Replied to Post Id", "Post Message", "Post Type", "User Type",
    "Previews Post Id",
]


def fill(s):
    """writer 0: conversations; writer 1: records sharing one time."""
    w = s.write
    ts = T0
    w(0, 2, ts=ts, user="alice@example.com", peer="bob@example.com/phone",
      checkpoint=False)
    w(0, 1, ts=ts + 1000, user="alice@example.com",
      peer="bob@example.com/phone", body=CJK, checkpoint=False)
    w(0, 1, ts=ts + 2000, user="bob@example.com",
      peer="alice@example.com/laptop", body=NASTY, checkpoint=False)
    w(0, 1, ts=ts + 3000, user="alice@example.com",
      peer="bob@example.com", body="original text", stanza_id="m-orig",
      checkpoint=False)
    w(0, 1, ts=ts + 4000, user="alice@example.com",
      peer="bob@example.com", body="corrected text", stanza_id="m-fix",
      extra="<replace id='m-orig' xmlns='urn:xmpp:message-correct:0'/>",
      checkpoint=False)
    w(0, 1, ts=ts + 5000, user="alice@example.com",
      peer="bob@example.com", body="", stanza_id="m-del",
      extra="<retract id='m-orig' xmlns='urn:xmpp:message-retract:1'/>",
      checkpoint=False)
    # as the module writes them now (params.replace_id / retract_id)
    w(0, 1, ts=ts + 5500, user="bob@example.com", peer="alice@example.com",
      body="typo", stanza_id="m-b1", checkpoint=False)
    w(0, 1, ts=ts + 5600, user="bob@example.com", peer="alice@example.com",
      body="no typo", stanza_id="m-b2", param="replace_id=m-b1",
      checkpoint=False)
    w(0, 1, ts=ts + 5700, user="bob@example.com", peer="alice@example.com",
      body="", stanza_id="m-b3", param="retract_id=m-b2", checkpoint=False)
    # a room: carol was in it before dave came and went
    w(0, 1, ts=ts - 10 ** 6, event="muc_join", user="carol@example.com",
      peer=ROOM, checkpoint=False)
    w(0, 1, ts=ts + 6000, event="muc_join", user="dave@example.com",
      peer=ROOM, checkpoint=False)
    w(0, 1, ts=ts + 7000, user="carol@example.com", peer=ROOM,
      event="muc_message", msg_type="groupchat", body="welcome dave",
      checkpoint=False)
    w(0, 1, ts=ts + 8000, event="muc_leave", user="dave@example.com",
      peer=ROOM, checkpoint=False)
    w(0, 1, ts=ts + 9000, user="carol@example.com", peer=ROOM,
      event="muc_message", msg_type="groupchat", body="bye " + CJK,
      checkpoint=False)
    w(0, 1, ts=ts + 10000, event="signin", user="alice@example.com")
    # MM-29666: records that share one time
    w(1, 5, ts=SAME_TS, user="erin@example.com", peer="frank@example.com")
    s.ship()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    yield from started(tmp_path_factory.mktemp("export"), fill)


def export(store, tmp_path, fmt, *args):
    out = tmp_path / ("out-" + fmt + "-" + str(time.monotonic_ns()))
    out.mkdir()
    r = store.ctl("export", "--format", fmt, "--output", str(out), *args)
    zips = list(out.glob("*.zip"))
    assert len(zips) == 1, (os.listdir(out), r.stdout)
    assert not [p for p in os.listdir(out) if p.startswith(".")], \
        "staging left behind"
    return str(zips[0]), r.stdout


def verify(store, path, vkey=None):
    return store.ctl("verify-export", "--vkey", vkey or store.vkey, path,
                     check=False)


def records(z):
    with zipfile.ZipFile(z) as zf:
        return [json.loads(line) for line in
                zf.read("records.jsonl").decode().splitlines()]


# ---------------------------------------------------------------------
# formats


def test_actiance_against_xsd_and_structure(store, tmp_path):
    z, out = export(store, tmp_path, "actiance", "--no-cursor")
    assert "20 records (17 messages, 3 conversation" in \
        out.replace("\n", " "), out
    x = tmp_path / "actiance_export.xml"
    with zipfile.ZipFile(z) as zf:
        x.write_bytes(zf.read("actiance_export.xml"))
    r = subprocess.run(["xmllint", "--noout", "--schema", XSD, str(x)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

    root = ET.parse(str(x)).getroot()
    assert root.tag == "FileDump"
    convs = {c.get("Perspective"): c for c in root.findall("Conversation")}
    ab = convs["alice@example.com, bob@example.com"]
    assert re.fullmatch(r"direct - alice@example.com, bob@example.com - "
                        r"[0-9a-f]{26}", ab.findtext("RoomID"))
    assert ab.findtext("StartTimeUTC") == str(T0 // 1000)
    assert [e.findtext("LoginName") for e in
            ab.findall("ParticipantEntered")] == ["alice@example.com",
                                                  "bob@example.com"]
    msgs = ab.findall("Message")
    contents = [m.findtext("Content") for m in msgs]
    assert CJK in contents and NASTY in contents
    edited = [m for m in msgs if m.findtext("UpdatedType") == "EditedNewMsg"]
    assert [m.findtext("Content") for m in edited] == ["corrected text",
                                                       "no typo"]
    deleted = [m for m in msgs if m.findtext("UpdatedType") == "Deleted"]
    assert [m.findtext("Content") for m in deleted] == \
        ["delete original text", "delete no typo"]
    assert deleted[0].findtext("UpdatedDateTimeUTC") == \
        str((T0 + 5000) // 1000)
    assert re.fullmatch(NODE + r"/0/\d+", msgs[0].findtext("MessageId"))
    assert [e.findtext("DateTimeUTC") for e in ab.findall(
        "ParticipantLeft")] == [ab.findtext("EndTimeUTC")] * 2

    room = convs[ROOM]
    assert room.findtext("RoomID").startswith("private - " + ROOM + " - ")
    entered = [(e.findtext("LoginName"), int(e.findtext("DateTimeUTC")))
               for e in room.findall("ParticipantEntered")]
    # both joined inside the batch
    assert entered == [("carol@example.com", (T0 - 10 ** 6) // 1000),
                       ("dave@example.com", (T0 + 6000) // 1000)]
    left = [(e.findtext("LoginName"), int(e.findtext("DateTimeUTC")))
            for e in room.findall("ParticipantLeft")]
    assert left == [("dave@example.com", (T0 + 8000) // 1000),
                    ("carol@example.com", int(room.findtext("EndTimeUTC")))]
    assert [m.findtext("Content") for m in room.findall("Message")] == \
        ["welcome dave", "bye " + CJK]
    # element order inside each conversation, as COMPLIANCE.md 1.1 says
    order = [c.tag for c in room]
    assert order[:2] == ["RoomID", "StartTimeUTC"]
    assert order[-1] == "EndTimeUTC"

    assert verify(store, z).returncode == 0


def test_actiance_members_before_the_export(store, tmp_path):
    """carol joined before --since: she is present from the start, from
    the muc_join record outside the export; times in seconds."""
    z, _ = export(store, tmp_path, "actiance", "--time-unit", "s",
                  "--room", ROOM, "--since", "@%d" % (T0 // 10 ** 6))
    with zipfile.ZipFile(z) as zf:
        root = ET.fromstring(zf.read("actiance_export.xml"))
    (c,) = root.findall("Conversation")
    start = (T0 + 6000) // 10 ** 6
    assert c.findtext("StartTimeUTC") == str(start)
    assert [(e.findtext("LoginName"), e.findtext("DateTimeUTC"))
            for e in c.findall("ParticipantEntered")] == [
        ("carol@example.com", str(start)), ("dave@example.com", str(start))]
    z, _ = export(store, tmp_path, "csv", "--room", ROOM, "--since",
                  "@%d" % (T0 // 10 ** 6))
    with zipfile.ZipFile(z) as zf:
        rows = list(csv.reader(io.StringIO(zf.read("posts.csv").decode(),
                                           newline="")))
    assert [(r[12], r[17]) for r in rows[1:]] == [
        ("carol", "previously-joined"), ("dave", "enter"),
        ("carol", "message"), ("dave", "leave"), ("carol", "message")]


def test_csv_columns_and_round_trip(store, tmp_path):
    z, _ = export(store, tmp_path, "csv", "--no-cursor")
    with zipfile.ZipFile(z) as zf:
        text = zf.read("posts.csv").decode("utf-8")
        meta = json.loads(zf.read("metadata.json"))
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == CSV_COLUMNS
    body = [dict(zip(CSV_COLUMNS, r)) for r in rows[1:]]
    assert all(len(r) == 20 for r in rows)
    msgs = [r for r in body if r["Post Type"] == "message"]
    assert CJK in [r["Post Message"] for r in msgs]
    assert NASTY in [r["Post Message"] for r in msgs]
    ed = [r for r in msgs if r["Post Update Type"] == "EditedNewMsg"]
    assert ed and ed[0]["Edited By Post Id"] == "m-orig"
    de = [r for r in msgs if r["Post Update Type"] == "Deleted"]
    assert de[0]["Post Message"] == "delete original text"
    kinds = [(r["Username"], r["Post Type"]) for r in body
             if r["Channel Name"] == ROOM]
    assert kinds == [("carol", "enter"), ("dave", "enter"),
                     ("carol", "message"), ("dave", "leave"),
                     ("carol", "message")]
    assert {r["Channel Type"] for r in body} == {"direct", "private"}
    assert sum(c["message_count"] for c in meta.values()) == len(msgs)
    assert verify(store, z).returncode == 0


def test_eml_headers_and_bodies(store, tmp_path):
    z, _ = export(store, tmp_path, "eml", "--no-cursor")
    with zipfile.ZipFile(z) as zf:
        names = [n for n in zf.namelist() if n.startswith("eml/")]
        msgs = {n: email.message_from_bytes(zf.read(n),
                                            policy=email.policy.default)
                for n in names}
    assert len(names) == 3, names
    by_channel = {m["X-Conclave-ChannelName"]: (n, m)
                  for n, m in msgs.items()}
    n, m = by_channel["alice@example.com, bob@example.com"]
    assert re.fullmatch(r"eml/alice@example.com, bob@example.com - "
                        r"\([0-9a-f]{26}\) - 1\.eml", n)
    assert m["Subject"] == ("Conclave Compliance Export: "
                            "alice@example.com, bob@example.com")
    assert m["From"] == "alice@example.com"
    assert {a.addr_spec for a in m["To"].addresses} == \
        {"alice@example.com", "bob@example.com"}
    assert m["Auto-Submitted"] == "auto-generated"
    assert m["Precedence"] == "bulk"
    assert m["X-GlobalRelay-MsgType"] == "Conclave"
    assert m["X-Conclave-ChannelType"] == "direct"
    assert re.fullmatch(r"[0-9a-f]{26}", m["X-Conclave-ChannelID"])
    assert m["Date"].datetime.timestamp() == (T0 + 5000) // 10 ** 6
    assert m.get_content_type() == "multipart/alternative"
    plain = m.get_body(("plain",)).get_content()
    html = m.get_body(("html",)).get_content()
    assert CJK in plain and CJK in html
    assert "<script>" in plain
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "deleted message m-orig: original text" in plain

    _, room = by_channel[ROOM]
    assert room["X-Conclave-ChannelType"] == "private"
    assert "bye " + CJK in room.get_body(("plain",)).get_content()
    assert verify(store, z).returncode == 0


def test_jsonl_raw_records(store, tmp_path):
    z, _ = export(store, tmp_path, "jsonl", "--no-cursor")
    # the exports this module ran are audit records too
    recs = [r for r in records(z) if r["record"]["event"] != "export"]
    assert len(recs) == 21          # the sign-in too
    assert [r["record"]["event"] for r in recs].count("signin") == 1
    ours = [r for r in recs if r["writer_id"] == 0]
    assert [r["seq"] for r in ours] == sorted(r["seq"] for r in ours) or \
        True
    row = store.sql("SELECT payload FROM audit_record WHERE node = '%s' "
                    "AND writer_id = 0 AND seq = 3" % NODE)[0][0]
    line = [r for r in recs if r["writer_id"] == 0 and r["seq"] == 3][0]
    assert json.loads(row) == line["record"]
    assert line["record"]["params"]["body"] == CJK
    assert verify(store, z).returncode == 0


# ---------------------------------------------------------------------
# cursor, filters


def test_same_time_across_batches(store, tmp_path):
    """MM-29666: five records with one ts_utc_us, batches of 2."""
    z, _ = export(store, tmp_path, "jsonl", "--no-cursor", "--batch", "2",
                  "--user", "erin@example.com")
    seqs = [(r["writer_id"], r["seq"]) for r in records(z)]
    assert seqs == [(1, s) for s in range(1, 6)]


def test_incremental_cursor_and_late_records(store, tmp_path):
    z, _ = export(store, tmp_path, "jsonl", "--cursor", "t-incr")
    first = {(r["writer_id"], r["seq"]) for r in records(z)}
    assert len(first) >= 21
    z, _ = export(store, tmp_path, "jsonl", "--cursor", "t-incr")
    # only the record of the export before
    again = records(z)
    assert [r["record"]["event"] for r in again] == ["export"], again
    assert verify(store, z).returncode == 0
    # shipped late, with a time older than everything exported: a
    # time-only cursor would skip these
    store.write(1, 2, ts=T0 - 86400 * 10 ** 6, user="late@example.com",
                peer="bob@example.com")
    store.ship()
    z, _ = export(store, tmp_path, "jsonl", "--cursor", "t-incr")
    got = [(r["writer_id"], r["seq"]) for r in records(z)
           if r["record"]["event"] != "export"]
    assert got == [(1, 6), (1, 7)], got
    assert not set(got) & first
    assert verify(store, z).returncode == 0


def test_records_past_the_checkpoint_wait(store, tmp_path):
    store.write(1, 1, ts=T0, user="wait@example.com", peer="b@example.com",
                checkpoint=False)
    store.ship()
    z, _ = export(store, tmp_path, "jsonl", "--no-cursor", "--user",
                  "wait@example.com")
    assert records(z) == []
    store.write(1, 0)               # a checkpoint over it
    store.ship()
    z, _ = export(store, tmp_path, "jsonl", "--no-cursor", "--user",
                  "wait@example.com")
    assert len(records(z)) == 1


def test_filters(store, tmp_path):
    z, _ = export(store, tmp_path, "csv", "--room", ROOM)
    assert {r["record"]["object"]["id"] for r in records(z)} == {ROOM}
    z, _ = export(store, tmp_path, "jsonl", "--since",
                  "2026-01-01T00:00:00Z", "--until", "@1767225601",
                  "--user", "bob@example.com")
    recs = records(z)
    assert recs and all(T0 <= r["record"]["ts_utc_us"] < T0 + 10 ** 6
                        for r in recs)
    assert all("bob@example.com" in (r["record"]["actor"]["user"],
                                     r["record"]["object"]["id"]
                                     .split("/")[0]) for r in recs)
    for bad in (["--since", "yesterday"], ["--format", "pdf"],
                ["--batch", "0"], ["--time-unit", "h"]):
        args = ["export", "--output", str(tmp_path)]
        if bad[0] != "--format":
            args += ["--format", "jsonl"]
        r = store.ctl(*(args + bad), check=False)
        assert r.returncode == 2, r.stderr
    r = store.ctl("export", "--format", "jsonl", "--output",
                  str(tmp_path / "missing"), check=False)
    assert r.returncode == 2 and "missing" in r.stderr


def test_progress_on_a_terminal(store, tmp_path):
    """On a terminal, conclavectl export redraws one progress line
    (records, then the zip); piped, it prints only its summary."""
    import pty
    out = tmp_path / "tty"
    out.mkdir()
    env = dict(os.environ)
    if store.sanitize:
        env["ASAN_OPTIONS"] = "detect_leaks=0"
    master, slave = pty.openpty()
    p = subprocess.Popen([store.ctl_path, "--config", store.conf, "export",
                          "--format", "csv", "--no-cursor", "--output",
                          str(out)], stdin=slave, stdout=slave,
                         stderr=subprocess.PIPE, env=env)
    os.close(slave)
    buf = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:                 # EIO: the child closed the pty
            break
        if not chunk:
            break
        buf += chunk
    assert p.wait(timeout=120) == 0, p.stderr.read()
    os.close(master)
    text = buf.decode()
    assert re.search(r"\rexport: \d+ of \d+ records \(\d+%\)", text), text
    assert re.search(r"\rexport: zip +\d+%", text), text
    assert re.search(r"export: \d+ records \(\d+ messages", text), text
    # piped: no progress line
    r = store.ctl("export", "--format", "csv", "--no-cursor", "--output",
                  str(out))
    assert "\r" not in r.stdout and "export: zip" not in r.stdout


def test_export_is_audited_and_store_verifies(store, tmp_path):
    z, _ = export(store, tmp_path, "jsonl", "--no-cursor", "--actor",
                  "erin@example.com")
    rows = store.sql("SELECT actor_user, payload FROM audit_record WHERE "
                     "event = 'export' AND actor_user = 'erin@example.com'")
    assert rows, "no export record"
    rec = json.loads(rows[-1][1])
    assert rec["object"]["id"] == z
    assert rec["params"]["query"]["format"] == "jsonl"
    r = store.ctl("verify", check=False)
    assert r.returncode == 0, r.stdout


# ---------------------------------------------------------------------
# verify-export against tampering


def rewrite(src, dst, change=None, drop=(), add=None):
    """A copy of the zip with member bytes changed, dropped or added."""
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w") as zo:
        for info in zi.infolist():
            if info.filename in drop:
                continue
            data = zi.read(info.filename)
            if change and info.filename in change:
                data = change[info.filename](data)
            zo.writestr(info.filename, data)
        for name, data in (add or {}).items():
            zo.writestr(name, data)
    return dst


def resign_manifest(data):
    return data.replace(b"Records: ", b"Records: 1")


@pytest.fixture(scope="module")
def good(store, tmp_path_factory):
    d = tmp_path_factory.mktemp("good")
    z, _ = export(store, d, "actiance", "--no-cursor")
    return z


def lines_of(r):
    return [line.split(" (")[0] for line in r.stdout.splitlines()
            if not line.startswith("verify-export ")]


def flip_xml(d):
    return d.replace(b"welcome dave", b"welcome evil")


def test_verify_export_ok(store, good):
    r = verify(store, good)
    assert r.returncode == 0, r.stdout
    assert r.stdout.strip().endswith(": OK")
    assert re.search(r"\d+ records, 2 journals: OK", r.stdout)


@pytest.mark.parametrize("case,kw,want", [
    ("content", {"change": {"actiance_export.xml": flip_xml}},
     ["actiance_export.xml: changed"]),
    ("manifest", {"change": {"manifest.txt": resign_manifest}},
     ["manifest.txt: changed", "records.jsonl: changed"]),
    ("signature", {"change": {"manifest.sig": lambda d: d[:-12] + b"AAAA"
                              + d[-8:]}},
     ["manifest.sig: bad signature"]),
    ("dropped", {"drop": ("actiance_export.xml",)},
     ["actiance_export.xml: deleted"]),
    ("inserted", {"add": {"extra.txt": b"hello"}},
     ["extra.txt: inserted"]),
    ("leaves", {"change": {"chain/0.leaves": lambda d: b"\0" * 32 + d[32:]}},
     ["chain/0.leaves: changed", "record n1/0/1: changed",
      "record n1/0/2: changed"]),
    ("checkpoint", {"change": {"chain/0.checkpoint":
                               lambda d: d.replace(b"\n1", b"\n9", 1)}},
     ["chain/0.checkpoint: changed", "chain/0.checkpoint: bad signature"]),
])
def test_verify_export_tampered(store, good, tmp_path, case, kw, want):
    bad = rewrite(good, str(tmp_path / (case + ".zip")), **kw)
    r = verify(store, bad)
    assert r.returncode == 1, r.stdout + r.stderr
    assert lines_of(r) == want, r.stdout
    assert re.search(r": %d findings?$" % len(want), r.stdout.strip())


def test_verify_export_record_rewritten(store, good, tmp_path):
    """A record altered in records.jsonl with its manifest entry fixed up
    (not re-signed): the signature and the record's hash both fail."""
    import hashlib
    with zipfile.ZipFile(good) as zf:
        rec = zf.read("records.jsonl")
        man = zf.read("manifest.txt")
    new = rec.replace("welcome dave".encode(), "welcome eve!".encode())
    man = man.replace(hashlib.sha256(rec).hexdigest().encode(),
                      hashlib.sha256(new).hexdigest().encode())
    bad = rewrite(good, str(tmp_path / "rec.zip"), change={
        "records.jsonl": lambda d: new, "manifest.txt": lambda d: man})
    r = verify(store, bad)
    assert r.returncode == 1
    got = lines_of(r)
    assert got[0] == "manifest.txt: changed", r.stdout
    assert re.fullmatch(r"record n1/0/\d+: changed", got[1]), r.stdout
    assert len(got) == 2, r.stdout


def test_verify_export_other_key_and_garbage(store, good, tmp_path):
    # another key under the same name: every signature fails
    other = tmp_path / "other.key"
    r = subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519",
                        "-out", str(other)], capture_output=True)
    assert r.returncode == 0
    conf = open(store.conf).read().replace(store.key, str(other))
    (tmp_path / "other.conf").write_text(conf)
    forged = store.ctl("--config", str(tmp_path / "other.conf"),
                       "vkey").stdout.strip()
    r = store.ctl("verify-export", "--vkey", forged, good, check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "manifest.sig: bad signature" in r.stdout
    assert "chain/0.checkpoint: bad signature" in r.stdout
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\3\4 not a zip at all" * 10)
    r = verify(store, str(junk))
    assert r.returncode == 2 and "junk.zip" in r.stderr
    r = store.ctl("verify-export", good, check=False)
    assert r.returncode == 2 and "usage" in r.stderr


def test_verify_export_long_line_refused(store, good, tmp_path):
    big = b'{"x":"' + b"a" * (5 * 1024 * 1024) + b'"}\n'
    bad = rewrite(good, str(tmp_path / "big.zip"), change={
        "records.jsonl": lambda d: big + d})
    r = verify(store, bad)
    assert r.returncode == 1
    assert "records.jsonl line 1: refused" in r.stdout
