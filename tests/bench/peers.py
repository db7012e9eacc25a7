"""The other servers run_bench.py measures Conclave against (issue 4).

    Ejabberd   Debian's ejabberd 23.01: XMPP over TCP (ejabberd_c2s,
               plaintext and direct TLS) and over WebSocket (RFC 7395)
    Prosody    Debian's prosody 0.12: c2s (plaintext and direct TLS)
               and mod_websocket
    Relay      tests/bench/relay.c: the physical ceiling (no XMPP at all),
               over TCP with --raw (no HTTP upgrade)

Each is a private instance: its own config and data in a subdirectory
of the runner's temp dir, free loopback ports, started as a child of
the runner in its own session (a ^C in the terminal reaches only the
runner, which then stops it) under `taskset -c <server CPUs>`, and
stopped by the PID it was started with.  The system services and
/etc/ejabberd, /etc/prosody are never used.  The settings, and why each
one differs from the package's default, are in docs/benchmarks.md; keep
the two in step.

Every target has the interface run_bench.Target describes: start,
restart (a fresh server process with the same users), stop, add_users,
url, server_pids, log_mark/log_report, problems, describe.
"""

import collections
import glob
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))

from mariadb import pid_alive, stop_pid  # noqa: E402
from ports import free_port  # noqa: E402

DOMAIN = "example.com"
ERL = "/usr/bin/erl"
EJABBERD_LIBS = "/usr/lib/x86_64-linux-gnu"
PROSODY = "/usr/bin/prosody"


class SetupError(Exception):
    pass


def transport_name(args):
    """The loadgen's transport column: tcp, tls, ws or wss."""
    if args.transport == "tcp":
        return "tls" if args.tls else "tcp"
    return "wss" if args.tls else "ws"


def make_cert(directory):
    """A self-signed certificate for example.com (the loadgen does not
    verify it, as with the appliance's)."""
    crt = os.path.join(directory, DOMAIN + ".crt")
    key = os.path.join(directory, DOMAIN + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                    "-nodes", "-days", "30", "-subj", "/CN=" + DOMAIN,
                    "-addext", "subjectAltName=DNS:" + DOMAIN,
                    "-keyout", key, "-out", crt],
                   check=True, capture_output=True)
    return crt, key


