"""The MariaDB side of the audit pipeline: `conclavectl migrate`, `ship`
and `status` against a real mariadbd, with journals written by
tests/lib/journal_cli.c (caud_journal_append + sync, as the module does).

No nginx, no slapd.  One mariadbd serves the file; each test has its own
database, journal directory and nginx.conf, so tests do not see each
other's rows.  The outage test runs its own mariadbd, which it stops and
restarts.  A Python reader of the segment format checks what the C side
stored against the journal bytes themselves.

    /usr/bin/python3 -m pytest tests/integration/test_audit_ship.py
"""

import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(TOP, "tests", "lib"))

from auditstore import build_journal_cli  # noqa: E402
from mariadb import MariaDB  # noqa: E402

SANITIZE = os.environ.get("CONCLAVE_SANITIZE") == "1"
AUDIT = os.path.join(TOP, "audit", "src")
DOMAIN = "example.com"

# the schema's column widths in characters (001_audit.sql)
WIDTHS = {"event": 32, "status": 8, "actor_user": 255, "peer": 255,
          "actor_ip": 45, "session_id": 64, "transport": 16,
          "msg_type": 16, "stanza_id": 255, "body": None}
COLUMNS = list(WIDTHS)


# ---------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def ctl():
    """build/<variant>/conclavectl, brought up to date by make."""
    variant = "asan" if SANITIZE else "release"
    args = ["make", "-s", "ctl"] + (["SANITIZE=1"] if SANITIZE else [])
    r = subprocess.run(args, cwd=TOP, capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail("make ctl failed:\n" + r.stdout + r.stderr,
                    pytrace=False)
    return os.path.join(TOP, "build", variant, "conclavectl")


@pytest.fixture(scope="module")
def jcli(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("jcli") / "journal_cli")
    return build_journal_cli(out, sanitize=False)


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    m = MariaDB(str(tmp_path_factory.mktemp("mariadb")))
    m.start()
    yield m
    m.stop()


class Site:
    """One test's journal directory, nginx.conf and database."""

    def __init__(self, tmp, db, ctl, jcli, name, batch=1000, extra=""):
        self.tmp = str(tmp)
        self.db = db
        self.ctl = ctl
        self.jcli = jcli
        self.node = "node-" + name[:40]
        self.database = name[:60]
        self.dir = os.path.join(self.tmp, "audit")
        self.key = os.path.join(self.tmp, "audit.key")
        self.conf = os.path.join(self.tmp, "nginx.conf")
        os.makedirs(self.dir, exist_ok=True)
        with open(os.path.join(self.tmp, "db.secret"), "w") as f:
            f.write(db.password + "\n")
        self.create_database()
        with open(self.conf, "w") as f:
            f.write(
                "events { }\n"
                "http {\n"
                "    conclave_domain %s;\n"
                "    conclave_audit_dir %s;\n"
                "    conclave_audit_node %s;\n"
                "    conclave_audit_key %s;\n"
                "    conclave_audit_db_host 127.0.0.1;\n"
                "    conclave_audit_db_port %d;\n"
                "    conclave_audit_db_user %s;\n"
                "    conclave_audit_db_password_file db.secret;\n"
                "    conclave_audit_db_name %s;\n"
                "    conclave_audit_db_timeout 5s;\n"
                "    conclave_audit_ship_batch %d;\n"
                "%s"
                "}\n" % (DOMAIN, self.dir, self.node, self.key, db.port,
                         db.user, self.database, batch, extra))

    def create_database(self):
        d, u = self.database, self.db.user
        self.db.query(
            "CREATE DATABASE IF NOT EXISTS `%s` CHARACTER SET utf8mb4"
            " COLLATE utf8mb4_unicode_ci;\n"
            "GRANT ALL ON `%s`.* TO '%s'@'127.0.0.1', '%s'@'localhost';\n"
            % (d, d, u, u))

    def write(self, count, *opts, writer=1, dir=None):
        r = subprocess.run([self.jcli, dir or self.dir, str(writer),
                            str(count)] + [str(o) for o in opts],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        m = re.match(r"last_seq (\d+) head ([0-9a-f]{64})", r.stdout)
        assert m, r.stdout
        return int(m.group(1)), m.group(2)

    def run(self, *args, timeout=120):
        return subprocess.run([self.ctl, "--config", self.conf]
                              + list(args), capture_output=True, text=True,
                              timeout=timeout)

    def ok(self, *args):
        r = self.run(*args)
        assert r.returncode == 0, (r.stdout, r.stderr)
        return r.stdout

    def migrate(self):
        return self.ok("migrate", "--schema",
                       os.path.join(TOP, "audit", "schema"))

    def query(self, sql):
        return self.db.query(sql, database=self.database)

    def scalar(self, sql):
        rows = self.query(sql)
        return rows[0][0] if rows else None

    def shipped(self, writer=1):
        v = self.scalar("SELECT shipped_seq FROM audit_journal WHERE "
                        "node = '%s' AND writer_id = %d"
                        % (self.node, writer))
        return int(v) if v is not None else 0

    def count(self, writer=1):
        return int(self.scalar("SELECT COUNT(*) FROM audit_record WHERE "
                               "node = '%s' AND writer_id = %d"
                               % (self.node, writer)))

    def status(self):
        r = self.run("status", "--json")
        return r.returncode, json.loads(r.stdout), r.stderr


@pytest.fixture
def make_site(tmp_path, db, ctl, jcli, request):
    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())
    made = []

    def make(**kw):
        made.append(Site(tmp_path / ("s%d" % len(made)), db, ctl, jcli,
                         "%s_%d" % (name, len(made)), **kw))
        return made[-1]

    return make


@pytest.fixture
def site(make_site):
    return make_site()


# ---------------------------------------------------------------------
# the journal, read independently of the C code (caud_journal.c layout)


def read_journal(dir, writer=1):
    frames = []
    for path in sorted(glob.glob("%s/journal-%d-*.cj" % (dir, writer))):
        with open(path, "rb") as f:
            data = f.read()
        pos = 64
        while pos + 92 <= len(data):
            n, seq = struct.unpack_from("<IQ", data, pos + 4)
            if pos + 92 + n > len(data):
                break
            prev = data[pos + 24:pos + 56]
            entry = data[pos + 56:pos + 88]
            payload = data[pos + 88:pos + 88 + n]
            assert hashlib.sha256(b"\0" + payload + prev).digest() == entry
            frames.append({"seq": seq, "prev": prev, "entry": entry,
                           "payload": payload})
            pos += 92 + n
    return frames


def expected_columns(payload):
    """What the shipper must copy out of a record (caud.h)."""
    r = json.loads(payload)

    def s(obj, key):
        v = obj.get(key) if isinstance(obj, dict) else None
        return v if isinstance(v, str) else None

    a, o, p = r.get("actor"), r.get("object"), r.get("params")
    cols = {"event": s(r, "event"), "status": s(r, "status"),
            "actor_user": s(a, "user"), "peer": s(o, "id"),
            "actor_ip": s(a, "ip"), "session_id": s(a, "session_id"),
            "transport": s(a, "transport"), "msg_type": s(p, "type"),
            "stanza_id": s(p, "id"), "body": s(p, "body")}
    if cols["peer"] is not None:
        cols["peer"] = cols["peer"].split("/", 1)[0]
    for k, w in WIDTHS.items():
        if cols[k] is not None and w is not None:
            cols[k] = cols[k][:w]
    return cols, r["ts_utc_us"]


def stored_rows(site, writer=1):
    """Every row of writer, byte-exact (HEX), keyed by seq."""
    hexcols = ", ".join("HEX(%s)" % c for c in COLUMNS)
    rows = site.query(
        "SELECT seq, ts_utc_us, HEX(payload), HEX(prev_hash), "
        "HEX(entry_hash), %s FROM audit_record WHERE node = '%s' AND "
        "writer_id = %d ORDER BY seq" % (hexcols, site.node, writer))
    out = {}
    for r in rows:
        cols = {c: (bytes.fromhex(v).decode() if v is not None else None)
                for c, v in zip(COLUMNS, r[5:])}
        out[int(r[0])] = {"ts": int(r[1]), "payload": bytes.fromhex(r[2]),
                          "prev": bytes.fromhex(r[3]),
                          "entry": bytes.fromhex(r[4]), "cols": cols}
    return out


def check_rows(site, writer=1):
    """MariaDB holds exactly the journal, with the right columns."""
    frames = read_journal(site.dir, writer)
    rows = stored_rows(site, writer)
    assert sorted(rows) == [f["seq"] for f in frames]
    for f in frames:
        row = rows[f["seq"]]
        assert row["payload"] == f["payload"]
        assert row["prev"] == f["prev"] and row["entry"] == f["entry"]
        cols, ts = expected_columns(f["payload"])
        assert row["ts"] == ts
        assert row["cols"] == cols, f["seq"]
    if frames:
        assert site.shipped(writer) == frames[-1]["seq"]
        head = site.scalar("SELECT HEX(head_hash) FROM audit_journal WHERE "
                           "node = '%s' AND writer_id = %d"
                           % (site.node, writer))
        assert bytes.fromhex(head) == frames[-1]["entry"]
    return frames


# ---------------------------------------------------------------------
# migrate


def test_migrate_applies_once(site):
    files = sorted(f for f in os.listdir(os.path.join(TOP, "audit",
                                                      "schema"))
                   if re.match(r"^\d{3}_.*\.sql$", f))
    out = site.migrate()
    # every file once, in order
    applied = re.findall(r"^applied (\S+)$", out, re.M)
    assert applied == files, out
    assert "%d file%s applied" % (len(files), "" if len(files) == 1
                                  else "s") in out
    rows = site.query("SELECT version, name FROM schema_version "
                      "ORDER BY version + 0")
    assert rows == [(str(int(f[:3])), f) for f in files]
    tables = {r[0] for r in site.query("SHOW TABLES")}
    assert {"schema_version", "audit_journal", "audit_record",
            "audit_checkpoint"} <= tables
    # utf8mb4 throughout; the audit tables compare as utf8mb4_unicode_ci
    for t in tables:
        row = site.query("SELECT ENGINE, TABLE_COLLATION FROM "
                         "information_schema.TABLES WHERE TABLE_SCHEMA = "
                         "'%s' AND TABLE_NAME = '%s'" % (site.database, t))
        assert row[0][0] == "InnoDB" and row[0][1].startswith("utf8mb4_"), t
        if t.startswith("audit_") or t == "schema_version":
            assert row[0][1] == "utf8mb4_unicode_ci", t

    out = site.migrate()
    assert "0 files applied" in out and "applied 0" not in out
    assert site.query("SELECT COUNT(*) FROM schema_version") == \
        [(str(len(files)),)]


def test_migrate_order_and_bad_file(site, tmp_path):
    schema = tmp_path / "schema"
    schema.mkdir()
    # the base schema only: the real later files are not this test's
    with open(os.path.join(TOP, "audit", "schema", "001_audit.sql")) as src:
        (schema / "001_audit.sql").write_text(src.read())
    (schema / "010_extra.sql").write_text(
        "-- two statements; a ';' in a comment does not end one\n"
        "CREATE TABLE IF NOT EXISTS extra_a (x INT) ENGINE=InnoDB;\n"
        "CREATE TABLE IF NOT EXISTS extra_b (\n"
        "    y INT   -- ; not the end\n"
        ") ENGINE=InnoDB;\n")
    (schema / "002_second.sql").write_text(
        "CREATE TABLE IF NOT EXISTS second_t (z INT) ENGINE=InnoDB;\n")
    (schema / "README").write_text("not a schema file\n")
    out = site.ok("migrate", "--schema", str(schema))
    assert out.splitlines()[:3] == ["applied 001_audit.sql",
                                    "applied 002_second.sql",
                                    "applied 010_extra.sql"]
    assert site.query("SELECT version FROM schema_version ORDER BY "
                      "version") == [("1",), ("2",), ("10",)]

    (schema / "011_broken.sql").write_text("CREATE TABLE nope (;\n")
    r = site.run("migrate", "--schema", str(schema))
    assert r.returncode == 1
    assert "011_broken.sql line 1" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert site.scalar("SELECT COUNT(*) FROM schema_version") == "3"


def mam_refs(site):
    """mam_ref as computed from each row, and as its index holds it."""
    rows = site.query("SELECT seq, mam_ref FROM audit_record IGNORE INDEX "
                      "(audit_record_mam_ref_ts) WHERE mam_ref IS NOT NULL "
                      "ORDER BY seq")
    index = site.query("SELECT mam_ref, actor_user, seq FROM audit_record "
                       "FORCE INDEX (audit_record_mam_ref_ts) WHERE "
                       "mam_ref IS NOT NULL ORDER BY mam_ref, actor_user, "
                       "ts_utc_us")
    return rows, index


@pytest.mark.parametrize("stopped_after", [0, 3, 5, 6])
def test_migrate_017_keeps_mam_ref(site, tmp_path, stopped_after):
    """017 swaps mam_ref for a cheaper expression of the same values, on
    a store shipped under 016, also when an earlier run of it stopped
    after statement stopped_after (0: no earlier run)."""
    schema = tmp_path / "schema"
    schema.mkdir()
    top = os.path.join(TOP, "audit", "schema")
    for f in sorted(os.listdir(top)):
        if re.match(r"^0(0\d|1[0-6])_.*\.sql$", f):
            shutil.copy(os.path.join(top, f), str(schema))
    site.ok("migrate", "--schema", str(schema))

    site.write(3)
    site.write(1, "--stanza-id", "m-fix", "--param", "replace_id=m-1",
               "--extra", "<replace id='m-1' "
               "xmlns='urn:xmpp:message-correct:0'/>")
    site.write(1, "--stanza-id", "m-gone", "--param", "retract_id=m-2")
    site.write(1, "--msg-type", "groupchat", "--event", "muc_message",
               "--peer", "room@conference.example.com", "--param",
               "replace_id=r-1")
    # the keys' names in a body: no key, no value
    site.write(1, "--body", 'see "replace_id" and "retract_id"')
    site.write(1, "--event", "signin")
    assert "8 records shipped" in site.ok("ship")
    before = mam_refs(site)
    assert [v for _, v in before[0]] == ["c:m-1", "r:m-2", "c:r-1"]

    sql = open(os.path.join(top, "017_mam.sql")).read()
    stmts = [t for t in re.split(r";\s*\n", sql)
             if re.sub(r"(?m)^--.*$", "", t).strip()]
    assert len(stmts) == 7
    for t in stmts[:stopped_after]:
        site.query(t + ";")

    shutil.copy(os.path.join(top, "017_mam.sql"), str(schema))
    assert site.ok("migrate", "--schema", str(schema)).splitlines()[0] == \
        "applied 017_mam.sql"
    assert mam_refs(site) == before

    cols = site.query("SELECT COLUMN_NAME, GENERATION_EXPRESSION FROM "
                      "information_schema.COLUMNS WHERE TABLE_SCHEMA = "
                      "DATABASE() AND TABLE_NAME = 'audit_record' AND "
                      "COLUMN_NAME LIKE 'mam_ref%'")
    assert [c for c, _ in cols] == ["mam_ref"]
    assert "locate" in cols[0][1].lower()
    idx = site.query("SELECT INDEX_NAME, COLUMN_NAME FROM "
                     "information_schema.STATISTICS WHERE TABLE_SCHEMA = "
                     "DATABASE() AND TABLE_NAME = 'audit_record' AND "
                     "INDEX_NAME LIKE 'audit_record_mam_ref%' ORDER BY "
                     "INDEX_NAME, SEQ_IN_INDEX")
    assert idx == [("audit_record_mam_ref_ts", "mam_ref"),
                   ("audit_record_mam_ref_ts", "actor_user"),
                   ("audit_record_mam_ref_ts", "ts_utc_us")]

    # rows shipped after it get their values the same way
    site.write(1, "--param", "replace_id=m-3")
    site.write(1)
    assert "2 records shipped" in site.ok("ship")
    assert [v for _, v in mam_refs(site)[0]] == \
        ["c:m-1", "r:m-2", "c:r-1", "c:m-3"]


# ---------------------------------------------------------------------
# ship


def test_ship_columns(site):
    site.migrate()
    site.write(5)
    site.write(2, "--event", "signin", "--status", "fail", "--user",
               "mallory@example.com")
    site.write(1, "--event", "signin", "--user", "alice@example.com")
    site.write(1, "--event", "session_end")
    site.write(1, "--peer", "carol@example.com/a/b", "--body", "")
    out = site.ok("ship")
    assert "journal 1: 10 records shipped, shipped_seq 10" in out
    frames = check_rows(site)
    assert len(frames) == 10
    rows = stored_rows(site)
    assert rows[6]["cols"]["event"] == "signin"
    assert rows[6]["cols"]["status"] == "fail"
    assert rows[6]["cols"]["actor_user"] == "mallory@example.com"
    assert rows[6]["cols"]["peer"] is None
    assert rows[6]["cols"]["body"] is None
    assert rows[1]["cols"]["peer"] == "bob@example.com"
    assert rows[1]["cols"]["msg_type"] == "chat"
    assert rows[1]["cols"]["stanza_id"] == "m-1"
    assert rows[10]["cols"]["peer"] == "carol@example.com"
    assert rows[10]["cols"]["body"] == ""
    assert rows[1]["prev"] == b"\0" * 32


def test_utf8_round_trip_and_cut(site, tmp_path):
    site.migrate()
    bodies = ["😀🎉 emoji, 表情", "漢字かな交じり文、한국어",
              "quotes \" and \\ and\nnew lines\tand \x01 control",
              "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 " * 2000]
    for b in bodies:
        p = tmp_path / "body"
        p.write_bytes(b.encode())
        site.write(1, "--body-file", str(p))
    long_user = "😀" * 300 + "@example.com"
    site.write(1, "--user", long_user, "--peer",
               "é" * 300 + "@example.com/résource")
    site.ok("ship")
    frames = check_rows(site)
    rows = stored_rows(site)
    for i, b in enumerate(bodies, 1):
        assert rows[i]["cols"]["body"] == b
        assert json.loads(frames[i - 1]["payload"])["params"]["body"] == b
    assert rows[5]["cols"]["actor_user"] == "😀" * 255
    assert rows[5]["cols"]["peer"] == "é" * 255
    assert long_user in rows[5]["payload"].decode()
    # the database's own view: characters, not bytes
    assert site.scalar("SELECT CHAR_LENGTH(actor_user) FROM audit_record "
                       "WHERE seq = 5") == "255"


def test_ship_twice_and_resume(site):
    site.migrate()
    site.write(25)
    assert "25 records shipped" in site.ok("ship")
    assert "0 records shipped, shipped_seq 25" in site.ok("ship")
    assert site.count() == 25
    site.write(7)
    site.write(3, writer=2)
    out = site.ok("ship")
    assert "journal 1: 7 records shipped, shipped_seq 32" in out
    assert "journal 2: 3 records shipped, shipped_seq 3" in out
    check_rows(site, 1)
    check_rows(site, 2)

    # more journals than the shipper keeps readers open for
    for rnd in range(2):
        for w in range(1, 9):
            site.write(4, writer=w)
        out = site.ok("ship")
        assert out.count("4 records shipped") == 8, out
    for w in range(1, 9):
        check_rows(site, w)


def test_batches_and_killed_shipper(make_site):
    s = make_site(batch=50)
    s.migrate()
    n, _ = s.write(60000)
    p = subprocess.Popen([s.ctl, "--config", s.conf, "ship"],
                         stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while s.shipped() == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    shipped = s.shipped()
    assert 0 < shipped < n, "the shipper finished before it was killed"
    # whole batches only, and the rows are exactly shipped_seq's
    assert shipped % 50 == 0
    assert s.count() == shipped
    assert s.scalar("SELECT MAX(seq) FROM audit_record") == str(shipped)

    # a row in the way: plain INSERT fails, nothing moves, no skip
    s.query("INSERT INTO audit_record (node, writer_id, seq, ts_utc_us, "
            "payload, prev_hash, entry_hash) VALUES ('%s', 1, %d, 0, "
            "'x', REPEAT('a', 32), REPEAT('b', 32))"
            % (s.node, shipped + 1))
    r = s.run("ship")
    assert r.returncode == 1
    assert "Duplicate entry" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert s.shipped() == shipped and s.count() == shipped + 1
    s.query("DELETE FROM audit_record WHERE seq = %d" % (shipped + 1))

    out = s.ok("ship")
    assert "%d records shipped, shipped_seq %d" % (n - shipped, n) in out
    assert s.count() == n
    assert s.scalar("SELECT COUNT(DISTINCT seq) FROM audit_record") == str(n)
    check_rows(s)


def test_head_hash_disagreement_refused(site, tmp_path):
    site.migrate()
    site.write(10)
    site.ok("ship")

    # a different journal under the same writer id: the record MariaDB
    # has as its head is not the one in this journal
    other = str(tmp_path / "other")
    os.makedirs(other)
    site.write(20, "--body", "another history", dir=other)
    head = site.scalar("SELECT HEX(head_hash) FROM audit_journal")
    conf = open(site.conf).read().replace(site.dir, other)
    with open(site.conf, "w") as f:
        f.write(conf)
    r = site.run("ship")
    assert r.returncode == 1
    assert "disagree" in r.stderr and head.lower() in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert site.count() == 10 and site.shipped() == 10

    # the journal cut below shipped_seq is refused too
    short = str(tmp_path / "short")
    os.makedirs(short)
    site.write(5, dir=short)
    with open(site.conf, "w") as f:
        f.write(conf.replace(other, short))
    r = site.run("ship")
    assert r.returncode == 1 and "ends before seq 10" in r.stderr


def test_prev_hash_checked_after_retention(site):
    """With the segment of shipped_seq gone (retention), the first new
    record's prev_hash is compared with head_hash."""
    site.migrate()
    site.write(9, "--segment-size", 2000)
    site.ok("ship")
    site.write(6, "--segment-size", 2000)
    segs = sorted(glob.glob(site.dir + "/journal-1-*.cj"))
    firsts = [int(s.rsplit("-", 1)[1][:-3]) for s in segs]
    assert 10 in firsts, firsts
    for s, first in zip(segs, firsts):
        if first < 10:
            os.unlink(s)

    # a forged head: the next record does not link to it
    good = site.scalar("SELECT HEX(head_hash) FROM audit_journal")
    site.query("UPDATE audit_journal SET head_hash = REPEAT('z', 32)")
    r = site.run("ship")
    assert r.returncode == 1
    assert "prev_hash" in r.stderr and "7a" * 32 in r.stderr
    assert site.count() == 9

    site.query("UPDATE audit_journal SET head_hash = UNHEX('%s')" % good)
    assert "6 records shipped, shipped_seq 15" in site.ok("ship")
    assert site.count() == 15


def test_checkpoints_shipped(site):
    site.migrate()
    site.ok("keygen")
    prefix = "%s/audit/%s" % (DOMAIN, site.node)
    site.write(10, "--checkpoint", site.key, prefix)
    site.write(5, "--checkpoint", site.key, prefix)
    site.ok("ship")
    rows = site.query("SELECT size, HEX(root), HEX(note) FROM "
                      "audit_checkpoint ORDER BY size")
    assert [r[0] for r in rows] == ["10", "15"]
    frames = read_journal(site.dir)
    for size, root, note in rows:
        path = os.path.join(site.dir, "checkpoint-1-%020d.note" % int(size))
        with open(path, "rb") as f:
            assert bytes.fromhex(note) == f.read()
        assert bytes.fromhex(root) == frames[int(size) - 1]["entry"]
    assert "0 records shipped" in site.ok("ship")
    assert site.scalar("SELECT COUNT(*) FROM audit_checkpoint") == "2"

    r = site.run("verify")
    assert r.returncode == 0, r.stdout + r.stderr
    site.query("UPDATE audit_record SET body = 'rewritten' WHERE seq = 3")
    r = site.run("verify")
    assert r.returncode == 1 and "seq 3" in r.stdout, r.stdout
    assert site.run("verify", "--journals-only").returncode == 0
    assert site.run("verify", "--db-only").returncode == 1


# ---------------------------------------------------------------------
# status, outage


def test_status_backlog(site):
    site.migrate()
    ts = int(time.time() * 1e6) - 100 * 1000000
    site.write(40, "--ts", ts)
    rc, st, _ = site.status()
    assert rc == 0 and st["db"]["ok"] is True
    (j,) = st["journals"]
    frames = read_journal(site.dir)
    assert j["writer_id"] == 1 and j["last_seq"] == 40
    assert j["shipped_seq"] == 0 and j["backlog_records"] == 40
    assert j["backlog_bytes"] == sum(len(f["payload"]) + 92 for f in frames)
    assert 100 <= j["lag_seconds"] < 200
    assert j["live"] is False

    site.ok("ship")
    rc, st, _ = site.status()
    (j,) = st["journals"]
    assert (j["shipped_seq"], j["backlog_records"], j["backlog_bytes"],
            j["lag_seconds"]) == (40, 0, 0, 0)

    # a live writer holds the lock: status says so, ship leaves it alone
    site.write(2)
    with open(os.path.join(site.dir, "journal-1.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rc, st, _ = site.status()
        assert st["journals"][0]["live"] is True
        assert "live writer" in site.ok("ship")
        assert site.shipped() == 40
        assert "2 records shipped" in site.ok("ship", "--all")
    text = site.ok("status")
    assert re.search(r"^1 +42 +42 +0 +0 +0\.0 +no ", text, re.M), text


def test_mariadb_down_then_drains(tmp_path, ctl, jcli):
    db = MariaDB(str(tmp_path / "mariadb"))
    db.start()
    try:
        site = Site(tmp_path / "site", db, ctl, jcli, "outage")
        site.migrate()
        site.write(30)
        site.ok("ship")
        site.write(20)
        before = read_journal(site.dir)
        db.stop()

        r = site.run("ship")
        assert r.returncode == 2
        assert len(r.stderr.strip().splitlines()) == 1
        assert "127.0.0.1:%d" % db.port in r.stderr
        assert "Can't connect" in r.stderr, r.stderr
        rc, st, err = site.status()
        assert rc == 2 and st["db"]["ok"] is False
        assert st["journals"][0]["last_seq"] == 50
        assert st["journals"][0]["backlog_records"] is None
        assert read_journal(site.dir) == before

        db.start()
        assert "20 records shipped, shipped_seq 50" in site.ok("ship")
        check_rows(site)
    finally:
        db.stop()


def test_mariadb_killed_mid_ship(tmp_path, ctl, jcli):
    """SIGKILL mariadbd while batches commit: InnoDB recovery keeps
    whole batches with their shipped_seq, and the next ship drains."""
    db = MariaDB(str(tmp_path / "mariadb"))
    db.start()
    try:
        site = Site(tmp_path / "site", db, ctl, jcli, "killed", batch=50)
        site.migrate()
        n, _ = site.write(60000)
        p = subprocess.Popen([site.ctl, "--config", site.conf, "ship"],
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while site.shipped() == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        db.proc.kill()
        db.proc.wait()
        err = p.communicate(timeout=60)[1]
        assert p.returncode == 1, err
        assert len(err.strip().splitlines()) == 1, err
        assert "journal 1: " in err

        db.start()
        shipped = site.shipped()
        assert 0 < shipped < n
        assert shipped % 50 == 0 and site.count() == shipped
        out = site.ok("ship")
        assert "shipped_seq %d" % n in out
        check_rows(site)
    finally:
        db.stop()


# ---------------------------------------------------------------------
# the CLI and its configuration


def test_config_includes_quotes_and_errors(site, tmp_path):
    site.migrate()
    site.write(3)
    conf = tmp_path / "etc" / "nginx.conf"
    (tmp_path / "etc" / "conf.d").mkdir(parents=True)
    with open(os.path.join(site.tmp, "db.secret")) as f:
        (tmp_path / "etc" / "secret").write_text(f.read())
    (tmp_path / "etc" / "conf.d" / "10-db.conf").write_text(
        "conclave_audit_db_port %d;\n"
        "conclave_audit_db_name \"%s\";\n"
        "conclave_audit_db_password_file secret;   # relative\n"
        % (site.db.port, site.database))
    (tmp_path / "etc" / "conf.d" / "20-audit.conf").write_text(
        "conclave_audit_dir '%s';\n"
        "conclave_audit_node \"%s\";\n" % (site.dir, site.node))
    conf.write_text(
        "# a comment with { and ; in it\n"
        "events { worker_connections 10; }\n"
        "http {\n"
        "    include conf.d/*.conf;\n"
        "    include conf.d/none-*.conf;\n"
        "    log_format x '$remote_addr \"quoted\" ; { }' a b c d e f g h;\n"
        "    conclave_domain \"exa\\\"mple\";\n"
        "    conclave_audit_key keys/audit.key;\n"
        "    server {\n"
        "        conclave_audit_node not-this-one;\n"
        "        location / { return 200 \"}{;\"; }\n"
        "    }\n"
        "}\n")
    (tmp_path / "etc" / "keys").mkdir()

    def run(*args):
        return subprocess.run([site.ctl, "--config", str(conf)] + list(args),
                              capture_output=True, text=True, timeout=60)

    r = run("status", "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["node"] == site.node and st["dir"] == site.dir
    assert st["journals"][0]["backlog_records"] == 3
    r = run("keygen")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith('exa"mple/audit/%s+' % site.node)
    assert os.stat(tmp_path / "etc" / "keys" / "audit.key").st_mode \
        & 0o777 == 0o600
    r2 = run("keygen")
    assert r2.stdout == r.stdout and "kept" in r2.stderr
    assert run("vkey").stdout == r.stdout

    bad = {
        "http { }\n": "no \"conclave_domain\"",
        "http { conclave_domain a; }}\n": "nginx.conf:1: unexpected \"}\"",
        "http {\n conclave_domain a;\n conclave_domain b;\n}\n":
            "nginx.conf:3: \"conclave_domain\" directive is duplicate",
        "http {\n conclave_domain a;\n conclave_audit_db_timeout 5x;\n}\n":
            "nginx.conf:3: \"conclave_audit_db_timeout\" directive invalid",
        "http { conclave_domain a; include missing.conf; }\n": "missing.conf",
        "http { conclave_domain \"a; }\n": "quoted string",
        "http { conclave_domain a;\n": "expecting \"}\"",
    }
    for text, msg in bad.items():
        conf.write_text(text)
        r = run("status")
        assert r.returncode == 2, text
        assert msg in r.stderr, (text, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1

    r = run("frobnicate")
    assert r.returncode == 2 and "unknown command" in r.stderr
    r = subprocess.run([site.ctl, "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for word in ("migrate", "ship", "status", "keygen", "vkey", "verify",
                 "--config", "--json", "--schema", "--journals-only",
                 "--db-only", "--vkey"):
        assert word in r.stdout
