"""Install, upgrade, remove and purge on a clean Debian 12 root.

Run by `make install-test` (CONCLAVE_INSTALL_TEST=1; it builds version
N = VERSION and N+1 = VERSION.1 first).  A minbase Debian 12 root is
made with debootstrap from Debian's mirror (the tarball is cached in
build/install-test/), the two .debs are installed with
`apt-get install ./...` so that apt resolves their dependencies from
the mirror, and the appliance is set up with `conclavectl setup
--non-interactive` against a slapd and a mariadbd this test runs on the
host's loopback (the chroot shares the network).  nginx is started
inside the root; real slixmpp clients sign in and chat; the records
land in MariaDB.  Then: the upgrade to N+1 keeps configuration and
data, backs the schema up, migrates and RESTARTS nginx (the new .so is
mapped, not the deleted old one), skip-auto-migrate is honoured, and
the audit chain verifies across both versions; remove keeps data,
purge keeps the audit data and the signing key; only purge with
CONCLAVE_PURGE_AUDIT_DATA=yes deletes them.  The root is made from the
mirror the host's apt uses; teardown (also after a failure) stops what
runs in the root by PID, unmounts, and errors on a leftover process or
mount.
"""

import glob
import hashlib
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))

from mariadb import MariaDB  # noqa: E402
from ports import free_port  # noqa: E402
from slapd import BASE, SERVICE_DN, SERVICE_PW, SIGNIN_GROUP_DN  # noqa
from slapd import Slapd  # noqa: E402
from slixclient import SlixPool  # noqa: E402

pytestmark = pytest.mark.skipif(
    os.environ.get("CONCLAVE_INSTALL_TEST") != "1",
    reason="slow, needs Debian's mirror: make install-test")

CACHE = os.path.join(REPO, "build", "install-test")
SUITE = "bookworm"


def apt_sources():
    """(URI, suites, components) of every "deb" source the host's apt
    uses: one-line sources.list(5) files and deb822 .sources files."""
    found = []
    lists = ["/etc/apt/sources.list"] + sorted(
        glob.glob("/etc/apt/sources.list.d/*.list"))
    for path in lists:
        if not os.path.exists(path):
            continue
        for line in open(path):
            line = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
            if len(line) >= 3 and line[0] == "deb":
                found.append((line[1], [line[2]], line[3:]))
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for para in re.split(r"\n\s*\n", open(path).read()):
            fields = {}
            for line in para.split("\n"):
                m = re.match(r"^([A-Za-z-]+):\s*(.*)$", line)
                if m and not line.startswith("#"):
                    fields[m.group(1).lower()] = m.group(2).split()
            if "deb" in fields.get("types", []) and \
                    fields.get("enabled", ["yes"]) != ["no"]:
                for uri in fields.get("uris", []):
                    found.append((uri, fields.get("suites", []),
                                  fields.get("components", [])))
    return found


def host_mirror():
    """The Debian mirror the host's apt installs bookworm from.  A CI
    machine may reach only the mirror it is configured with, so the
    clean root uses the same one (CONCLAVE_DEBIAN_MIRROR overrides)."""
    if os.environ.get("CONCLAVE_DEBIAN_MIRROR"):
        return os.environ["CONCLAVE_DEBIAN_MIRROR"]
    for uri, suites, comps in apt_sources():
        if SUITE in suites and "main" in comps and \
                re.match(r"^(https?|file)://", uri):
            return uri.rstrip("/")
    return "http://deb.debian.org/debian"


MIRROR = host_mirror()
# one cache per mirror: the unpacked root's apt lists name its mirror
MIRROR_TAG = hashlib.sha256(MIRROR.encode()).hexdigest()[:8]
V1 = open(os.path.join(REPO, "VERSION")).read().strip()
V2 = V1 + ".1"
SO = "/usr/lib/nginx/modules/ngx_http_conclave_module.so"


def debs(version):
    found = [os.path.join(REPO, "build", "deb", "%s_%s_amd64.deb" % (n,
                                                                  version))
             for n in ("libnginx-mod-conclave", "conclave")]
    for f in found:
        if not os.path.exists(f):
            pytest.fail("%s missing: make install-test builds it" % f,
                        pytrace=False)
    return found