def descendants(pid):
    """pid's children, grandchildren...: from /proc/PID/task/*/children."""
    out = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir("/proc/%d/task" % p)
        except OSError:
            continue
        for t in tasks:
            try:
                with open("/proc/%d/task/%s/children" % (p, t)) as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def wait_port(port, proc, timeout, what, log_path=None):
    """Until 127.0.0.1:port accepts, proc has exited, or timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return
        except OSError:
            time.sleep(0.1)
    tail = ""
    if log_path and os.path.exists(log_path):
        with open(log_path, errors="replace") as f:
            tail = f.read()[-2000:]
    raise SetupError("%s did not listen on 127.0.0.1:%d within %.0f s "
                     "(exit %s)\n%s" % (what, port, timeout, proc.poll(),
                                        tail))


def version_of(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg],
                       capture_output=True, text=True)
    return r.stdout.strip() or "?"


class Peer:
    """Common parts: one server process tree started and stopped by PID."""

    name = "?"
    proto = "xmpp"
    muc = False
    stop_signal = signal.SIGTERM
    stop_timeout = 30.0

    def __init__(self, args, workdir):
        self.args = args
        self.dir = os.path.join(workdir, self.name)
        os.makedirs(self.dir)
        self.port = free_port()          # http (WebSocket)
        self.c2s_port = free_port()      # XMPP over TCP, plaintext
        self.c2s_tls_port = free_port()  # XMPP over TCP, direct TLS
        self.proc = None
        self.pid = None
        self.users_file = os.path.join(self.dir, "users.txt")
        self.stdout_path = os.path.join(self.dir, "stdout.log")
        self._problems = []
        self.muc_on = False

    # what a subclass provides
    def command(self):
        raise NotImplementedError

    def environ(self):
        return dict(os.environ)

    def log_path(self):
        return self.stdout_path

    def ready(self, timeout):
        wait_port(self.url_port(), self.proc, timeout, self.name,
                  self.log_path())

    def url_port(self):
        if self.args.transport == "ws":
            return self.port
        return self.c2s_tls_port if self.args.tls else self.c2s_port

    # the process
    def taskset(self):
        cpus = self.args.server_cpus
        return ["taskset", "-c", cpus] if cpus else []

    def start_server(self, timeout=60.0):
        out = open(self.stdout_path, "ab")
        try:
            self.proc = subprocess.Popen(
                self.taskset() + self.command(), cwd=self.dir,
                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                env=self.environ(), start_new_session=True, close_fds=True)
        finally:
            out.close()
        self.pid = self.proc.pid
        try:
            self.ready(timeout)
        except BaseException:
            self.stop_server()
            raise

    def stop_server(self):
        if self.pid is None:
            return
        kids = descendants(self.pid)
        rc = stop_pid(self.pid, self.stop_signal, self.stop_timeout,
                      self.proc)
        if rc is False:
            self._problems.append("%s %d did not exit within %.0f s of %s;"
                                  " killed" % (self.name, self.pid,
                                               self.stop_timeout,
                                               self.stop_signal.name))
        # helpers of ours that outlived the server (erl_child_setup)
        for k in kids:
            if pid_alive(k):
                stop_pid(k, signal.SIGKILL, 5)
        self.proc = None
        self.pid = None

    def prepare(self, scenario):
        """Before each run's restart: the configuration for scenario.
        The MUC service and its archive are loaded for muc-fanout runs
        only, so they add nothing to the 1:1 and sign-in figures."""
        muc = scenario == "muc-fanout"
        if muc != self.muc_on:
            self.muc_on = muc
            self.write_config()

    def start(self):
        self.start_server()

    def restart(self):
        self.stop_server()
        self.start_server()

    def stop(self):
        self.stop_server()

    def url(self):
        if self.args.transport == "ws":
            return "%s://127.0.0.1:%d/xmpp-websocket" % (
                "wss" if self.args.tls else "ws", self.port)
        return "%s://127.0.0.1:%d" % ("tls" if self.args.tls else "tcp",
                                      self.url_port())

    def server_pids(self):
        if self.pid is None:
            return []
        return [self.pid] + descendants(self.pid)

    def aux_pids(self):
        return []

    def db_pids(self):
        return []

    def backlog(self):
        return 0

    def audit_breakdown(self):
        # no audit journal: run_bench.Target's None
        return None

    def write_users_file(self, uids):
        with open(self.users_file, "w") as f:
            f.write("\n".join(uids) + "\n")

    # logs: lines at warning or worse since a byte offset
    level_re = re.compile(r"\b(warn|warning|error|crit|critical|alert|"
                          r"emergency)\b", re.I)

    def log_mark(self):
        try:
            return os.path.getsize(self.log_path())
        except FileNotFoundError:
            return 0

    def log_report(self, mark):
        counts = collections.Counter()
        try:
            with open(self.log_path(), errors="replace") as f:
                f.seek(mark or 0)
                for line in f:
                    if not self.level_re.search(line):
                        continue
                    key = re.sub(r"\d+", "N", line.strip())
                    key = re.sub(r"<0\.N\.N>|c2sN?[0-9a-f]+", "X", key)
                    counts[key[:160]] += 1
        except FileNotFoundError:
            pass
        return [], ["%6d x %s" % (n, k) for k, n in counts.most_common(8)]

    def problems(self):
        return list(self._problems)


class Ejabberd(Peer):
    """ejabberd 23.01 from Debian: beam.smp run directly (not through
    ejabberdctl, which would su to the ejabberd user and read
    /etc/ejabberd), as root, with mnesia in our spool directory.

    Erlang distribution runs without epmd (-erl_epmd_port with
    -start_epmd false, OTP 23+): the node listens on a free loopback
    port of its own, so no shared epmd on 4369 is started or used, and
    the only processes are beam.smp and its erl_child_setup.  The users
    are registered by one hidden Erlang node that calls
    ejabberd_auth:try_register over that port (see add_users)."""

    name = "ejabberd"
    muc = True

    def __init__(self, args, workdir):
        super().__init__(args, workdir)
        self.dist_port = free_port()
        self.node = "bench%d@localhost" % self.port
        self.cookie = secrets.token_hex(16)
        self.conf = os.path.join(self.dir, "ejabberd.yml")
        self.spool = os.path.join(self.dir, "spool")
        self.logs = os.path.join(self.dir, "logs")
        os.makedirs(self.spool)
        os.makedirs(self.logs)
        self.crt, self.key = make_cert(self.dir)
        with open(self.crt) as c, open(self.key) as k, \
                open(os.path.join(self.dir, "cert.pem"), "w") as f:
            f.write(c.read() + k.read())
        with open(os.path.join(self.dir, "inetrc"), "w") as f:
            f.write('{lookup,["file","native"]}.\n'
                    '{host,{127,0,0,1}, ["localhost"]}.\n')
        self.write_config()

    def write_config(self):
        # keep in step with docs/benchmarks.md, "Server settings"
        with open(self.conf, "w") as f:
            f.write("""\
