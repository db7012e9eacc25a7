"""A journal directory, its signing key and a real MariaDB holding its
rows, filled through the real path: journal_cli (tests/lib/journal_cli.c,
the journal library as the module uses it) and `conclavectl ship` (the
real shipper).  Used by the compliance tests and benchmarks
(test_export.py, test_retention.py, tests/bench/export_bench.py).

No nginx: conclavectl reads a small nginx.conf holding the
conclave_audit_* directives.  With CONCLAVE_SANITIZE=1 build/asan's
conclavectl and an ASan+UBSan journal_cli are used, and any sanitizer
report fails the test.
"""

import os
import re
import subprocess

from mariadb import MariaDB

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

NODE = "n1"
DOMAIN = "example.com"
PREFIX = DOMAIN + "/audit/" + NODE

SANITIZE = os.environ.get("CONCLAVE_SANITIZE") == "1"
SAN_FLAGS = ["-g", "-O1", "-fsanitize=address,undefined",
             "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer"]
SAN_REPORT = re.compile(r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|"
                        r"runtime error:")
CTL = os.path.join(REPO, "build", "asan" if SANITIZE else "release",
                   "conclavectl")

CONF = """events {}
http {
    conclave_domain %(domain)s;
    conclave_audit_dir %(dir)s;
    conclave_audit_node %(node)s;
    conclave_audit_key %(key)s;
    conclave_audit_db_socket %(socket)s;
    conclave_audit_db_user conclave;
    conclave_audit_db_password conclave-pw;
    conclave_audit_db_name conclave;
    conclave_audit_db_timeout 30s;
}
"""


class CtlError(AssertionError):
    pass


def build_journal_cli(out, sanitize=SANITIZE):
    """Builds tests/lib/journal_cli.c with the journal sources into out
    (ASan+UBSan when sanitize); CtlError with the compiler's output if
    it does not build, warnings included."""
    args = ["cc", "-std=gnu11", "-g", "-Wall", "-Werror", "-Iaudit/src"]
    args += SAN_FLAGS if sanitize else ["-O2"]
    args += ["-o", out, "tests/lib/journal_cli.c", "audit/src/caud_record.c",
             "audit/src/caud_journal.c", "audit/src/caud_journal_read.c",
             "audit/src/caud_journal_dir.c",
             "audit/src/caud_checkpoint.c", "-lcrypto", "-ljansson",
             "-lpthread"]
    r = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        raise CtlError("building journal_cli failed:\n%s" % r.stderr)
    return out


class Store:
    """Journals in base/journal, key base/audit.key, MariaDB in
    base/mariadb, nginx.conf base/nginx.conf."""

    def __init__(self, base, ctl=CTL, sanitize=SANITIZE):
        if not os.path.isfile(ctl):
            raise CtlError("%s is missing: run `make build%s` first" % (
                ctl, " SANITIZE=1" if sanitize else ""))
        self.ctl_path = ctl
        self.sanitize = sanitize
        self.base = str(base)
        self.dir = os.path.join(self.base, "journal")
        self.key = os.path.join(self.base, "audit.key")
        self.conf = os.path.join(self.base, "nginx.conf")
        os.makedirs(self.dir, exist_ok=True)
        self.jcli = build_journal_cli(os.path.join(self.base, "journal_cli"),
                                      sanitize)
        self.db = MariaDB(os.path.join(self.base, "mariadb"))

    def start(self, extra_args=None):
        if extra_args is not None:
            self.db.extra_args = extra_args
        self.db.start()
        with open(self.conf, "w") as f:
            f.write(CONF % {"domain": DOMAIN, "dir": self.dir, "node": NODE,
                            "key": self.key, "socket": self.db.socket})
        self.vkey = self.ctl("keygen").stdout.strip()
        self.ctl("migrate", "--schema", os.path.join(REPO, "audit",
                                                     "schema"))

    def stop(self):
        self.db.stop()

    def ctl(self, *args, check=True, timeout=600):
        env = dict(os.environ)
        if self.sanitize:
            env["ASAN_OPTIONS"] = "detect_leaks=0"
        cmd = [self.ctl_path, "--config", self.conf] + list(args)
        r = subprocess.run(cmd, capture_output=True, text=True,
                           timeout=timeout, env=env)
        if SAN_REPORT.search(r.stderr):
            raise CtlError("sanitizer report from %s:\n%s" % (
                " ".join(cmd), r.stderr))
        if check and r.returncode != 0:
            raise CtlError("%s: exit %d\n%s%s" % (
                " ".join(cmd), r.returncode, r.stdout, r.stderr))
        return r

    def write(self, writer, n, checkpoint=True, **kw):
        """journal_cli WRITER N with --key value options (underscores
        become dashes), then a checkpoint over the journal."""
        args = [self.jcli, self.dir, str(writer), str(n)]
        for k, v in kw.items():
            args += ["--" + k.replace("_", "-"), str(v)]
        if checkpoint:
            args += ["--checkpoint", self.key, PREFIX]
        r = subprocess.run(args, capture_output=True, text=True, timeout=600)
        if r.returncode != 0 or SAN_REPORT.search(r.stderr):
            raise CtlError("journal_cli %s: %s" % (args[1:], r.stderr))
        return r.stdout

    def ship(self):
        return self.ctl("ship", "--all").stdout

    def sql(self, sql):
        return self.db.query(sql, database=self.db.database)

    def scalar(self, sql):
        return self.db.scalar(sql, database=self.db.database)


def started(base, fill=None):
    """A module's store fixture: a started Store in base, filled by
    fill(s), stopped after the module (and at once if starting or
    filling fails); a Store that cannot be made fails the test.

        @pytest.fixture(scope="module")
        def store(tmp_path_factory):
            yield from started(tmp_path_factory.mktemp("export"), fill)
    """
    import pytest

    try:
        s = Store(base)
    except CtlError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        s.start()
        if fill:
            fill(s)
    except Exception:
        s.stop()
        raise
    yield s
    s.stop()