class Root:
    """A debootstrapped Debian 12 root with /proc and /dev mounted."""

    def __init__(self, path):
        self.path = path
        self.mounts = []

    def make(self):
        tarball = os.path.join(CACHE, "bookworm-minbase-%s.tgz" % MIRROR_TAG)
        os.makedirs(CACHE, exist_ok=True)
        if not os.path.exists(tarball):
            subprocess.run(["debootstrap", "--variant=minbase",
                            "--make-tarball=" + tarball, "bookworm",
                            self.path + ".dl", MIRROR], check=True,
                           capture_output=True, timeout=1800)
            shutil.rmtree(self.path + ".dl", ignore_errors=True)
        # the unpacked root is cached too: debootstrap's second stage
        # takes minutes on a busy machine
        cached = os.path.join(CACHE, "bookworm-root-%s.tar" % MIRROR_TAG)
        fresh = not os.path.exists(cached)
        if not fresh:
            os.makedirs(self.path)
            subprocess.run(["tar", "--numeric-owner", "-xf", cached, "-C",
                            self.path], check=True)
        else:
            r = subprocess.run(["debootstrap", "--variant=minbase",
                                "--unpack-tarball=" + tarball, "bookworm",
                                self.path, MIRROR], capture_output=True,
                               text=True, timeout=1800)
            assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
            subprocess.run(["tar", "--numeric-owner", "-cf", cached + ".tmp",
                            "-C", self.path, "."], check=True)
            os.rename(cached + ".tmp", cached)
        for what, where in (("proc", "proc"), ("/dev", "dev"),
                            ("/dev/pts", "dev/pts")):
            target = os.path.join(self.path, where)
            os.makedirs(target, exist_ok=True)
            args = (["mount", "-t", "proc", "proc", target] if what == "proc"
                    else ["mount", "--bind", what, target])
            subprocess.run(args, check=True)
            self.mounts.append(target)
        shutil.copy("/etc/resolv.conf", os.path.join(self.path, "etc"))
        # like any container: package installs start no services
        prc = os.path.join(self.path, "usr/sbin/policy-rc.d")
        with open(prc, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(prc, 0o755)
        if not fresh:
            # a cached root's package lists may be older than the
            # mirror's current point release
            self.run("apt-get update -q")

    def run(self, cmd, check=True, env=None, timeout=900):
        e = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
             "DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8"}
        e.update(env or {})
        r = subprocess.run(["chroot", self.path, "/bin/sh", "-c", cmd],
                           capture_output=True, text=True, env=e,
                           timeout=timeout)
        if check:
            assert r.returncode == 0, "%s\n%s\n%s" % (cmd, r.stdout[-4000:],
                                                      r.stderr[-4000:])
        return r

    def file(self, path):
        return os.path.join(self.path, path.lstrip("/"))

    def install(self, paths, extra=""):
        os.makedirs(self.file("/tmp/debs"), exist_ok=True)
        names = []
        for p in paths:
            shutil.copy(p, self.file("/tmp/debs"))
            names.append("./tmp/debs/" + os.path.basename(p))
        return self.run("cd / && apt-get install -y -q --no-install-recommends "
                        "%s %s" % (extra, " ".join(names)))

    def master_pid(self):
        path = self.file("/run/conclave/nginx.pid")
        if not os.path.exists(path):
            return None
        pid = int(open(path).read())
        return pid if os.path.exists("/proc/%d" % pid) else None

    def stop(self):
        pid = self.master_pid()
        if pid:
            os.kill(pid, 15)
            deadline = time.time() + 20
            while os.path.exists("/proc/%d" % pid) and time.time() < deadline:
                time.sleep(0.1)

    def processes(self):
        """PIDs of processes whose root directory is inside this root."""
        pids = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                where = os.readlink("/proc/%s/root" % pid)
            except OSError:
                continue
            if where == self.path or where.startswith(self.path + "/"):
                pids.append(int(pid))
        return pids

    def mounted(self):
        """Mount points at or under this root (/proc/self/mountinfo)."""
        points = []
        with open("/proc/self/mountinfo") as f:
            for line in f:
                point = line.split()[4].replace("\\040", " ")
                if point == self.path or point.startswith(self.path + "/"):
                    points.append(point)
        return points

    def close(self):
        """Stop nginx by its PID, kill (by PID) anything else still
        running in the root, unmount, then remove the root.  Runs on
        failure too; a leftover process or mount is reported as an
        error, and the tree is never removed while something is still
        mounted in it (rm -rf through a bind mount of /dev would reach
        the host's /dev)."""
        self.stop()
        strays = self.processes()
        for pid in strays:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        while self.processes() and time.time() < deadline:
            time.sleep(0.1)
        for m in reversed(self.mounts):
            if subprocess.run(["umount", m]).returncode != 0:
                subprocess.run(["umount", "-l", m])
        self.mounts = []
        left = self.mounted()
        if not left:
            shutil.rmtree(self.path, ignore_errors=True)
        assert not left, "still mounted: %s" % left
        assert not strays, "processes left in the root: %s" % strays


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    d = tmp_path_factory.mktemp("servers")
    ldap = Slapd(str(d / "ldap"))
    db = MariaDB(str(d / "mariadb"))
    ldap.start()
    db.start()
    yield ldap, db
    db.stop()
    ldap.stop()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = Root(str(tmp_path_factory.mktemp("install") / "root"))
    try:
        r.make()
        yield r
    finally:
        r.close()


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def chat(port, tag):
    with SlixPool() as pool:
        alice = pool.client("alice@example.com/" + tag, "alice-pw", port)
        bob = pool.client("bob@example.com/" + tag, "bob-pw", port)
        alice.message("bob@example.com/" + tag, "hello from " + tag)
        bob.wait_message(lambda m: m["body"] == "hello from " + tag)