# private ejabberd for tests/bench (written by peers.py)
hosts:
  - %(domain)s
loglevel: warning
log_rotate_count: 0
auth_method: internal
auth_password_format: plain
certfiles:
  - "%(dir)s/cert.pem"
listen:
  -
    port: %(port)d
    ip: "127.0.0.1"
    module: ejabberd_http
    backlog: 511
    request_handlers:
      /xmpp-websocket: ejabberd_http_ws
  -
    port: %(c2s)d
    ip: "127.0.0.1"
    module: ejabberd_c2s
    backlog: 511
    max_stanza_size: 262144
    shaper: c2s_shaper
    access: c2s
  -
    port: %(c2s_tls)d
    ip: "127.0.0.1"
    module: ejabberd_c2s
    backlog: 511
    tls: true
    max_stanza_size: 262144
    shaper: c2s_shaper
    access: c2s
acl:
  local:
    user_regexp: ""
access_rules:
  c2s:
    allow: all
shaper_rules:
  c2s_shaper: none
  max_user_sessions: 16
modules:
  mod_disco: {}
""" % {"domain": DOMAIN, "port": self.port, "dir": self.dir,
       "c2s": self.c2s_port, "c2s_tls": self.c2s_tls_port})
            if self.muc_on:
                f.write(self.muc_config())

    def muc_config(self):
        """mod_muc on conference.example.com, rooms archived by mod_mam
        in mnesia (ejabberd's internal db), as Conclave records every
        room message; muc-fanout runs only (see prepare)."""
        n = max(self.args.muc_occupants + [1000])
        return """\
  mod_muc:
    host: "conference.@HOST@"
    access_create: all
    history_size: 20
    max_users: %(n)d
    max_users_presence: %(n)d
    default_room_options:
      max_users: %(n)d
      mam: true
  mod_mam:
    db_type: mnesia
    default: never
""" % {"n": n}

    def log_path(self):
        return os.path.join(self.logs, "ejabberd.log")

    def environ(self):
        env = dict(os.environ)
        env.update({
            "EJABBERD_CONFIG_PATH": self.conf,
            "EJABBERD_LOG_PATH": self.log_path(),
            "ERL_LIBS": EJABBERD_LIBS,
            "ERL_INETRC": os.path.join(self.dir, "inetrc"),
            "ERL_CRASH_DUMP": os.path.join(self.logs, "erl_crash.dump"),
            "ERL_MAX_PORTS": "65536",
            "HOME": self.dir,
        })
        return env

    def dist_args(self):
        return ["-setcookie", self.cookie,
                "-kernel", "inet_dist_use_interface", "{127,0,0,1}",
                "-erl_epmd_port", str(self.dist_port),
                "-start_epmd", "false"]

    def command(self):
        # the options ejabberdctl's "foreground" passes, less epmd
        return [ERL, "-sname", self.node, "-noinput",
                "+K", "true", "+P", "250000", "+Q", "65536",
                "-env", "ERL_CRASH_DUMP_BYTES", "0"] + self.dist_args() + [
                "-mnesia", "dir", '"%s"' % self.spool, "-s", "ejabberd"]

    def ctl_eval(self, expr, timeout=300):
        """Run expr in a hidden node connected to ours."""
        cmd = [ERL, "-sname", "ctl%d@localhost" % self.port, "-hidden",
               "-noinput", "-dist_listen", "false"] + self.dist_args() + [
               "-eval", expr]
        return subprocess.run(cmd, capture_output=True, text=True,
                              env=self.environ(), cwd=self.dir,
                              timeout=timeout)

    def add_users(self, n):
        """One hidden node registers all n users through
        ejabberd_auth:try_register (10,000 in about 6 s here).
        `ejabberdctl register` starts a whole Erlang VM per user: 0.29 s
        per user measured, and no faster with 8 in parallel on these 2
        CPUs (0.32 s per user), so 10,000 users would take 48 minutes."""
        uids = ["bench%d" % i for i in range(1, n + 1)]
        self.write_users_file(uids)
        expr = """
N = '%s',
{ok, B} = file:read_file("%s"),
Us = [U || U <- binary:split(B, <<"\\n">>, [global]), U =/= <<>>],
R = [rpc:call(N, ejabberd_auth, try_register,
              [U, <<"%s">>, <<U/binary, "-pw">>]) || U <- Us],
Bad = [X || X <- R, X =/= ok, X =/= {error, exists}],
io:format("registered ~p, failed ~p: ~p~n",
          [length(R) - length(Bad), length(Bad), lists:sublist(Bad, 3)]),
halt(case Bad of [] -> 0; _ -> 1 end).
""" % (self.node, self.users_file, DOMAIN)
        r = self.ctl_eval(expr)
        if r.returncode != 0:
            raise SetupError("ejabberd: registering users failed:\n%s%s"
                             % (r.stdout[-2000:], r.stderr[-2000:]))
        return self.users_file

    def describe(self):
        return ("ejabberd %s (Erlang/OTP erts %s, 1 node%s, %s, "
                "internal auth, plain passwords)" % (
                    version_of("ejabberd"), version_of("erlang-base"),
                    ", pinned to CPU " + self.args.server_cpus
                    if self.args.server_cpus else "",
                    transport_name(self.args)))


class Prosody(Peer):
    """Prosody 0.12 from Debian, one lua5.4 process (-F, foreground)."""

    name = "prosody"
    muc = True

    def __init__(self, args, workdir):
        super().__init__(args, workdir)
        self.conf = os.path.join(self.dir, "prosody.cfg.lua")
        self.data = os.path.join(self.dir, "data")
        os.makedirs(os.path.join(self.dir, "certs"))
        self.crt, self.key = make_cert(os.path.join(self.dir, "certs"))
        self.accounts = os.path.join(
            self.data, DOMAIN.replace(".", "%2e"), "accounts")
        os.makedirs(self.accounts)
        self.write_config()

    def write_config(self):
        # keep in step with docs/benchmarks.md, "Server settings"
        d = self.dir
        with open(self.conf, "w") as f:
            f.write("""\
-- private prosody for tests/bench (written by peers.py)
run_as_root = true
pidfile = "%(d)s/prosody.pid"
data_path = "%(d)s/data"
certificates = "%(d)s/certs"
log = { warn = "%(d)s/prosody.log" }
admins = {}
modules_enabled = { "saslauth", "disco", "websocket" }
modules_disabled = { "offline", "s2s" }
authentication = "internal_plain"
storage = "internal"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
consider_websocket_secure = true
network_settings = { tcp_backlog = 511; nagle = false }
c2s_ports = { %(c2s)d }
c2s_interfaces = { "127.0.0.1" }
c2s_direct_tls_ports = { %(c2s_tls)d }
c2s_direct_tls_interfaces = { "127.0.0.1" }
c2s_direct_tls_ssl = { certificate = "%(crt)s"; key = "%(key)s" }
s2s_ports = {}
http_ports = { %(http)d }
http_interfaces = { "127.0.0.1" }
https_ports = {}
VirtualHost "%(domain)s"
""" % {"d": d, "c2s": self.c2s_port, "http": self.port,
                "c2s_tls": self.c2s_tls_port, "crt": self.crt,
                "key": self.key, "domain": DOMAIN})
            if self.muc_on:
                f.write(self.muc_config())

    def muc_config(self):
        """The MUC component, rooms archived by mod_muc_mam in the
        internal storage (files), as Conclave records every room
        message; muc-fanout runs only (see prepare).  The archive's
        item limit (10,000 per room by default, then it truncates and
        rewrites the file every 100 messages) is lifted: Conclave keeps
        every record."""
        return """\
Component "conference.%(domain)s" "muc"
    modules_enabled = { "muc_mam" }
    muc_room_default_history_length = 20
    storage_archive_item_limit = 1000000000
""" % {"domain": DOMAIN}

    def prepare(self, scenario):
        super().prepare(scenario)
        # every run's room starts with an empty archive, not the one the
        # previous run left (the first append loads the whole file)
        if self.muc_on:
            shutil.rmtree(os.path.join(self.data, "conference%2e"
                                       + DOMAIN.replace(".", "%2e")),
                          ignore_errors=True)

    def log_path(self):
        return os.path.join(self.dir, "prosody.log")

    def command(self):
        return [PROSODY, "-F", "--config", self.conf]

    def add_users(self, n):
        """internal_plain's account files, written directly (10,000 in
        about 2 s here); `prosodyctl register` took 21 ms per user, so
        10,000 would take 3.5 minutes."""
        uids = ["bench%d" % i for i in range(1, n + 1)]
        for u in uids:
            with open(os.path.join(self.accounts, u + ".dat"), "w") as f:
                f.write('return {\n\t["password"] = "%s-pw";\n};\n' % u)
        self.write_users_file(uids)
        return self.users_file

    def describe(self):
        return ("prosody %s (lua5.4, server_epoll%s, %s, internal_plain)"
                % (version_of("prosody"),
                   ", pinned to CPU " + self.args.server_cpus
                   if self.args.server_cpus else "",
                   transport_name(self.args)))


class Relay(Peer):
    """tests/bench/relay.c, built into build/bench/relay."""

    name = "relay"
    proto = "relay"
    stop_timeout = 10.0

    def __init__(self, args, workdir, binary):
        super().__init__(args, workdir)
        self.binary = binary

    def command(self):
        # over TCP the relay's port is c2s_port, and it does no upgrade
        if self.args.transport == "tcp":
            return [self.binary, "--listen", "127.0.0.1:%d" % self.c2s_port,
                    "--raw"]
        return [self.binary, "--listen", "127.0.0.1:%d" % self.port]

    def url_port(self):
        return self.c2s_port if self.args.transport == "tcp" else self.port

    def url(self):
        if self.args.transport == "tcp":
            return "tcp://127.0.0.1:%d" % self.c2s_port
        return "ws://127.0.0.1:%d/xmpp-websocket" % self.port

    def add_users(self, n):
        self.write_users_file(["bench%d" % i for i in range(1, n + 1)])
        return self.users_file

    def describe(self):
        return "relay (tests/bench/relay.c, 1 process%s, %s, no XML)" % (
            ", pinned to CPU " + self.args.server_cpus
            if self.args.server_cpus else "",
            "tcp --raw" if self.args.transport == "tcp" else "ws")


def available(name):
    """None if the peer can run here, else what is missing."""
    need = {"ejabberd": [ERL, os.path.join(EJABBERD_LIBS, "ejabberd-*")],
            "prosody": [PROSODY]}.get(name, [])
    for path in need:
        if not glob.glob(path):
            return "%s not installed (make bench-deps)" % path
    return None
