"""`verify` against a real MariaDB (issue 3, COMPLIANCE.md 3 and 7.2).

Journals are written with the library (tests/lib/journal_cli.c: writer 0
300 records with signed checkpoints at 100, 200 and 300; writer 1 50
records, checkpoint 50), shipped into MariaDB by `conclavectl ship` (the
real shipper), and then tampered with in SQL the way a DBA could.  Every
case must make `conclavectl verify` exit 1 and name exactly the seq(s)
and what happened to them; the pristine store must exit 0.  Each case
runs with the MariaDB store alone (--db-only) and with the journal
directory as a second witness.

No nginx is involved: conclavectl reads a small nginx.conf holding the
conclave_audit_* directives; one mariadbd for the whole file, its tables
restored before every test.  With CONCLAVE_SANITIZE=1 build/asan's
conclavectl and an ASan+UBSan journal_cli are used, and any sanitizer
report fails the test.
"""

import os
import re
import subprocess
import threading
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))

from auditstore import (CTL, SAN_REPORT, SANITIZE,  # noqa: E402
                        build_journal_cli)
from mariadb import MariaDB  # noqa: E402

NODE = "n1"
DOMAIN = "verify.example.com"
PREFIX = DOMAIN + "/audit/" + NODE
TABLES = ("audit_journal", "audit_record", "audit_checkpoint")
# the stored columns: 004_mam.sql adds a generated one, which an INSERT
# may not name
RECORD_COLS = ("node, writer_id, seq, ts_utc_us, event, status, actor_user,"
               " peer, actor_ip, session_id, transport, msg_type, stanza_id,"
               " body, payload, prev_hash, entry_hash")


def cols(t):
    return RECORD_COLS if t == "audit_record" else "*"


def _mariadb_flags(kind):
    return subprocess.run(["mariadb_config", kind], capture_output=True,
                          text=True, check=True).stdout.split()


CONF = """events {}
http {
    conclave_domain %(domain)s;
    conclave_audit_dir %(dir)s;
    conclave_audit_node %(node)s;
    conclave_audit_key %(key)s;
    %(db)s
    conclave_audit_db_user conclave;
    conclave_audit_db_password conclave-pw;
    conclave_audit_db_name conclave;
    conclave_audit_db_timeout 5s;
}
"""


