"""A private nginx (+ the Conclave module) for tests and the demo.

Nginx(workdir, module_so, ...) renders tests/lib/nginx.conf.in into
workdir/conf/nginx.conf (workdir is the nginx prefix: conf/, logs/, tmp/),
runs `nginx -p workdir -c conf/nginx.conf -g 'daemon off;'` in its own
session, waits until the port accepts and the workers are up, and stops it
by PID (QUIT, then KILL after a timeout).

module_so=None loads no module and drops every conclave_* line, so the
harness itself can be tested with a stock nginx.

sanitize=True is for an ASan+UBSan build of the module (build/asan/): the
stock nginx binary is not instrumented, so the ASan runtime must be the
first library in the process and is LD_PRELOADed; reports go to files
under logs/ and check_logs() turns them into problems.
"""

import glob
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ports import free_port  # noqa: E402
from mariadb import pid_alive, pid_cmdline, stop_pid  # noqa: E402
import slapd  # noqa: E402

NGINX = "/usr/sbin/nginx"
TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "nginx.conf.in")

DOMAIN = "example.com"

# the web client "make webclient" assembles (converse.js + our files)
WEBCLIENT = os.path.join(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))), "build", "webclient")

# the admin console's static files ("make adminweb")
ADMINWEB = os.path.join(os.path.dirname(WEBCLIENT), "admin")

_TAG_RE = re.compile(r"\s*#@((?:\s+\w+)+)\s*$")


class NginxError(RuntimeError):
    pass


def asan_runtime():
    """Path of the ASan runtime gcc links against (libasan.so.8 here)."""
    r = subprocess.run(["gcc", "-print-file-name=libasan.so"],
                       capture_output=True, text=True)
    path = os.path.realpath(r.stdout.strip())
    if r.returncode != 0 or not os.path.isfile(path):
        raise NginxError("ASan runtime not found (gcc -print-file-name="
                         "libasan.so gave %r)" % r.stdout.strip())
    return path


def self_signed_cert(certfile, keyfile, cn=DOMAIN):
    """Create a self-signed certificate for cn, localhost and 127.0.0.1,
    unless both files exist already (the demo keeps its certificate)."""
    if os.path.exists(certfile) and os.path.exists(keyfile):
        return False
    r = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-sha256", "-days", "3650", "-subj", "/CN=" + cn,
         "-addext", "subjectAltName=DNS:%s,DNS:*.%s,DNS:localhost,"
                    "IP:127.0.0.1" % (cn, cn),
         "-keyout", keyfile, "-out", certfile],
        stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if r.returncode != 0:
        raise NginxError("openssl req failed: " + r.stderr)
    os.chmod(keyfile, 0o600)
    return True


def _conclave_directives(text):
    return set(re.findall(r"(?m)^\s*(conclave_\w+)\b", text))


def render(template, values, tags, overridden=()):
    """Substitute @NAME@ and keep "#@ tag" lines whose tags all hold;
    drop the conclave_* directives named in overridden."""
    out = []
    for line in template.splitlines():
        m = _TAG_RE.search(line)
        if m:
            if not all(tags.get(t, False) for t in m.group(1).split()):
                continue
            line = line[:m.start()]
        d = re.match(r"\s*(conclave_\w+)\s", line)
        if d and d.group(1) in overridden:
            continue
        out.append(line.rstrip())
    text = "\n".join(out) + "\n"

    def sub(m):
        name = m.group(1)
        if name not in values:
            raise NginxError("nginx.conf.in: no value for @%s@" % name)
        return str(values[name])

    # comment lines are left alone, so they may mention @NAME@ freely
    text = "\n".join(
        line if line.lstrip().startswith("#")
        else re.sub(r"@([A-Z_]+)@", sub, line)
        for line in text.split("\n"))
    return re.sub(r"\n\s*\n(\s*\n)+", "\n\n", text)


def assert_config(workdir, module_so, extra_http, error=None,
                  sanitize=False):
    """nginx -t on the harness's configuration with extra_http in http{}:
    accepted when error is None, else refused with error in nginx's
    message."""
    n = Nginx(workdir, module_so, sanitize=sanitize, extra_http=extra_http)
    n.render_conf()
    r = n.config_test()
    if error is None:
        assert r.returncode == 0, r.stderr
    else:
        assert r.returncode != 0, r.stderr
        assert error in r.stderr, r.stderr


