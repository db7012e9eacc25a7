"""A private OpenLDAP slapd for tests and the demo (PLATFORM.md section 5).

    from slapd import Slapd
    with Slapd(tmpdir) as ldap:          # or .start() / .stop()
        ldap.uri                         # "ldap://127.0.0.1:PORT"
        ldap.pause(); ldap.resume()      # SIGSTOP / SIGCONT

    Slapd(tmpdir, tls=True): also ldaps:// on ldap.ldaps_uri and StartTLS
    on ldap.uri, with a certificate for IP 127.0.0.1 only, signed by a
    fresh CA (ldap.ca_file); ldap.wrong_ca_file is another CA's.
    Slapd(tmpdir, flavor="ad"): the AD-shaped directory (ad-schema.ldif,
    ad-directory.ldif, ad-groups.ldif; AD_* constants below).

The instance is built from scratch in workdir on every start: cn=config
from ldap/config.ldif.in (slapadd -n0), people and OUs from
ldap/directory.ldif (slapadd -n1), then slapd runs and the groups from
ldap/groups.ldif are added online, because slapadd bypasses the memberof
overlay.  It is stopped by the PID in its pid file, never by name.

Command line (for "make demo"):
    slapd.py start WORKDIR [PORT]    prints the URI once the server is ready
    slapd.py stop WORKDIR
"""

import base64
import hashlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import procs  # noqa: E402
from ports import free_port  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
LDIF_DIR = os.path.join(HERE, "ldap")

BASE = "dc=example,dc=com"
PEOPLE = "ou=people," + BASE
GROUPS = "ou=groups," + BASE
ROOT_DN = "cn=admin," + BASE
SERVICE_DN = "cn=svc-conclave,ou=services," + BASE
SERVICE_PW = "svc-conclave-pw"
USER_FILTER = "(&(objectClass=inetOrgPerson)(uid=%u))"
SIGNIN_GROUP_DN = "cn=conclave-users," + GROUPS
ADMIN_GROUP_DN = "cn=conclave-admins," + GROUPS
COMPLIANCE_GROUP_DN = "cn=conclave-compliance," + GROUPS
AUDITOR_GROUP_DN = "cn=conclave-auditors," + GROUPS

# the AD-shaped directory (flavor="ad")
AD_STAFF = "ou=Staff," + BASE
AD_GROUPS = "ou=Groups," + BASE
AD_USER_FILTER = ("(&(objectClass=user)(|(sAMAccountName=%u)"
                  "(userPrincipalName=%u@example.com)))")
AD_SIGNIN_GROUP_DN = "cn=Conclave Users," + AD_GROUPS
AD_ADMIN_GROUP_DN = "cn=Conclave Admins," + AD_GROUPS
AD_COMPLIANCE_GROUP_DN = "cn=Conclave Compliance," + AD_GROUPS
AD_AUDITOR_GROUP_DN = "cn=Conclave Auditors," + AD_GROUPS


def ad_dn(cn):
    return "cn=%s,%s" % (cn, AD_STAFF)


# login -> password; everyone but dave and grace is in SIGNIN_GROUP_DN
# (grace, an auditor, only uses the admin console)
USERS = {uid: uid + "-pw"
         for uid in ("alice", "bob", "carol", "dave", "erin", "frank",
                     "grace")}


def user_dn(uid):
    return "uid=%s,%s" % (uid, PEOPLE)