class Store:
    """A journal directory, its key, and a MariaDB holding its rows."""

    def __init__(self, base):
        if not os.path.isfile(CTL):
            pytest.fail("%s is missing: run `make build%s` first" % (
                CTL, " SANITIZE=1" if SANITIZE else ""), pytrace=False)
        self.base = str(base)
        self.dir = os.path.join(self.base, "journal")
        self.key = os.path.join(self.base, "audit.key")
        self.conf = os.path.join(self.base, "nginx.conf")
        os.makedirs(self.dir)
        self.jcli = build_journal_cli(os.path.join(self.base,
                                                    "journal_cli"))
        self.db = MariaDB(os.path.join(self.base, "mariadb"))

    def write_conf(self, path, db):
        with open(path, "w") as f:
            f.write(CONF % {"domain": DOMAIN, "dir": self.dir, "node": NODE,
                            "key": self.key, "db": db})

    def start(self):
        self.db.start()
        self.write_conf(self.conf, "conclave_audit_db_socket %s;"
                        % self.db.socket)
        self.vkey = self.ctl("keygen").stdout.strip()
        self.ctl("migrate", "--schema", os.path.join(REPO, "audit",
                                                     "schema"))
        for _ in range(3):
            self.write(0, 100, checkpoint=True)
        self.write(1, 50, checkpoint=True)
        out = self.ctl("ship").stdout
        assert "shipped_seq 300" in out and "shipped_seq 50" in out, out
        for t in TABLES:
            self.sql("CREATE TABLE pristine_%s AS SELECT %s FROM %s"
                     % (t, cols(t), t))

    def stop(self):
        self.db.stop()

    def ctl(self, *args, check=True, conf=None):
        env = dict(os.environ)
        if SANITIZE:
            env["ASAN_OPTIONS"] = "detect_leaks=0"
        cmd = [CTL, "--config", conf or self.conf] + list(args)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                           env=env)
        if SAN_REPORT.search(r.stderr):
            pytest.fail("sanitizer report from %s:\n%s" % (
                " ".join(cmd), r.stderr), pytrace=False)
        if check and r.returncode != 0:
            pytest.fail("%s: exit %d\n%s%s" % (
                " ".join(cmd), r.returncode, r.stdout, r.stderr),
                pytrace=False)
        return r

    def write(self, writer, n, checkpoint=False):
        args = [self.jcli, self.dir, str(writer), str(n)]
        if checkpoint:
            args += ["--checkpoint", self.key, PREFIX]
        subprocess.run(args, check=True, capture_output=True, timeout=60)

    def sql(self, sql):
        return self.db.query(sql, database=self.db.database)

    def restore(self):
        for t in TABLES:
            self.sql("DELETE FROM %s; INSERT INTO %s %s SELECT * FROM "
                     "pristine_%s" % (t, t, "(%s)" % RECORD_COLS
                                      if t == "audit_record" else "", t))

    def verify(self, journals=True, db=True, vkey=None):
        args = ["verify"]
        if not journals:
            args.append("--db-only")
        if not db:
            args.append("--journals-only")
        if vkey:
            args += ["--vkey", vkey]
        return self.ctl(*args, check=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = Store(tmp_path_factory.mktemp("verify"))
    try:
        s.start()
    except Exception:
        s.stop()
        raise
    yield s
    s.stop()


@pytest.fixture
def st(store):
    """The store, its tables as the shipper left them."""
    store.restore()
    yield store
    store.restore()


def findings(out):
    """The finding lines without their detail: 'journal n1/0 seq 42:
    deleted'."""
    return [line.split(" (")[0] for line in out.splitlines()
            if line.startswith("journal ")]


def expect(st, want, witness_want=None):
    """verify exits 1 and reports exactly `want`, with MariaDB alone and
    with the journal as witness (witness_want if it differs)."""
    for journals, w in ((False, want), (True, witness_want or want)):
        r = st.verify(journals=journals)
        assert r.returncode == 1, r.stdout + r.stderr
        assert findings(r.stdout) == w, r.stdout
        n = re.search(r"^verify: .*: (\d+) findings$", r.stdout, re.M)
        assert n and int(n.group(1)) == len(w), r.stdout


def row_sql(writer, seq):
    return "node = '%s' AND writer_id = %d AND seq = %d" % (NODE, writer,
                                                             seq)


# ---------------------------------------------------------------------


def test_clean_store_verifies(st):
    r = st.verify()
    assert r.returncode == 0, r.stdout + r.stderr
    assert findings(r.stdout) == []
    assert r.stdout.splitlines()[-1] == \
        "verify: 4 journals, 700 records, 8 checkpoints: OK"
    assert "mariadb node n1: 2 journals, 350 records, 4 checkpoints" \
        in r.stdout

    for journals, db in ((True, False), (False, True)):
        r = st.verify(journals=journals, db=db)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.endswith(": OK\n"), r.stdout


def test_deleted_row(st):
    st.sql("DELETE FROM audit_record WHERE " + row_sql(0, 42))
    expect(st, ["journal n1/0 seq 42: deleted"])


def test_deleted_rows_in_two_journals(st):
    st.sql("DELETE FROM audit_record WHERE writer_id = 0 AND seq BETWEEN "
           "150 AND 152")
    st.sql("DELETE FROM audit_record WHERE " + row_sql(1, 1))
    expect(st, ["journal n1/0 seqs 150..152: deleted",
                "journal n1/1 seq 1: deleted"])


def _swap(st, a, b):
    """Moves record a's bytes to row b and back: payload and hashes."""
    st.sql("UPDATE audit_record r JOIN pristine_audit_record p ON "
           "p.node = r.node AND p.writer_id = r.writer_id AND p.seq = %d "
           "SET r.payload = p.payload, r.prev_hash = p.prev_hash, "
           "r.entry_hash = p.entry_hash WHERE r.node = '%s' AND "
           "r.writer_id = 0 AND r.seq = %d" % (b, NODE, a))
    st.sql("UPDATE audit_record r JOIN pristine_audit_record p ON "
           "p.node = r.node AND p.writer_id = r.writer_id AND p.seq = %d "
           "SET r.payload = p.payload, r.prev_hash = p.prev_hash, "
           "r.entry_hash = p.entry_hash WHERE r.node = '%s' AND "
           "r.writer_id = 0 AND r.seq = %d" % (a, NODE, b))


def test_reordered_rows(st):
    _swap(st, 10, 20)
    expect(st, ["journal n1/0 seq 10: reordered",
                "journal n1/0 seq 20: reordered"])
    r = st.verify(journals=False)
    assert "seq 10: reordered (mariadb: row holds record 20)" in r.stdout
    assert "seq 20: reordered (mariadb: row holds record 10)" in r.stdout


def test_adjacent_rows_swapped(st):
    _swap(st, 60, 61)
    expect(st, ["journal n1/0 seq 60: reordered",
                "journal n1/0 seq 61: reordered"])


def test_body_column_updated(st):
    st.sql("UPDATE audit_record SET body = 'nothing to see' WHERE " +
           row_sql(0, 33))
    expect(st, ["journal n1/0 seq 33: changed"])
    assert "column body differs from the payload" in st.verify().stdout


def test_other_columns_updated(st):
    st.sql("UPDATE audit_record SET actor_user = 'mallory@example.com' "
           "WHERE " + row_sql(0, 70))
    st.sql("UPDATE audit_record SET ts_utc_us = ts_utc_us + 1 WHERE " +
           row_sql(1, 7))
    expect(st, ["journal n1/0 seq 70: changed",
                "journal n1/1 seq 7: changed"])
    out = st.verify().stdout
    assert "column actor_user differs" in out
    assert "column ts_utc_us differs" in out


def test_payload_updated(st):
    st.sql("UPDATE audit_record SET payload = REPLACE(payload, 'hello', "
           "'HELLO') WHERE " + row_sql(0, 34))
    expect(st, ["journal n1/0 seq 34: changed"])
    assert "entry_hash does not match the payload" in \
        st.verify(journals=False).stdout


def test_payload_rewritten_and_rehashed(st):
    """A careful forger: payload, its copied column and entry_hash all
    consistent.  The next row's link names the original; the journal
    has the original bytes."""
    st.sql("UPDATE audit_record SET payload = REPLACE(payload, 'hello', "
           "'HELLO'), body = REPLACE(body, 'hello', 'HELLO') WHERE " +
           row_sql(0, 135))
    st.sql("UPDATE audit_record SET entry_hash = UNHEX(SHA2(CONCAT(0x00, "
           "payload, prev_hash), 256)) WHERE " + row_sql(0, 135))
    expect(st, ["journal n1/0 seq 135: changed"])
    assert "re-hashed" in st.verify(journals=False).stdout
    assert "differ from the journal" in st.verify().stdout


def test_last_row_rewritten_and_rehashed(st):
    """No successor to break: head_hash and checkpoint 300 catch it."""
    st.sql("UPDATE audit_record SET payload = REPLACE(payload, 'hello', "
           "'HELLO'), body = REPLACE(body, 'hello', 'HELLO') WHERE " +
           row_sql(0, 300))
    st.sql("UPDATE audit_record SET entry_hash = UNHEX(SHA2(CONCAT(0x00, "
           "payload, prev_hash), 256)) WHERE " + row_sql(0, 300))
    r = st.verify(journals=False)
    assert r.returncode == 1
    assert set(findings(r.stdout)) == {
        "journal n1/0 checkpoint 300: changed",
        "journal n1/0 seq 300: changed"}, r.stdout
    r = st.verify()
    assert findings(r.stdout) == ["journal n1/0 seq 300: changed"], r.stdout


def test_inserted_row_beyond(st):
    st.sql("INSERT INTO audit_record (" + RECORD_COLS + ") SELECT node,"
           " writer_id, 301, "
           "ts_utc_us, event, status, actor_user, peer, actor_ip, "
           "session_id, transport, msg_type, stanza_id, body, payload, "
           "prev_hash, entry_hash FROM pristine_audit_record WHERE " +
           row_sql(0, 300))
    expect(st, ["journal n1/0 seq 301: inserted"])


def test_forged_row_appended_with_shipped_seq(st):
    """A self-consistent row 51 linked to 50, shipped_seq and head_hash
    moved to it: past the last checkpoint only the journal can tell."""
    st.sql("INSERT INTO audit_record (" + RECORD_COLS + ") SELECT node,"
           " writer_id, 51, "
           "ts_utc_us, event, status, actor_user, peer, actor_ip, "
           "session_id, transport, msg_type, stanza_id, body, "
           "REPLACE(payload, '\"seq\":50', '\"seq\":51'), entry_hash, "
           "entry_hash FROM pristine_audit_record WHERE " + row_sql(1, 50))
    st.sql("UPDATE audit_record SET entry_hash = UNHEX(SHA2(CONCAT(0x00, "
           "payload, prev_hash), 256)) WHERE " + row_sql(1, 51))
    st.sql("UPDATE audit_journal SET shipped_seq = 51, head_hash = (SELECT "
           "entry_hash FROM audit_record WHERE %s) WHERE node = '%s' AND "
           "writer_id = 1" % (row_sql(1, 51), NODE))
    r = st.verify()
    assert r.returncode == 1, r.stdout
    assert findings(r.stdout) == ["journal n1/1 seq 51: inserted"], r.stdout
    assert "not in the journal, which ends at seq 50" in r.stdout


def test_last_rows_deleted(st):
    st.sql("DELETE FROM audit_record WHERE writer_id = 0 AND seq > 290")
    expect(st, ["journal n1/0 seqs 291..300: deleted"])


def test_last_rows_deleted_with_shipped_seq(st):
    """Rows, shipped_seq and head_hash cut back together: the signed
    checkpoint 300 still says there were 300."""
    st.sql("DELETE FROM audit_record WHERE writer_id = 0 AND seq > 250")
    st.sql("UPDATE audit_journal SET shipped_seq = 250, head_hash = (SELECT "
           "entry_hash FROM pristine_audit_record WHERE %s) WHERE node = "
           "'%s' AND writer_id = 0" % (row_sql(0, 250), NODE))
    expect(st, ["journal n1/0 truncated: shipped_seq 250 < checkpoint 300"])


def test_rows_renumbered(st):
    st.sql("UPDATE audit_record SET seq = seq + 1000 WHERE writer_id = 1 "
           "AND seq >= 40 ORDER BY seq DESC")
    expect(st, ["journal n1/1 seqs 1040..1050: inserted",
                "journal n1/1 seqs 40..50: deleted"])


def test_journal_row_deleted(st):
    st.sql("DELETE FROM audit_journal WHERE writer_id = 1")
    expect(st, ["journal n1/1: deleted"])


def test_checkpoint_note_altered(st):
    st.sql("UPDATE audit_checkpoint SET note = REPLACE(note, '\n200\n', "
           "'\n199\n') WHERE writer_id = 0 AND size = 200")
    expect(st, ["journal n1/0 checkpoint 200: bad signature"])


def test_checkpoint_root_column_altered(st):
    st.sql("UPDATE audit_checkpoint SET root = UNHEX(SHA2('x', 256)) WHERE "
           "writer_id = 0 AND size = 100")
    expect(st, ["journal n1/0 checkpoint 100: changed"])


def test_checkpoint_signed_by_another_key(st):
    """An auditor's vkey that is not the signer's: every checkpoint, in
    both stores, is a bad signature."""
    other = os.path.join(st.base, "other.conf")
    with open(st.conf) as f:
        conf = f.read()
    with open(other, "w") as f:
        f.write(conf.replace(st.key, os.path.join(st.base, "other.key")))
    try:
        vkey = st.ctl("keygen", conf=other).stdout.strip()
    finally:
        os.unlink(other)
        os.unlink(os.path.join(st.base, "other.key"))
    r = st.verify(vkey=vkey)
    assert r.returncode == 1
    assert sorted(findings(r.stdout)) == sorted(
        ["journal n1/0 checkpoint %d: bad signature" % n
         for n in (100, 200, 300)] * 2 +
        ["journal n1/1 checkpoint 50: bad signature"] * 2), r.stdout


def test_journal_file_damaged(st):
    """One flipped byte in a segment: the directory pass names it, and
    MariaDB, whose rows are intact, is still checked."""
    seg = os.path.join(st.dir, "journal-0-%020d.cj" % 1)
    with open(seg, "r+b") as f:
        f.seek(20000)
        b = f.read(1)
        f.seek(20000)
        f.write(bytes([b[0] ^ 0x10]))
    try:
        r = st.verify()
        assert r.returncode == 1, r.stdout
        lines = findings(r.stdout)
        assert len(lines) == 1 and \
            re.match(r"journal n1/0 seq \d+: changed$", lines[0]), r.stdout
        assert "offset" in r.stdout
        assert st.verify(journals=False).returncode == 0
    finally:
        with open(seg, "r+b") as f:
            f.seek(20000)
            f.write(b)
    assert st.verify().returncode == 0


def test_cannot_run(st):
    """Errors are exit 2 with the reason on stderr, never a pass."""
    r = st.verify(vkey="not-a-vkey")
    assert r.returncode == 2 and r.stderr, r.stdout + r.stderr
    bad = os.path.join(st.base, "bad.conf")
    st.write_conf(bad, "conclave_audit_db_host 127.0.0.1;\n"
                  "    conclave_audit_db_port 1;")
    r = st.ctl("verify", check=False, conf=bad)
    assert r.returncode == 2 and "MariaDB" in r.stderr, r.stdout + r.stderr


def test_verify_while_shipping(st):
    """verify reads one snapshot: a shipper committing rows and
    shipped_seq meanwhile (journal 7, written and shipped in a loop) is
    never a finding."""
    stop = threading.Event()
    errors = []

    def ship():
        while not stop.is_set():
            st.write(7, 50)
            r = st.ctl("ship", check=False)
            if r.returncode != 0:
                errors.append(r.stdout + r.stderr)

    t = threading.Thread(target=ship)
    t.start()
    try:
        for _ in range(30):
            for journals in (False, True):
                r = st.verify(journals=journals)
                assert r.returncode == 0, r.stdout + r.stderr
    finally:
        stop.set()
        t.join()
        for name in os.listdir(st.dir):
            if name.startswith(("journal-7-", "journal-7.")):
                os.unlink(os.path.join(st.dir, name))
    assert not errors, errors[0]
    assert int(st.sql("SELECT MAX(shipped_seq) FROM audit_journal WHERE "
                      "writer_id = 7")[0][0]) > 0