def wait_record(db, body, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = db.query("SELECT seq FROM audit_record WHERE event = "
                        "'message' AND body = '%s'" % body,
                        database=db.database)
        if rows:
            return rows
        time.sleep(0.3)
    raise AssertionError("record %r never reached MariaDB" % body)


def so_mapping(pid):
    """The module's line in the master's memory map."""
    with open("/proc/%d/maps" % pid) as f:
        return [l for l in f if "ngx_http_conclave_module.so" in l]


def grows(path, before, timeout=15):
    """path exists and has more than before bytes, within timeout."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path) and os.path.getsize(path) > before:
            return True
        time.sleep(0.2)
    return False


def rotate_logs(root, https, xmpp):
    """logrotate -f twice (docs/operations.md "Logs")."""
    logs = root.file("/var/log/conclave")
    owner = root.run("stat -c %U /var/log/conclave").stdout.strip()
    pid = root.master_pid()
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    for n in (1, 2):
        r = root.run("logrotate -v -f /etc/logrotate.d/conclave",
                     check=False)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert "error:" not in r.stderr, r.stderr[-3000:]
        assert "switching euid from 0 to" in r.stderr, r.stderr[-3000:]
        for log in ("error.log", "access.log"):
            assert os.path.exists(os.path.join(logs, log + ".1")), log
            assert root.run("stat -c %U /var/log/conclave/" + log
                            ).stdout.strip() == owner
        # the same master, writing into the new files
        assert root.master_pid() == pid
        sizes = {f: os.path.getsize(os.path.join(logs, f))
                 for f in ("error.log", "access.log")}
        urllib.request.urlopen("https://127.0.0.1:%d/health" % https,
                               context=ctx, timeout=10).read()
        chat(xmpp, "rotated%d" % n)
        assert grows(os.path.join(logs, "access.log"), sizes["access.log"])
        assert grows(os.path.join(logs, "error.log"), sizes["error.log"])
        assert "GET /health" in open(os.path.join(logs,
                                                  "access.log")).read()
    assert os.path.exists(os.path.join(logs, "error.log.2.gz"))
    assert os.path.exists(os.path.join(logs, "access.log.2.gz"))


def test_install_setup_chat_upgrade_remove_purge(root, servers):
    ldap, db = servers
    https, xmpp, xmpps = free_port(), free_port(), free_port()

    # -- install N: apt resolves nginx, libnginx-mod-stream, libs, ...
    r = root.install(debs(V1))
    assert "run \"conclavectl setup\"" in r.stdout, r.stdout[-2000:]
    assert os.path.islink(root.file(
        "/etc/nginx/modules-enabled/70-mod-conclave.conf"))
    assert os.path.islink(root.file(
        "/etc/nginx/modules-enabled/50-mod-stream.conf"))

    # -- setup, non-interactive, against the host's slapd and mariadbd
    with open(root.file("/root/ldap.pw"), "w") as f:
        f.write(SERVICE_PW + "\n")
    with open(root.file("/root/db.pw"), "w") as f:
        f.write(db.password + "\n")
    r = root.run(
        "conclavectl setup --non-interactive --domain example.com "
        "--ldap-uri %s --ldap-bind-dn %s --ldap-password-file /root/ldap.pw "
        "--ldap-base ou=people,%s --ldap-group %s "
        "--db mariadb://%s@127.0.0.1:%d/%s --db-password-file /root/db.pw "
        "--self-signed --https-listen 127.0.0.1:%d "
        "--xmpp-listen 127.0.0.1:%d --xmpps-listen 127.0.0.1:%d"
        % (ldap.uri, SERVICE_DN, BASE, SIGNIN_GROUP_DN, db.user, db.port,
           db.database, https, xmpp, xmpps))
    assert "configured /etc/conclave for example.com" in r.stdout, r.stdout
    conf_hash = sha(root.file("/etc/conclave/nginx.conf"))
    key_hash = sha(root.file("/etc/conclave/audit.key"))

    # -- start nginx (no systemd in the root), sign in, chat
    root.run("/usr/lib/conclave/conclave-nginx start")
    pid1 = root.master_pid()
    assert pid1, "nginx did not start"
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen("https://127.0.0.1:%d/health" % https,
                                context=ctx, timeout=10) as resp:
        assert resp.read() == b"ok\n"
        assert resp.headers["Server"] == "nginx"
    chat(xmpp, "v1")
    wait_record(db, "hello from v1")
    assert not [l for l in so_mapping(pid1) if "(deleted)" in l]

    # -- logrotate: /etc/logrotate.d/conclave forced twice, as the
    # workers' user; nginx reopens on USR1 and logs into the new files;
    # the second run compresses the first run's (delaycompress)
    root.run("apt-get install -y -q --no-install-recommends logrotate")
    rotate_logs(root, https, xmpp)

    # -- upgrade to N+1: backup, migrate, restart (not reload)
    r = root.install(debs(V2))
    assert "schema backed up to /var/backups/conclave/schema-" in r.stdout, \
        r.stdout[-3000:]
    assert "schema: " in r.stdout, r.stdout[-3000:]
    assert glob.glob(root.file("/var/backups/conclave/schema-*.sql"))
    pid2 = root.master_pid()
    assert pid2 and pid2 != pid1, "nginx was not restarted"
    maps = so_mapping(pid2)
    assert maps and not [l for l in maps if "(deleted)" in l], maps
    assert sha(root.file("/etc/conclave/nginx.conf")) == conf_hash
    assert sha(root.file("/etc/conclave/audit.key")) == key_hash
    v = root.run("dpkg-query -W -f='${Version}' conclave "
                 "libnginx-mod-conclave").stdout
    assert v == V2 + V2, v
    chat(xmpp, "v2")
    wait_record(db, "hello from v2")
    assert wait_record(db, "hello from v1")         # kept

    # the chain verifies across both versions (journals and MariaDB)
    root.run("/usr/lib/conclave/conclave-nginx stop")
    r = root.run("conclavectl ship --all && conclavectl verify",
                 check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    root.run("/usr/lib/conclave/conclave-nginx start")

    # -- skip-auto-migrate: no backup, no migration, still a restart
    backups = set(glob.glob(root.file("/var/backups/conclave/*.sql")))
    open(root.file("/etc/conclave/skip-auto-migrate"), "w").close()
    pid3 = root.master_pid()
    time.sleep(1.1)                     # a new backup would get a new name
    r = root.run("cd / && apt-get install -y -q --reinstall "
                 "./tmp/debs/conclave_%s_amd64.deb" % V2)
    assert "skip-auto-migrate exists" in r.stdout, r.stdout[-2000:]
    assert set(glob.glob(root.file("/var/backups/conclave/*.sql"))) == \
        backups
    assert root.master_pid() not in (None, pid3)
    os.unlink(root.file("/etc/conclave/skip-auto-migrate"))

    # -- remove: stopped, programs gone, configuration and data kept
    journals = glob.glob(root.file("/var/lib/conclave/audit/journal-*"))
    assert journals
    pid4 = root.master_pid()
    root.run("apt-get remove -y -q conclave libnginx-mod-conclave")
    assert not os.path.exists("/proc/%d" % pid4)
    assert not os.path.exists(root.file("/usr/sbin/conclavectl"))
    assert os.path.exists(root.file("/etc/conclave/nginx.conf"))
    assert all(os.path.exists(j) for j in journals)

    # -- purge: configuration gone, audit journals and key kept
    r = root.run("apt-get purge -y -q conclave libnginx-mod-conclave")
    assert "kept the audit journals" in r.stdout, r.stdout[-2000:]
    for gone in ("nginx.conf", "ldap.secret", "db.secret", "tls/key.pem"):
        assert not os.path.exists(root.file("/etc/conclave/" + gone)), gone
    assert all(os.path.exists(j) for j in journals)
    assert sha(root.file("/etc/conclave/audit.key")) == key_hash
    assert glob.glob(root.file("/var/backups/conclave/*.sql"))
    # MariaDB is never touched
    assert wait_record(db, "hello from v2")

    # -- only the explicit flag deletes the audit data: install again
    # (a first install: the configuration is gone), then purge with it
    r = root.install(debs(V2))
    assert "run \"conclavectl setup\"" in r.stdout, r.stdout[-2000:]
    assert all(os.path.exists(j) for j in journals)
    r = root.run("apt-get purge -y -q conclave libnginx-mod-conclave",
                 env={"CONCLAVE_PURGE_AUDIT_DATA": "yes"})
    assert "audit journals and the signing key deleted" in r.stdout, \
        r.stdout[-2000:]
    for gone in ("/var/lib/conclave", "/var/backups/conclave",
                 "/etc/conclave/audit.key", "/etc/conclave"):
        assert not os.path.exists(root.file(gone)), gone
    assert wait_record(db, "hello from v1")         # MariaDB still untouched