class Nginx:
    """nginx master + workers in their own session, prefix = workdir."""

    def __init__(self, workdir, module_so, http_port=None, ldap=None,
                 mariadb=None, extra_http="", tls=False, workers=2,
                 sanitize=False, extra_main="", extra_server="",
                 log_level="info", domain=DOMAIN, plaintext_auth=None,
                 xmpp_port=None, xmpps_port=None, extra_stream=""):
        self.workdir = os.path.abspath(workdir)
        self.module_so = os.path.abspath(module_so) if module_so else None
        self.port = http_port or free_port()
        # XMPP over TCP: STARTTLS and direct TLS (XEP-0368)
        self.xmpp_port = xmpp_port or free_port()
        self.xmpps_port = xmpps_port or free_port()
        # one more free port for a listener a test adds (@EXTRA_PORT@)
        self.extra_port = free_port()
        self.extra_stream = extra_stream
        self.ldap = ldap
        self.mariadb = mariadb
        self.extra_http = extra_http
        self.extra_main = extra_main
        self.extra_server = extra_server
        self.tls = tls
        # SASL PLAIN over plain ws is for loopback tests only
        self.plaintext_auth = (not tls) if plaintext_auth is None \
            else plaintext_auth
        self.workers = workers
        self.sanitize = sanitize
        self.log_level = log_level
        self.domain = domain
        self.conf_path = os.path.join(self.workdir, "conf", "nginx.conf")
        self.error_log_path = os.path.join(self.workdir, "logs", "error.log")
        self.stderr_path = os.path.join(self.workdir, "logs", "stderr.log")
        self.cert = os.path.join(self.workdir, "conf", "cert.pem")
        self.key = os.path.join(self.workdir, "conf", "key.pem")
        self.proc = None
        self.pid = None
        self.timings = {}
        self._stop_problems = []
        # regexes of [alert] lines a test caused on purpose (expect_alert)
        self.expected_alerts = []

    # urls

    @property
    def http_port(self):
        return self.port

    @property
    def base_url(self):
        return "%s://127.0.0.1:%d" % ("https" if self.tls else "http",
                                      self.port)

    @property
    def ws_url(self):
        return "%s://127.0.0.1:%d/xmpp-websocket" % (
            "wss" if self.tls else "ws", self.port)

    @property
    def status_url(self):
        return self.base_url + "/conclave-status"

    # configuration

    def _ldap_uri(self):
        if self.ldap is not None:
            return self.ldap.uri
        # no directory: a port nobody listens on, so binds fail fast
        return "ldap://127.0.0.1:%d" % free_port()

    def values(self):
        v = {
            "PREFIX": self.workdir,
            "MODULE_SO": self.module_so or "",
            "WORKERS": self.workers,
            "LOG_LEVEL": self.log_level,
            "PORT": self.port,
            "XMPP_PORT": self.xmpp_port,
            "XMPPS_PORT": self.xmpps_port,
            "EXTRA_PORT": self.extra_port,
            "DOMAIN": self.domain,
            "WEBCLIENT": WEBCLIENT,
            "ADMINWEB": ADMINWEB,
            "LDAP_URI": self._ldap_uri(),
            "LDAP_BIND_DN": getattr(self.ldap, "service_dn",
                                    slapd.SERVICE_DN),
            "LDAP_BASE": getattr(self.ldap, "people", slapd.PEOPLE),
            "LDAP_GROUP": getattr(self.ldap, "signin_group_dn",
                                  slapd.SIGNIN_GROUP_DN),
            # Slapd(tls=True): for extra_http lines that use TLS
            "LDAPS_URI": (self.ldap.ldaps_uri
                          if getattr(self.ldap, "ldaps_port", None)
                          else ""),
            "LDAP_CA_FILE": getattr(self.ldap, "ca_file", ""),
            "LDAP_WRONG_CA_FILE": getattr(self.ldap, "wrong_ca_file", ""),
            # no MariaDB: a port nobody listens on (shipping then waits)
            "MARIADB_PORT": self.mariadb.port if self.mariadb
            else self._no_db_port(),
            "MARIADB_SOCKET": self.mariadb.socket if self.mariadb else "",
            "MARIADB_USER": self.mariadb.user if self.mariadb
            else "conclave",
            "MARIADB_PASSWORD": self.mariadb.password if self.mariadb
            else "",
            "MARIADB_DATABASE": self.mariadb.database if self.mariadb
            else "conclave",
        }
        return v

    def _no_db_port(self):
        if not hasattr(self, "_free_db_port"):
            self._free_db_port = free_port()
        return self._free_db_port

    @property
    def audit_dir(self):
        return os.path.join(self.workdir, "audit")

    @property
    def audit_key(self):
        return os.path.join(self.workdir, "conf", "audit.key")

    def render_conf(self):
        """Write conf/nginx.conf (and ldap.secret, the TLS cert)."""
        for d in ("conf", "logs", "tmp"):
            os.makedirs(os.path.join(self.workdir, d), exist_ok=True)
        values = self.values()
        tags = {"module": self.module_so is not None, "tls": self.tls,
                "plain": not self.tls, "root": os.geteuid() == 0,
                "plaintext_auth": self.plaintext_auth}
        # the extra blocks may use the same @NAME@ placeholders
        values["EXTRA_MAIN"] = render(self.extra_main, values, tags)
        values["EXTRA_HTTP"] = render(self.extra_http, values, tags)
        values["EXTRA_SERVER"] = render(self.extra_server, values, tags)
        values["EXTRA_STREAM"] = render(self.extra_stream, values, tags)
        overridden = _conclave_directives(
            self.extra_main + self.extra_http + self.extra_server
            + self.extra_stream)
        with open(TEMPLATE) as f:
            text = render(f.read(), values, tags, overridden)
        secret = os.path.join(self.workdir, "conf", "ldap.secret")
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            # no trailing newline: the file holds exactly the password
            f.write(getattr(self.ldap, "service_pw", slapd.SERVICE_PW))
        db_secret = os.path.join(self.workdir, "conf", "db.secret")
        fd = os.open(db_secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.mariadb.password if self.mariadb else "")
        os.makedirs(self.audit_dir, exist_ok=True)
        if not os.path.exists(self.audit_key):
            # the signing key outlives restarts, like the journal
            subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519",
                            "-out", self.audit_key], check=True,
                           stdout=subprocess.DEVNULL)
            os.chmod(self.audit_key, 0o600)
        if (self.tls or self.module_so) and not (
                os.path.exists(self.cert) and os.path.exists(self.key)):
            # the stream listeners (STARTTLS, direct TLS) always need one
            self_signed_cert(self.cert, self.key, self.domain)
        with open(self.conf_path, "w") as f:
            f.write(text)
        return text

    def metric(self, name, **labels):
        """The value of one sample of /metrics: the series of that name
        whose labels are exactly `labels`; AssertionError if absent."""
        ctx = None
        if self.tls:
            # the harness's certificate is self-signed
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        with urllib.request.urlopen(self.base_url + "/metrics", timeout=10,
                                    context=ctx) as r:
            text = r.read().decode()
        for line in text.splitlines():
            m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$",
                         line)
            if m and m.group(1) == name and \
                    dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or "")) \
                    == {k: str(v) for k, v in labels.items()}:
                return int(float(m.group(3)))
        raise AssertionError("%s%r not in /metrics" % (name, labels))

    def config_test(self):
        """nginx -t on the rendered configuration (render_conf() first):
        the CompletedProcess, its stderr the verdict."""
        return subprocess.run([NGINX, "-t", "-p", self.workdir + "/", "-c",
                               "conf/nginx.conf"], env=self.env(),
                              capture_output=True, text=True, timeout=60)

    def env(self):
        env = dict(os.environ)
        if not self.sanitize:
            return env
        logs = os.path.join(self.workdir, "logs")
        env["LD_PRELOAD"] = asan_runtime()
        # caller options first: log_path must stay ours so that reports
        # land in files check_logs() reads
        env["ASAN_OPTIONS"] = ":".join(filter(None, [
            "detect_leaks=0", "abort_on_error=1", "halt_on_error=1",
            os.environ.get("ASAN_OPTIONS", ""),
            "log_path=" + os.path.join(logs, "asan")]))
        env["UBSAN_OPTIONS"] = ":".join(filter(None, [
            "print_stacktrace=1", "halt_on_error=1",
            os.environ.get("UBSAN_OPTIONS", ""),
            "log_path=" + os.path.join(logs, "ubsan")]))
        return env

    # lifecycle

    def start(self, timeout=30.0):
        if self.running():
            raise NginxError("nginx already running, pid %d" % self.pid)
        t0 = time.monotonic()
        self.render_conf()
        self._check_port_free()
        args = [NGINX, "-p", self.workdir + "/", "-c", "conf/nginx.conf",
                "-g", "daemon off;"]
        out = open(self.stderr_path, "ab")
        try:
            # own session (setsid): survives the demo CLI, and a ^C in
            # the caller's terminal does not reach it
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                env=self.env(), start_new_session=True, close_fds=True)
        finally:
            out.close()
        self.pid = self.proc.pid
        self._wait_ready(timeout)
        self.timings = {"start": time.monotonic() - t0}
        return self

    def stop(self, timeout=10.0):
        """Graceful stop: QUIT to the master, KILL after timeout.

        A master that needs the KILL is recorded as a problem for
        check_logs(): graceful shutdown must finish on its own.
        """
        if self.pid is None:
            return None
        workers = self.worker_pids()
        rc = stop_pid(self.pid, signal.SIGQUIT, timeout, self.proc)
        if rc is False:
            self._stop_problems.append(
                "nginx master %d did not exit within %.0fs of SIGQUIT;"
                " killed" % (self.pid, timeout))
        for w in workers:
            if pid_alive(w) and "nginx" in pid_cmdline(w):
                self._stop_problems.append(
                    "nginx worker %d outlived its master; killed" % w)
                stop_pid(w, signal.SIGKILL, 5)
        self.proc = None
        self.pid = None
        return rc

    def reload(self, timeout=30.0):
        """HUP the master and wait for a new set of workers."""
        old = set(self.worker_pids())
        os.kill(self.pid, signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = set(self.worker_pids())
            if len(now - old) >= self.workers:
                return
            if not self.running():
                raise NginxError("nginx exited on reload:\n"
                                 + self.error_log()[-3000:])
            time.sleep(0.05)
        raise NginxError("no new workers %.0fs after reload" % timeout)

    def running(self):
        if self.proc is not None:
            return self.proc.poll() is None
        return self.pid is not None and pid_alive(self.pid)

    def worker_pids(self):
        """PIDs of the master's worker processes (children by ppid)."""
        if self.pid is None:
            return []
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % entry) as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[1]) == self.pid and fields[0] not in ("Z", "X") \
                    and "worker process" in pid_cmdline(int(entry)):
                pids.append(int(entry))
        return sorted(pids)

    # logs

    def error_log(self):
        try:
            with open(self.error_log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def expect_alert(self, pattern):
        """A test that provokes an alert on purpose (killing a worker)
        declares it, so that only that line is let through."""
        self.expected_alerts.append(pattern)

    def check_logs(self):
        """Problems found in the logs: [alert]/[emerg] lines, sanitizer
        reports, and a master that had to be killed.  [] means clean."""
        problems = list(self._stop_problems)
        for line in self.error_log().splitlines():
            if "[alert]" in line or "[emerg]" in line:
                if any(re.search(p, line) for p in self.expected_alerts):
                    continue
                problems.append("error.log: " + line)
        logs = os.path.join(self.workdir, "logs")
        for path in sorted(glob.glob(os.path.join(logs, "asan*"))
                           + glob.glob(os.path.join(logs, "ubsan*"))):
            with open(path, errors="replace") as f:
                text = f.read()
            problems.append("sanitizer report %s:\n%s" % (path, text[:4000]))
        # reports that missed log_path end up on stderr, which nginx
        # points at error.log once it has opened it
        for path in (self.stderr_path, self.error_log_path):
            try:
                with open(path, errors="replace") as f:
                    text = f.read()
            except FileNotFoundError:
                continue
            for pat in ("runtime error:", "ERROR: AddressSanitizer",
                        "ERROR: LeakSanitizer"):
                i = text.find(pat)
                if i >= 0:
                    excerpt = text[max(0, i - 200):i + 2000]
                    problems.append("%s: %s" % (os.path.basename(path),
                                                excerpt))
        return problems

    # internals

    def _check_port_free(self):
        # reuseport would let a second nginx share a busy port silently
        ports = [self.port]
        if self.module_so:
            ports += [self.xmpp_port, self.xmpps_port]
        for port in ports:
            s = socket.socket()
            # SO_REUSEADDR, as nginx sets it: TIME_WAIT left by earlier
            # clients is fine, a live listener still fails the bind
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError as e:
                raise NginxError("127.0.0.1:%d is in use: %s" % (port, e))
            finally:
                s.close()

    def _port_open(self):
        # LISTEN in /proc/net/tcp rather than a probe connection, which
        # would log "client closed connection" lines at info
        want = ":%04X" % self.port
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[1] == "0100007F" + want and fields[3] == "0A":
                    return True
        return False

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.proc = None
                self.pid = None
                raise NginxError("nginx exited with %s:\n%s\n%s" % (
                    rc, self._read(self.stderr_path)[-3000:],
                    self.error_log()[-3000:]))
            if self._port_open() and len(self.worker_pids()) >= self.workers:
                return
            # a worker that crashes at start is respawned forever: fail
            # now, with the first reports rather than the last log lines
            problems = self.check_logs()
            if problems:
                self.stop(5)
                raise NginxError("nginx workers fail at start:\n%s"
                                 % "\n".join(p[:1500] for p in problems[:3]))
            if time.monotonic() > deadline:
                self.stop(5)
                raise NginxError("nginx not ready after %.0fs:\n%s"
                                 % (timeout, self.error_log()[-3000:]))
            time.sleep(0.02)

    @staticmethod
    def _read(path):
        try:
            with open(path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def __repr__(self):
        return "<Nginx %s pid=%s %s>" % (self.base_url, self.pid,
                                         self.workdir)