def ssha(password):
    """{SSHA} exactly as slappasswd makes it: SHA-1(pw + salt) + salt."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def _hash_passwords(ldif):
    # the LDIF keeps demo passwords readable; slapd gets salted hashes
    return re.sub(r"(?m)^userPassword: (.*)$",
                  lambda m: "userPassword: " + ssha(m.group(1)), ldif)


class SlapdError(RuntimeError):
    pass


class Slapd:
    """One slapd listening on ldap://127.0.0.1:PORT, state in workdir."""

    service_dn = SERVICE_DN
    service_pw = SERVICE_PW
    base = BASE
    user_filter = USER_FILTER
    signin_group_dn = SIGNIN_GROUP_DN

    START_TIMEOUT = 10.0
    STOP_TIMEOUT = 10.0

    def __init__(self, workdir, port=None, tls=False, flavor="openldap"):
        self.workdir = os.path.abspath(workdir)
        self.fixed_port = port
        self.port = port
        self.tls = tls
        self.flavor = flavor
        self.ldaps_port = None
        self.tls_dir = os.path.join(self.workdir, "tls")
        self.ca_file = os.path.join(self.tls_dir, "ca.pem")
        self.wrong_ca_file = os.path.join(self.tls_dir, "other-ca.pem")
        if flavor == "ad":
            self.user_filter = AD_USER_FILTER
            self.signin_group_dn = AD_SIGNIN_GROUP_DN
            self.people = AD_STAFF
        else:
            self.people = PEOPLE
        self.pid = None
        self.proc = None
        self.paused = False
        self.root_pw = None
        self.pid_file = os.path.join(self.workdir, "slapd.pid")
        self.log_file = os.path.join(self.workdir, "slapd.log")

    @property
    def uri(self):
        return "ldap://127.0.0.1:%d" % self.port

    @property
    def ldaps_uri(self):
        return "ldaps://127.0.0.1:%d" % self.ldaps_port

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- start -------------------------------------------------------------

    def start(self):
        if self.pid is not None:
            raise SlapdError("slapd already running, pid %d" % self.pid)
        self._build()
        # a port from free_port() can be taken before slapd binds it
        attempts = 1 if self.fixed_port else 3
        for attempt in range(attempts):
            self.port = self.fixed_port or free_port()
            if self.tls and (self.ldaps_port is None or not self.fixed_port):
                self.ldaps_port = free_port()
            if self._launch():
                break
        else:
            raise SlapdError("slapd did not start, see %s" % self.log_file)
        groups = "ad-groups.ldif" if self.flavor == "ad" else "groups.ldif"
        self._ldap("ldapmodify", "-a", "-D", ROOT_DN, "-w", self.root_pw,
                   "-f", os.path.join(LDIF_DIR, groups))
        return self

    def modify(self, ldif):
        """Apply an LDIF change (ldapmodify -a) as the root DN."""
        path = os.path.join(self.workdir, "change.ldif")
        with open(path, "w") as f:
            f.write(ldif)
        return self._ldap("ldapmodify", "-a", "-D", ROOT_DN,
                          "-w", self.root_pw, "-f", path)

    def config_modify(self, ldif):
        """Apply an LDIF change to cn=config (limits, for example) as its
        root DN, while slapd runs."""
        path = os.path.join(self.workdir, "config-change.ldif")
        with open(path, "w") as f:
            f.write(ldif)
        return self._ldap("ldapmodify", "-D", "cn=admin,cn=config",
                          "-w", self.root_pw, "-f", path)

    def _make_certs(self):
        """A CA, a server certificate for IP 127.0.0.1 only (so that
        "localhost" is a name mismatch), and an unrelated second CA."""
        if os.path.exists(self.ca_file):
            return
        os.makedirs(self.tls_dir, exist_ok=True)
        d = self.tls_dir

        def ssl(*args):
            self._run(["openssl"] + list(args))

        for name in ("ca", "other-ca"):
            ssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                "-subj", "/CN=Conclave test %s" % name,
                "-keyout", os.path.join(d, name + ".key"),
                "-out", os.path.join(d, name + ".pem"))
        ssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", os.path.join(d, "server.key"),
            "-out", os.path.join(d, "server.csr"))
        ext = os.path.join(d, "server.ext")
        with open(ext, "w") as f:
            f.write("subjectAltName = IP:127.0.0.1\n"
                    "extendedKeyUsage = serverAuth\n")
        ssl("x509", "-req", "-in", os.path.join(d, "server.csr"),
            "-CA", self.ca_file, "-CAkey", os.path.join(d, "ca.key"),
            "-CAcreateserial", "-days", "2", "-extfile", ext,
            "-out", os.path.join(d, "server.pem"))

    def _build(self):
        for sub in ("slapd.d", "data"):
            shutil.rmtree(os.path.join(self.workdir, sub), ignore_errors=True)
            os.makedirs(os.path.join(self.workdir, sub))
        for stale in (self.pid_file, self.log_file):
            if os.path.exists(stale):
                os.unlink(stale)
        self.root_pw = secrets.token_urlsafe(18)

        tls = ""
        if self.tls:
            self._make_certs()
            tls = ("olcTLSCACertificateFile: %s/ca.pem\n"
                   "olcTLSCertificateFile: %s/server.pem\n"
                   "olcTLSCertificateKeyFile: %s/server.key\n"
                   % (self.tls_dir, self.tls_dir, self.tls_dir))
        with open(os.path.join(LDIF_DIR, "config.ldif.in")) as f:
            config = (f.read().replace("@DIR@", self.workdir)
                      .replace("@LDIF_DIR@", LDIF_DIR)
                      .replace("@TLS@", tls)
                      .replace("@ROOTPW@", ssha(self.root_pw)))
        data = ("ad-directory.ldif" if self.flavor == "ad"
                else "directory.ldif")
        with open(os.path.join(LDIF_DIR, data)) as f:
            directory = _hash_passwords(f.read())

        slapd_d = os.path.join(self.workdir, "slapd.d")
        for db, ldif in (("0", config), ("1", directory)):
            path = os.path.join(self.workdir, "db%s.ldif" % db)
            with open(path, "w") as f:
                f.write(ldif)
            self._run(["slapadd", "-q", "-n", db, "-F", slapd_d, "-l", path])

    def _launch(self):
        """Start slapd in the foreground ("-d 0" keeps it attached and
        quiet) so that we are its parent and can reap it.  True once an
        authenticated whoami succeeds, False if slapd exited (port taken)."""
        log = open(self.log_file, "ab")
        urls = "ldap://127.0.0.1:%d/" % self.port
        if self.tls:
            urls += " ldaps://127.0.0.1:%d/" % self.ldaps_port
        self.proc = subprocess.Popen(
            ["slapd", "-d", "0", "-F", os.path.join(self.workdir, "slapd.d"),
             "-h", urls],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True)
        log.close()

        deadline = time.monotonic() + self.START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                return False
            r = subprocess.run(
                ["ldapwhoami", "-x", "-H", self.uri, "-o", "nettimeout=1",
                 "-D", SERVICE_DN, "-w", SERVICE_PW],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if r.returncode == 0 and os.path.exists(self.pid_file):
                self.pid = self._read_pid()
                if self.pid != self.proc.pid:
                    raise SlapdError("pid file says %d, child is %d"
                                     % (self.pid, self.proc.pid))
                return True
            time.sleep(0.01)
        self._kill(self.proc.pid)
        raise SlapdError("slapd not ready after %.0fs" % self.START_TIMEOUT)

    # -- stop / pause --------------------------------------------------------

    def stop(self):
        """SIGTERM the PID from the pid file and wait until it is gone."""
        pid = self.pid
        if pid is None and os.path.exists(self.pid_file):
            pid = self._read_pid()
        if pid is not None:
            self._kill(pid)
        self.pid = None
        self.proc = None
        self.paused = False

    def _kill(self, pid):
        if not self._is_ours(pid):
            return
        try:
            os.kill(pid, signal.SIGTERM)
            # a stopped process only acts on SIGTERM once continued
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            return
        if not self._wait_gone(pid, self.STOP_TIMEOUT):
            os.kill(pid, signal.SIGKILL)
            self._wait_gone(pid, self.STOP_TIMEOUT)

    def _is_ours(self, pid):
        """A stale pid file may name a reused PID: only signal a slapd
        that runs from this workdir."""
        if self.proc is not None and self.proc.pid == pid:
            return True
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            return False
        return (os.path.basename(argv[0]) == b"slapd"
                and os.path.join(self.workdir, "slapd.d").encode() in argv)

    def _wait_gone(self, pid, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.pid == pid:
                if self.proc.poll() is not None:
                    return True
            elif not _alive(pid):
                return True
            time.sleep(0.01)
        return False

    def pause(self):
        """SIGSTOP: the kernel still completes TCP handshakes on the
        listening socket, but nothing is ever answered.  Returns once
        every thread is stopped (procs.freeze)."""
        procs.freeze(self.pid)
        self.paused = True

    def resume(self):
        os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    # -- helpers -------------------------------------------------------------

    def add_users(self, prefix, count, group=SIGNIN_GROUP_DN):
        """Adds users <prefix>1..<prefix>count (password "<uid>-pw") and
        puts them in group; for benchmarks that need many accounts."""
        uids = ["%s%d" % (prefix, i) for i in range(1, count + 1)]
        ldif = "".join(
            "dn: %s\nobjectClass: inetOrgPerson\nuid: %s\ncn: %s\n"
            "sn: %s\nuserPassword: %s\n\n"
            % (user_dn(u), u, u, u, ssha(u + "-pw")) for u in uids)
        ldif += "dn: %s\nchangetype: modify\nadd: member\n" % group
        ldif += "".join("member: %s\n" % user_dn(u) for u in uids)
        path = os.path.join(self.workdir, "bench-users.ldif")
        with open(path, "w") as f:
            f.write(ldif)
        # entries first, then the group change, in one ldapmodify -a run
        self._ldap("ldapmodify", "-a", "-D", ROOT_DN, "-w", self.root_pw,
                   "-f", path)
        return uids

    def _read_pid(self):
        with open(self.pid_file) as f:
            return int(f.read().split()[0])

    def _ldap(self, tool, *args):
        return self._run([tool, "-x", "-H", self.uri, "-o", "nettimeout=5"]
                         + list(args))

    @staticmethod
    def _run(cmd):
        r = subprocess.run(cmd, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30)
        if r.returncode != 0:
            raise SlapdError("%s failed (%d): %s"
                             % (cmd[0], r.returncode,
                                r.stdout.decode(errors="replace")))
        return r.stdout.decode(errors="replace")


def _alive(pid):
    """True while pid exists and is not a zombie (an orphan's zombie may
    never be reaped when PID 1 is not an init)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def main(argv):
    if len(argv) >= 3 and argv[1] == "start":
        port = int(argv[3]) if len(argv) > 3 else None
        s = Slapd(argv[2], port).start()
        print(s.uri)
        return 0
    if len(argv) == 3 and argv[1] == "stop":
        Slapd(argv[2]).stop()
        return 0
    sys.stderr.write("usage: slapd.py start WORKDIR [PORT] | stop WORKDIR\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
