#!/usr/bin/python3
"""Conclave benchmark runner (issue 4): measures, never asserts.

    run_bench.py [--target conclave,ejabberd,prosody,relay]
                 [--scenarios idle,chat-saturation,...]
                 [--idle-sessions 1000,10000] [--rates 1000,5000] ...

Builds tests/bench/loadgen.c into build/bench/loadgen (and relay.c into
build/bench/relay), starts a private server for each target (for
conclave: slapd + mariadbd + nginx with build/release/
ngx_http_conclave_module.so, from tests/lib; ejabberd, prosody and the
relay: see peers.py), adds the same bench users to each, and runs each
scenario with the same load generator.  Every run gets a freshly
started server process, so one scenario's leftovers (freed heap, warm
caches) do not flatter the next.  The targets take turns run by run
(scenario, size, repeat, then target), so a change in the shared
machine's load hits all of them alike.

The load generator samples the server's processes itself (/proc/PID/stat
and smaps_rollup of the PIDs the target names) at the exact phase
boundaries, and prints one row per run; this runner collects the rows
into build/bench/results/bench-<date>.csv and prints a summary table
with the median of --repeat runs and, with more than one target, the
ratio Conclave/peer of each figure.  --plots DIR renders PNGs with
gnuplot.

A target is a class with start/stop/restart, the WebSocket URL, the users
file and the PIDs to measure (Target below; the peers in peers.py).
Exit status: 0 when every run was clean, 1 when any run reported
failures or a server logged an [alert]/[emerg], 2 on a setup error.
"""

import argparse
import collections
import copy
import csv
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))
sys.path.insert(0, HERE)

import peers  # noqa: E402

BUILD = os.path.join(REPO, "build", "bench")
LOADGEN_SRCS = [os.path.join(HERE, f)
                for f in ("loadgen.c", "loadgen_report.c", "loadgen_xmpp.c",
                          "loadgen_muc.c")]
LOADGEN_DEPS = LOADGEN_SRCS + [os.path.join(HERE, "loadgen.h")]
LOADGEN = os.path.join(BUILD, "loadgen")
RELAY_SRC = os.path.join(HERE, "relay.c")
RELAY = os.path.join(BUILD, "relay")

SCENARIOS = ("idle", "chat-saturation", "chat-fixed-rate", "login",
             "muc-fanout")
MUC_ROOM = "bench@conference.example.com"


def build(out, srcs, deps, libs):
    os.makedirs(BUILD, exist_ok=True)
    if os.path.exists(out) and os.path.getmtime(out) >= max(
            os.path.getmtime(f) for f in deps):
        return
    cmd = ["cc", "-O2", "-g", "-Wall", "-Wextra", "-o", out] + srcs + libs
    print("+ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def build_loadgen():
    build(LOADGEN, LOADGEN_SRCS, LOADGEN_DEPS, ["-lssl", "-lcrypto"])


def build_relay():
    build(RELAY, [RELAY_SRC], [RELAY_SRC], ["-lcrypto"])


def cpu_mask(cpu):
    return format(1 << cpu, "b")


def nginx_error_summary(path, since=0):
    """[warn] and worse lines of error.log from byte offset since,
    counted by message with numbers and addresses masked."""
    counts = collections.Counter()
    examples = {}
    try:
        with open(path, errors="replace") as f:
            f.seek(since)
            for line in f:
                m = re.search(r"\[(warn|error|crit|alert|emerg)\] "
                              r"\d+#\d+: (?:\*\d+ )?(.*)", line)
                if not m:
                    continue
                msg = re.sub(r"\d+", "N", m.group(2))
                msg = re.sub(r", client: .*", "", msg)[:160]
                key = "[%s] %s" % (m.group(1), msg)
                counts[key] += 1
                examples.setdefault(key, line.strip()[:300])
    except FileNotFoundError:
        pass
    return counts, examples


def fd_hard_limit():
    """The hard RLIMIT_NOFILE: without CAP_SYS_RESOURCE (containers)
    no process here can go beyond it."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 1 << 20 if hard == resource.RLIM_INFINITY else hard


def idle_capacity(target):
    """Sessions the target can hold: a one-process server (ejabberd's
    BEAM, Prosody, the relay) is bound by one process's descriptors."""
    f = getattr(target, "idle_capacity", None)
    return f() if f else fd_hard_limit() - 1024


class Target:
    """What the runner needs of a server under test."""

    name = "?"
    proto = "xmpp"          # loadgen --proto
    muc = False             # has a MUC service on conference.example.com

    def prepare(self, scenario):
        """Before the restart of each run: the server's settings for
        scenario (the peers load their MUC service for muc-fanout only)."""

    def start(self):
        raise NotImplementedError

    def restart(self):
        """A fresh server process with the same data (users)."""
        raise NotImplementedError

    def stop(self):
        raise NotImplementedError

    def add_users(self, n):
        """n users; returns the path of a loadgen users file."""
        raise NotImplementedError

    def url(self):
        raise NotImplementedError

    def server_pids(self):
        """Processes whose CPU and memory are the server's."""
        raise NotImplementedError

    def aux_pids(self):
        """Helpers measured apart (the directory behind sign-in)."""
        return []

    def db_pids(self):
        """The audit database, measured apart: its CPU is the server's
        too, and the comparison shows it (ALL_CPU)."""
        return []

    def log_mark(self):
        return None

    def log_report(self, mark):
        """(problems that fail the run, notable lines to print)."""
        return [], []

    def audit_breakdown(self):
        """{stage: (count, mean, p50, p99, max)} in microseconds, or
        None: the server's own latency histograms for the run."""
        return None

    def backlog(self):
        """Audit records not yet in the database (0: none, or no
        audit store)."""
        return 0

    def describe(self):
        return self.name


class Conclave(Target):
    """nginx + the Conclave module, slapd and mariadbd from tests/lib."""

    name = "conclave"
    muc = True

    def __init__(self, args, workdir):
        from appliance import Appliance  # noqa: E402

        self.args = args
        self.max_sessions = args.max_sessions
        # without CAP_SYS_RESOURCE (containers) the hard limit is final
        hard = fd_hard_limit()
        wc = min(max(4096, self.max_sessions + 1024), hard - 1024)
        self.wc = wc
        main = ["worker_rlimit_nofile %d;" % min(2 * wc + 1024, hard)]
        if args.server_cpus:
            cpus = [int(c) for c in args.server_cpus.split(",")]
            masks = [cpu_mask(cpus[i % len(cpus)])
                     for i in range(args.workers)]
            main.append("worker_cpu_affinity %s;" % " ".join(masks))
        # TLS 1.3 as the package's hardening.conf and
        # stream-hardening.conf have it (nginx 1.22's own default stops
        # at TLS 1.2; ejabberd and Prosody negotiate 1.3)
        tls13 = "ssl_protocols TLSv1.2 TLSv1.3;"
        http = [tls13] + list(args.extra_http)
        if "muc-fanout" in args.scenarios:
            # the point is the fan-out, not the room's flood limit
            http.append("conclave_muc_rate 1000000; "
                        "conclave_muc_queue 100000; "
                        "conclave_muc_max_occupants %d;"
                        % max(args.muc_occupants + [1000]))
        # over TCP the TLS port is the stream module's direct TLS
        # listener (XEP-0368), there in every appliance
        self.app = Appliance(workdir, module_so=args.module,
                             tls=args.tls and args.transport == "ws",
                             workers=args.workers,
                             log_level=args.log_level,
                             extra_main="\n".join(main),
                             extra_http="\n".join(http),
                             extra_stream="\n".join(
                                 [tls13] + list(args.extra_stream)))
        # the audit database sized as an appliance's would be, not as
        # the tests' (64 MB buffer pool, 16 MB redo log): with the
        # tests' sizes mariadbd spent 10.1 us per record at saturation,
        # 7.4 with these (docs/benchmarks.md, session 18)
        self.app.mariadb.extra_args = [
            "--innodb-buffer-pool-size=" + args.mariadb_buffer_pool,
            "--innodb-log-file-size=" + args.mariadb_redo_log]
        self._worker_connections(wc)
        self.users_file = os.path.join(workdir, "users.txt")
        self.nusers = 0

    def _worker_connections(self, n):
        """The template fixes worker_connections at 4096; 10,000 idle
        sessions on 2 workers need more.  Rewrite the rendered file
        rather than the shared harness (tell the lead: a parameter of
        Nginx/Appliance would be cleaner)."""
        nginx = self.app.nginx
        render = nginx.render_conf

        def render_more():
            text = render()
            text, k = re.subn(r"(?m)^(\s*worker_connections\s+)\d+;",
                              r"\g<1>%d;" % n, text)
            if k != 1:
                raise RuntimeError("worker_connections not found in "
                                   "the rendered nginx.conf")
            with open(nginx.conf_path, "w") as f:
                f.write(text)
            return text

        nginx.render_conf = render_more

    def idle_capacity(self):
        # reuseport spreads connections over the workers by hash, not
        # evenly: keep 10% for the imbalance and the workers' own sockets
        return int(self.args.workers * (self.wc - 1024) * 0.9)

    def start(self):
        self.app.start()
        cpus = self.args.mariadb_cpus
        if cpus == "server":
            cpus = self.args.server_cpus
        if cpus:
            # unpinned, the appliance's mariadbd would float onto the
            # load generator's CPU too and slow the client down, which
            # the peers (one process pinned to --server-cpus, its
            # database inside) never do (docs/benchmarks.md, session
            # 19); -a: all its threads
            subprocess.run(["taskset", "-a", "-p", "-c", cpus,
                            str(self.app.mariadb.pid)],
                           check=True, stdout=subprocess.DEVNULL)

    def restart(self):
        self.app.nginx.stop()
        self.app.nginx.start()

    def stop(self):
        self.app.stop()

    def add_users(self, n):
        # ldapmodify runs under a 30 s limit, which 10,000 users missed
        # on a busy machine: add in batches with distinct prefixes
        # (bench1.., bencha1.., ..., benchz1.., benchaa1..)
        uids = []
        batch = 1000
        letters = [chr(ord("a") + i) for i in range(26)]
        prefixes = ["bench"] + ["bench" + a for a in letters] + [
            "bench" + a + b for a in letters for b in letters]
        i = 0
        while len(uids) < n:
            uids += self.app.ldap.add_users(prefixes[i],
                                            min(batch, n - len(uids)))
            i += 1
        with open(self.users_file, "w") as f:
            f.write("\n".join(uids) + "\n")
        self.nusers = n
        return self.users_file

    def url(self):
        if self.args.transport == "ws":
            return self.app.ws_url
        if self.args.tls:
            return "tls://127.0.0.1:%d" % self.app.nginx.xmpps_port
        return "tcp://127.0.0.1:%d" % self.app.nginx.xmpp_port

    def server_pids(self):
        return [self.app.nginx.pid] + self.app.nginx.worker_pids()

    def aux_pids(self):
        return [self.app.ldap.pid]

    def db_pids(self):
        return [self.app.mariadb.pid]

    def audit_breakdown(self):
        """The audit path's stage histograms of conclave_status
        (docs/audit.md, "Latency breakdown"), summed over the workers.
        The server was restarted for this run, so they cover it."""
        st = self._status()
        if st is None:
            return None
        out = {}
        for stage in AUDIT_STAGES:
            buckets = collections.Counter()
            total = 0.0
            mx = 0
            for j in st.get("audit", []):
                h = (j.get("latency_us") or {}).get(stage)
                if not h:
                    continue
                for lo, n in h["buckets"]:
                    buckets[lo] += n
                total += h["mean"] * h["count"]
                mx = max(mx, h["max"])
            out[stage] = hist_figures(buckets, total, mx)
        # how far shipping is behind when the generator stops
        out["backlog"] = self._backlog(st)
        out["lag"] = max([j.get("lag_seconds", 0.0)
                          for j in st.get("audit", [])] or [0.0])
        return out

    def _status(self):
        """conclave_status as JSON, or None."""
        try:
            with urllib.request.urlopen(self.app.status_url,
                                        timeout=10) as r:
                return json.loads(r.read())
        except (OSError, ValueError):
            return None

    @staticmethod
    def _backlog(st):
        return sum(j.get("backlog_records", 0) for j in st.get("audit", []))

    def backlog(self):
        st = self._status()
        return 0 if st is None else self._backlog(st)

    def log_mark(self):
        try:
            return os.path.getsize(self.app.nginx.error_log_path)
        except FileNotFoundError:
            return 0

    def log_report(self, mark):
        counts, examples = nginx_error_summary(
            self.app.nginx.error_log_path, mark or 0)
        lines = ["%6d x %s" % (n, k) for k, n in counts.most_common(12)]
        lines += ["  e.g. " + examples[k]
                  for k, _ in counts.most_common(3)]
        return [], lines

    def problems(self):
        return self.app.check_logs()

    def describe(self):
        v = subprocess.run(["/usr/sbin/nginx", "-v"], capture_output=True,
                           text=True).stderr.strip()
        return "conclave (%s, %d workers%s, %s, module %s%s)" % (
            v, self.args.workers,
            ", pinned to CPU " + self.args.server_cpus
            if self.args.server_cpus else "",
            peers.transport_name(self.args),
            os.path.relpath(self.app.module_so, REPO),
            ", unix dgram qlen %d" % self.args.unix_dgram_qlen
            if self.args.unix_dgram_qlen else "")


def make_relay(args, workdir):
    build_relay()
    return peers.Relay(args, workdir, RELAY)


TARGETS = {"conclave": Conclave, "ejabberd": peers.Ejabberd,
           "prosody": peers.Prosody, "relay": make_relay}


def loadgen_cmd(args, target, scenario, size, csv_path, label):
    cmd = [LOADGEN, "--url", target.url(), "--users", target.users_file,
           "--scenario", scenario, "--target", target.name,
           "--server-pids", ",".join(map(str, target.server_pids())),
           "--csv", csv_path, "--label", label,
           "--payload", str(args.payload), "--proto", target.proto]
    if target.aux_pids():
        cmd += ["--aux-pids", ",".join(map(str, target.aux_pids()))]
    if target.db_pids():
        cmd += ["--db-pids", ",".join(map(str, target.db_pids()))]
    if args.loadgen_cpu is not None:
        cmd += ["--cpu", str(args.loadgen_cpu)]
    if scenario == "idle":
        cmd += ["--sessions", str(size), "--hold", str(args.hold),
                "--ramp", str(args.ramp)]
        if args.settle is not None:
            cmd += ["--settle", str(args.settle)]
        # one generator process holds at most the hard RLIMIT_NOFILE
        procs = -(-size // (fd_hard_limit() - 2048))
        if procs > 1:
            cmd += ["--procs", str(procs)]
        limit = 120 + size / 50 + args.hold
    elif scenario == "chat-saturation":
        cmd += ["--sessions", str(args.chat_sessions),
                "--window", str(size),
                "--duration", str(args.chat_duration)]
        limit = 260 + args.chat_duration  # drain: up to 120 s
    elif scenario == "chat-fixed-rate":
        cmd += ["--sessions", str(args.chat_sessions), "--rate", str(size),
                "--duration", str(args.rate_duration)]
        limit = 260 + args.rate_duration  # drain: up to 120 s
    elif scenario == "muc-fanout":
        # every join sends the joiner's presence to every occupant
        # (O(N^2) stanzas): a slow ramp keeps the join storm in bounds.
        # The joins (after the last sign-in) and the leaves at the end
        # get more than the 30 s default: one Prosody process needed
        # minutes for the 500,000 presences of 1,000 joins here
        timeout = max(30.0, size * args.muc_timeout)
        cmd += ["--room", MUC_ROOM, "--sessions", str(size),
                "--senders", str(min(args.muc_senders, size)),
                "--window", str(args.muc_window),
                "--duration", str(args.muc_duration),
                "--ramp", str(args.muc_ramp),
                "--timeout", "%.0f" % timeout]
        limit = 300 + size / 5 + args.muc_duration + 4 * timeout
    else:
        cmd += ["--concurrency", str(size),
                "--duration", str(args.login_duration)]
        limit = 120 + args.login_duration
    if args.late_ms is not None and scenario.startswith("chat-"):
        # for tests/bench/late_episodes.py
        os.makedirs(args.out, exist_ok=True)
        cmd += ["--late-ms", str(args.late_ms), "--late-log",
                os.path.join(args.out, "late-%s-%s-%s-%s-%s.txt" % (
                    target.name, peers.transport_name(args), scenario,
                    size, label.rsplit("rep=", 1)[-1]))]
    return cmd, limit


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total


def settle(target, quiet=0.05, limit=20.0):
    """Wait until the fresh server is idle: under 5% of a CPU over half
    a second (ejabberd keeps loading modules and warming mnesia for a
    few seconds after its port opens), at most limit seconds.  The audit
    database's CPU counts too."""
    hz = os.sysconf("SC_CLK_TCK")
    deadline = time.monotonic() + limit
    pids = target.server_pids() + target.db_pids()
    last = cpu_ticks(pids)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_ticks(pids)
        if (now - last) / hz < quiet * 0.5:
            return
        last = now


def drain(target, limit=300.0):
    """After a run, wait until the server has shipped what the run
    left to its audit database (Conclave's backlog).  A saturated run
    leaves about a million records: shipped during the next run, they
    would load the machine under another target's measurement, or
    under Conclave's next one."""
    t0 = time.monotonic()
    backlog = target.backlog()
    while backlog and time.monotonic() < t0 + limit:
        time.sleep(0.5)
        backlog = target.backlog()
    waited = time.monotonic() - t0
    if backlog:
        print("*** the audit backlog did not drain in %.0f s: %d records"
              " left" % (waited, backlog))
    elif waited > 2:
        print("(the audit backlog took %.0f s to drain after the run)"
              % waited)


def run_one(args, target, scenario, size, rep, results):
    """One loadgen run against a fresh server; returns its CSV row."""
    target.prepare(scenario)
    target.restart()
    settle(target)
    mark = target.log_mark()
    label = "workers=%d srv_cpus=%s lg_cpu=%s rep=%d" % (
        args.workers, args.server_cpus or "any",
        "any" if args.loadgen_cpu is None else args.loadgen_cpu, rep)
    fd, tmp = tempfile.mkstemp(prefix="loadgen-", suffix=".csv")
    os.close(fd)
    os.unlink(tmp)
    cmd, limit = loadgen_cmd(args, target, scenario, size, tmp, label)
    print("\n== %s: %s %s (run %d/%d)" % (target.name, scenario, size, rep,
                                         args.repeat), flush=True)
    if args.verbose:
        print("+ " + " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd)
    try:
        rc = proc.wait(limit)
    except KeyboardInterrupt:
        # ^C or SIGTERM: the generator closes its sessions and exits
        # before the servers are stopped
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    except subprocess.TimeoutExpired:
        print("*** loadgen ran over %.0f s: stopping it" % limit)
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        rc = rc or 1
    row = None
    try:
        with open(tmp) as f:
            rows = list(csv.DictReader(f))
            row = rows[-1] if rows else None
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    bd = target.audit_breakdown() if row is not None else None
    drain(target)
    if bd:
        print_breakdown(row, bd)
    _, notes = target.log_report(mark)
    if notes:
        print("server log during this run (warn and worse):")
        print("\n".join("  " + n for n in notes))
    if row is None:
        row = {"target": target.name, "scenario": scenario,
               "errors": "loadgen exit %d, no row" % rc}
    row["exit"] = str(rc)
    row["pass"] = args.pass_name
    row["server"] = target.describe()
    row["size_arg"] = str(size)
    results.append(row)
    return row


AUDIT_STAGES = ("wait", "write", "queue", "fsync", "notify")


def hist_figures(buckets, total, mx):
    """(count, mean, p50, p99, max) of {lowest value: count} buckets;
    a quantile is the lowest value of the next bucket (an upper bound,
    25% resolution)."""
    n = sum(buckets.values())
    if n == 0:
        return (0, 0.0, 0, 0, 0)
    los = sorted(buckets)

    def q(f):
        seen = 0
        for k, lo in enumerate(los):
            seen += buckets[lo]
            if seen > f * n:
                width = 1 << (lo.bit_length() - 3) if lo >= 4 else 1
                return min(lo + width - 1, mx)
        return mx
    return (n, total / n, q(0.50), q(0.99), mx)


def print_breakdown(row, bd):
    """Prints the audit path's stages and adds them to the CSV row."""
    print("audit path, server side (us):  " + "  ".join(
        "%s p50 %d p99 %d max %d" % (k, bd[k][2], bd[k][3], bd[k][4])
        for k in AUDIT_STAGES if bd[k][0])
        + "  backlog %d records, lag %.1f s" % (bd["backlog"], bd["lag"]))
    row["audit_backlog_records"] = str(bd["backlog"])
    row["audit_lag_s"] = "%.1f" % bd["lag"]
    for k in AUDIT_STAGES:
        row["audit_%s_count" % k] = str(bd[k][0])
        row["audit_%s_p50_us" % k] = str(bd[k][2])
        row["audit_%s_p99_us" % k] = str(bd[k][3])
        row["audit_%s_max_us" % k] = str(bd[k][4])


# server CPU per operation with the audit database's (mariadbd, which
# the shipper's inserts keep busy): the peers have no database, so theirs
# is their server CPU alone.  CSVs written before db_cpu_us_per_op have
# no such figure.
ALL_CPU = "all_cpu_us_per_op"


def value(r, key):
    if key != ALL_CPU:
        return float(r.get(key, ""))
    db = float(r.get("db_cpu_us_per_op") or -1)
    if db < 0 and r.get("target") == "conclave":
        raise ValueError("no db_cpu_us_per_op")
    srv = float(r.get("srv_cpu_us_per_op", ""))
    return srv + max(db, 0) if srv >= 0 else -1


def median(rows, key):
    vals = []
    for r in rows:
        try:
            v = value(r, key)
        except (ValueError, TypeError):
            continue
        if v >= 0:
            vals.append(v)
    if not vals:
        return None, []
    return statistics.median(vals), vals


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


# (scenario, label of size, [(column title, csv key, format)])
TABLE = {
    "idle": ("K", [("KiB RSS/sess", "rss_kib_per_session", ".2f"),
                   ("KiB PSS/sess", "pss_kib_per_session", ".2f"),
                   ("sign-ins/s", "per_s", ".0f")]),
    "chat-saturation": ("W", [("msgs/s", "per_s", ".0f"),
                              ("us CPU/msg", "srv_cpu_us_per_op", ".1f"),
                              ("+DB us/msg", ALL_CPU, ".1f"),
                              ("p50 ms", "p50_ms", ".3f"),
                              ("p99 ms", "p99_ms", ".3f"),
                              ("srv CPU %", "srv_cpu_pct", ".0f")]),
    "chat-fixed-rate": ("R/s", [("p50 ms", "p50_ms", ".3f"),
                                ("p99 ms", "p99_ms", ".3f"),
                                ("max ms", "max_ms", ".3f"),
                                ("srv CPU %", "srv_cpu_pct", ".0f"),
                                ("us CPU/msg", "srv_cpu_us_per_op",
                                 ".1f"),
                                ("+DB us/msg", ALL_CPU, ".1f")]),
    "login": ("C", [("logins/s", "per_s", ".0f"),
                    ("p50 ms", "p50_ms", ".3f"),
                    ("p99 ms", "p99_ms", ".3f"),
                    ("us CPU/login", "srv_cpu_us_per_op", ".0f")]),
    "muc-fanout": ("N", [("deliveries/s", "per_s", ".0f"),
                         ("us CPU/deliv", "srv_cpu_us_per_op", ".2f"),
                         ("p50 ms", "p50_ms", ".3f"),
                         ("p99 ms", "p99_ms", ".3f"),
                         ("srv CPU %", "srv_cpu_pct", ".0f")]),
}


def summary(results, repeat):
    out = []
    groups = collections.OrderedDict()
    for r in results:
        groups.setdefault((r.get("target"), r.get("scenario"),
                           r.get("size_arg")), []).append(r)
    for scen in SCENARIOS:
        keys = sorted((k for k in groups if k[1] == scen),
                      key=lambda k: (int(k[2]), TARGET_ORDER.index(k[0])
                                     if k[0] in TARGET_ORDER else 99))
        if not keys:
            continue
        size_title, cols = TABLE[scen]
        out.append("")
        out.append("%-10s %-16s %6s " % ("target", scen, size_title)
                   + " ".join("%13s" % c[0] for c in cols)
                   + "  errors")
        for key in keys:
            rows = groups[key]
            cells = []
            for _, k, spec in cols:
                m, vals = median(rows, k)
                cells.append("%13s" % fmt(m, spec))
            errs = sum(int(r["errors"]) if str(r.get("errors", "0"))
                       .isdigit() else 1 for r in rows)
            note = ""
            m, _ = median(rows, "per_s")
            if scen == "chat-fixed-rate" and m is not None \
                    and m < 0.95 * float(key[2]):
                note = "  OVERLOAD: %.0f/s delivered" % m
            out.append("%-10s %-16s %6s " % (key[0], "", key[2])
                       + " ".join(cells) + "  %d%s" % (errs, note))
            if repeat > 1:
                for _, k, spec in cols[:2]:
                    _, vals = median(rows, k)
                    out.append("%35s %s: %s" % ("", k, ", ".join(
                        format(v, spec) for v in vals)))
    if repeat > 1:
        out.append("(median of %d runs)" % repeat)
    return "\n".join(out)


# the figures compared across targets: (scenario, csv key, title, format,
# True when higher is better)
FIGURES = [
    ("idle", "rss_kib_per_session", "KiB RSS/idle session, K=%s", ".2f",
     False),
    ("idle", "per_s", "sign-ins/s while opening K=%s", ".0f", True),
    ("chat-saturation", "per_s", "msgs/s saturated, W=%s", ".0f", True),
    ("chat-saturation", "srv_cpu_us_per_op", "us CPU/msg saturated, W=%s",
     ".1f", False),
    ("chat-saturation", ALL_CPU, "+ audit DB, us CPU/msg sat, W=%s",
     ".1f", False),
    ("chat-fixed-rate", "p99_ms", "p99 ms at %s msgs/s", ".3f", False),
    ("chat-fixed-rate", "srv_cpu_us_per_op", "us CPU/msg at %s msgs/s",
     ".1f", False),
    ("chat-fixed-rate", ALL_CPU, "+ audit DB, us CPU/msg at %s/s",
     ".1f", False),
    ("login", "per_s", "logins/s, C=%s", ".0f", True),
    ("login", "srv_cpu_us_per_op", "us CPU/login, C=%s", ".0f", False),
    ("login", ALL_CPU, "+ audit DB, us CPU/login, C=%s", ".0f", False),
    ("muc-fanout", "per_s", "MUC deliveries/s, N=%s", ".0f", True),
    ("muc-fanout", "srv_cpu_us_per_op", "us CPU/MUC delivery, N=%s", ".2f",
     False),
]

TARGET_ORDER = ["conclave", "ejabberd", "prosody", "relay"]


def medians(results):
    """{(target, scenario, size): {key: median}} over clean runs; a run
    with errors still counts (its row says so), a run with no row not."""
    groups = collections.defaultdict(list)
    for r in results:
        groups[(r.get("target"), r.get("scenario"), r.get("size_arg"))] \
            .append(r)
    out = {}
    for k, rows in groups.items():
        out[k] = {}
        for _, key, _, _, _ in FIGURES + [(None, "p50_ms", 0, 0, 0),
                                         (None, "max_ms", 0, 0, 0)]:
            out[k][key] = median(rows, key)[0]
    return out


def ratio_table(results):
    """Conclave's median over each peer's, figure by figure."""
    med = medians(results)
    targets = [t for t in TARGET_ORDER
               if any(k[0] == t for k in med)]
    if "conclave" not in targets or len(targets) < 2:
        return ""
    peers_ = [t for t in targets if t != "conclave"]
    head = "%-34s" % "figure (median)" + "".join(
        "%11s" % t for t in targets) + "".join(
        "%13s" % ("C/" + t[:9]) for t in peers_)
    out = ["", "Conclave / peer (ratio of medians; for msgs/s and logins/s"
           " > 1 is better for Conclave, for memory, CPU and latency"
           " < 1 is)", head]
    sizes = collections.OrderedDict()
    for (t, scen, size) in med:
        sizes.setdefault(scen, set()).add(size)
    for scen, key, title, spec, _ in FIGURES:
        for size in sorted(sizes.get(scen, ()), key=int):
            vals = [med.get((t, scen, size), {}).get(key) for t in targets]
            if vals[0] is None:
                continue
            line = "%-34s" % (title % size)[:34] + "".join(
                "%11s" % fmt(v, spec) for v in vals)
            for v in vals[1:]:
                line += "%13s" % ("-" if not v else
                                  "%.3g" % (vals[0] / v))
            out.append(line)
    sat = [med.get((t, "chat-saturation", sz), {}).get("per_s")
           for t in ("conclave", "relay")
           for sz in sorted(sizes.get("chat-saturation", ()), key=int)[:1]]
    if len(sat) == 2 and sat[0] and sat[1]:
        out.append("")
        out.append("Conclave's saturated throughput is %.1f%% of the "
                   "trivial relay's (the physical ceiling)"
                   % (100 * sat[0] / sat[1]))
    out.append("(Conclave does a real LDAP search and bind behind each "
               "sign-in and writes every message to its audit journal "
               "with fsync always; the peers use internal auth with "
               "plaintext passwords and store nothing per message.)")
    return "\n".join(out)


def plots(results, outdir, suffix="", what=""):
    """latency<suffix>.png (p50/p99 against offered rate) and
    memory<suffix>.png (KiB per idle session against sessions), with
    gnuplot, from one pass's rows."""
    med = medians(results)
    os.makedirs(outdir, exist_ok=True)
    targets = [t for t in TARGET_ORDER if any(k[0] == t for k in med)]
    lat, mem = [], []
    for t in targets:
        rates = sorted(int(k[2]) for k in med
                       if k[0] == t and k[1] == "chat-fixed-rate")
        ks = sorted(int(k[2]) for k in med
                    if k[0] == t and k[1] == "idle")
        path = os.path.join(outdir, "latency-%s%s.dat" % (t, suffix))
        with open(path, "w") as f:
            f.write("# rate p50_ms p99_ms max_ms\n")
            for r in rates:
                m = med[(t, "chat-fixed-rate", str(r))]
                f.write("%d %s %s %s\n" % (r, m["p50_ms"], m["p99_ms"],
                                           m["max_ms"]))
        if rates:
            lat.append((t, path))
        path = os.path.join(outdir, "memory-%s%s.dat" % (t, suffix))
        with open(path, "w") as f:
            f.write("# sessions kib_rss_per_session\n")
            for k in ks:
                f.write("%d %s\n" % (k, med[(t, "idle", str(k))]
                                     ["rss_kib_per_session"]))
        if ks:
            mem.append((t, path))
    latency_png = os.path.join(outdir, "latency%s.png" % suffix)
    memory_png = os.path.join(outdir, "memory%s.png" % suffix)
    what = ", " + what if what else ""
    script = ["set terminal pngcairo size 900,560 font ',11'",
              "set grid", "set key outside right",
              "set output '%s'" % latency_png,
              "set title 'End-to-end message latency, open loop "
              "(median of runs)%s'" % what,
              "set xlabel 'offered messages/s'",
              "set ylabel 'latency, ms'", "set logscale y",
              "set xtics ('1,000' 1000, '5,000' 5000, '20,000' 20000)",
              "set logscale x"]
    color = {t: i + 1 for i, t in enumerate(TARGET_ORDER)}
    if lat:
        script.append("plot " + ", ".join(
            "'%s' using 1:%d with linespoints lc %d dt %d pt %d lw 2 "
            "title '%s %s'" % (p, col, color[t], dt, 4 + 2 * color[t],
                               t, q)
            for t, p in lat for col, q, dt in ((3, "p99", 1),
                                               (2, "p50", 2))))
    script += ["set output '%s'" % memory_png,
               "set title 'Server memory per idle signed-in session "
               "(RSS, median of runs)%s'" % what,
               "set xlabel 'sessions online'",
               "set ylabel 'KiB per session'", "unset logscale y",
               "set yrange [0:*]",
               "set xtics ('1,000' 1000, '10,000' 10000, "
               "'50,000' 50000)"]
    if mem:
        script.append("plot " + ", ".join(
            "'%s' using 1:2 with linespoints lc %d pt %d lw 2 title '%s'"
            % (p, color[t], 4 + 2 * color[t], t) for t, p in mem))
    gp = os.path.join(outdir, "plots%s.gp" % suffix)
    with open(gp, "w") as f:
        f.write("\n".join(script) + "\n")
    r = subprocess.run(["gnuplot", gp], capture_output=True, text=True)
    if r.returncode != 0:
        print("gnuplot failed (plots skipped):\n" + r.stderr[-1000:])
    else:
        print("plots: %s, %s" % (os.path.relpath(latency_png),
                                 os.path.relpath(memory_png)))


def ints(s):
    return [int(x) for x in s.split(",") if x]


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Conclave benchmarks (prints figures, asserts nothing)")
    p.add_argument("--target", default="conclave",
                   help="comma list of %s (default conclave); they take "
                        "turns run by run" % ",".join(TARGET_ORDER))
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--idle-sessions", type=ints, default=[1000, 10000],
                   help="K values for idle (default 1000,10000)")
    p.add_argument("--hold", type=float, default=5)
    p.add_argument("--ramp", type=int, default=200,
                   help="sign-ins in flight while opening idle sessions")
    p.add_argument("--settle", type=float, default=None,
                   help="idle: seconds the server settles before each "
                   "memory sample (default: 1 after the warm-up, 2 after "
                   "the ramp)")
    p.add_argument("--chat-sessions", type=int, default=200)
    p.add_argument("--windows", type=ints, default=[4],
                   help="chat-saturation: messages in flight per sender")
    p.add_argument("--chat-duration", type=float, default=20)
    p.add_argument("--rates", type=ints, default=[1000, 5000, 20000])
    p.add_argument("--rate-duration", type=float, default=20)
    p.add_argument("--login-concurrency", type=ints, default=[20])
    p.add_argument("--login-duration", type=float, default=20)
    p.add_argument("--muc-occupants", type=ints, default=[100, 1000],
                   help="muc-fanout: room sizes N (issue 7)")
    p.add_argument("--muc-senders", type=int, default=10,
                   help="muc-fanout: occupants that send")
    p.add_argument("--muc-window", type=int, default=16,
                   help="muc-fanout: groupchat messages in flight per "
                   "sender")
    p.add_argument("--muc-duration", type=float, default=10)
    p.add_argument("--muc-ramp", type=int, default=20,
                   help="muc-fanout: joins in flight")
    p.add_argument("--muc-timeout", type=float, default=0.6,
                   help="muc-fanout: seconds per occupant (at least 30 "
                        "in all) for each sign-in step, the joins after "
                        "the last sign-in, and the leaves at the end")
    p.add_argument("--payload", type=int, default=32,
                   help="padding bytes in each message body")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--server-cpus", default="0",
                   help="CPUs for the nginx workers (comma list; '' = "
                        "not pinned)")
    p.add_argument("--loadgen-cpu", default="1",
                   help="CPU for the load generator ('' = not pinned)")
    p.add_argument("--late-ms", type=float, default=None,
                   help="chat runs: log every message later than this "
                        "to <out>/late-<target>-<pass>-<scenario>-<size>-"
                        "<rep>.txt (tests/bench/late_episodes.py)")
    p.add_argument("--mariadb-buffer-pool", default="1G",
                   help="the appliance's innodb_buffer_pool_size [1G]")
    p.add_argument("--mariadb-redo-log", default="512M",
                   help="the appliance's innodb_log_file_size [512M]")
    p.add_argument("--mariadb-cpus", default="server",
                   help="CPUs for the appliance's mariadbd (taskset -c "
                        "list; 'server', the default: --server-cpus, "
                        "the server's whole side on the server's CPUs as "
                        "the peers are; '' = not pinned)")
    p.add_argument("--transport", choices=("tcp", "ws"), default="tcp",
                   help="XMPP over TCP (RFC 6120, the baseline) or over "
                        "WebSocket (RFC 7395); default tcp")
    p.add_argument("--tls", action="store_true",
                   help="TLS: direct TLS (XEP-0368) over TCP, wss:// "
                        "over WebSocket")
    p.add_argument("--passes", default=None,
                   help="comma list of %s: one pass after the other in "
                        "this invocation, each with its own tables, "
                        "ratios and plots, one CSV with a pass column "
                        "(replaces --transport and --tls; default: the "
                        "one pass they name)" % ",".join(PASSES))
    p.add_argument("--log-level", default="warn",
                   help="nginx error_log level (info logs every sign-in)")
    p.add_argument("--module", default=None,
                   help="the .so to load (default build/release/, or "
                        "$CONCLAVE_MODULE)")
    p.add_argument("--extra-stream", action="append", default=[],
                   help="a line for the stream{} block, e.g. "
                   "'conclave_tls_record_layer off;'")
    p.add_argument("--extra-http", action="append", default=[],
                   help="extra nginx http{} line (repeatable)")
    p.add_argument("--unix-dgram-qlen", type=int, default=None,
                   help="experiment: run everything in a private network "
                        "namespace (unshare -n) whose "
                        "net.unix.max_dgram_qlen is N (default 10)")
    p.add_argument("--out", default=os.path.join(BUILD, "results"))
    p.add_argument("--from-csv", default=None,
                   help="run nothing: print the tables (and --plots) "
                        "from a CSV an earlier run wrote")
    p.add_argument("--plots", default=None,
                   help="directory for latency.png and memory.png "
                        "(gnuplot)")
    p.add_argument("--keep", action="store_true",
                   help="keep the server's work directory")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    a.targets = [t for t in a.target.split(",") if t]
    for t in a.targets:
        if t not in TARGETS:
            p.error("unknown target %s (one of %s)"
                    % (t, ",".join(TARGET_ORDER)))
    if not a.targets or len(set(a.targets)) != len(a.targets):
        p.error("--target: a list of distinct targets")
    a.scenarios = [s for s in a.scenarios.split(",") if s]
    for s in a.scenarios:
        if s not in SCENARIOS:
            p.error("unknown scenario %s" % s)
    if a.passes is None:
        a.passes = [peers.transport_name(a)]
    else:
        a.passes = [x for x in a.passes.split(",") if x]
        for x in a.passes:
            if x not in PASSES:
                p.error("unknown pass %s (one of %s)"
                        % (x, ",".join(PASSES)))
        if not a.passes or len(set(a.passes)) != len(a.passes):
            p.error("--passes: a list of distinct passes")
    a.loadgen_cpu = int(a.loadgen_cpu) if a.loadgen_cpu != "" else None
    if a.module is None:
        a.module = os.environ.get("CONCLAVE_MODULE") or os.path.join(
            REPO, "build", "release", "ngx_http_conclave_module.so")
    a.module = os.path.abspath(a.module)
    a.max_sessions = max(
        [a.chat_sessions, 20] + a.login_concurrency
        + (a.idle_sessions if "idle" in a.scenarios else [])
        + (a.muc_occupants if "muc-fanout" in a.scenarios else []))
    return a


def enter_netns(args, argv):
    """--unix-dgram-qlen: re-run this script under `unshare -n`, where
    the sysctl is private, so the machine's own setting is untouched."""
    if os.environ.get("CONCLAVE_BENCH_NETNS") != "1":
        env = dict(os.environ, CONCLAVE_BENCH_NETNS="1")
        argv = sys.argv[1:] if argv is None else argv
        os.execvpe("unshare", ["unshare", "-n", "--", sys.executable,
                               os.path.abspath(__file__)] + argv, env)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    with open("/proc/sys/net/unix/max_dgram_qlen", "w") as f:
        f.write(str(args.unix_dgram_qlen))
    print("private network namespace: net.unix.max_dgram_qlen = %d"
          % args.unix_dgram_qlen)


def on_sigterm(signum, frame):
    raise KeyboardInterrupt


def pass_of(row):
    """The row's pass: its column, or (a CSV from before passes) the
    transport the generator wrote."""
    return row.get("pass") or row.get("transport") or "?"


def report(results, repeat, plot_dir):
    """Per pass, in the order the passes ran: the table, the ratios
    Conclave/peer, and the plots (the first pass's as latency.png and
    memory.png, the others' as latency-<pass>.png, memory-<pass>.png)."""
    order = []
    for r in results:
        if pass_of(r) not in order:
            order.append(pass_of(r))
    for i, name in enumerate(order):
        rows = [r for r in results if pass_of(r) == name]
        what = PASSES[name][2] if name in PASSES else name
        print("\n##### pass %s: %s" % (name, what))
        print(summary(rows, repeat))
        print(ratio_table(rows))
        if plot_dir:
            plots(rows, plot_dir, "" if i == 0 else "-" + name,
                  name + " pass")


def report_csv(args):
    with open(args.from_csv) as f:
        results = list(csv.DictReader(f))
    repeat = max(collections.Counter(
        (pass_of(r), r.get("target"), r.get("scenario"), r.get("size_arg"))
        for r in results).values() or [1])
    report(results, repeat, args.plots)
    return 0


PASSES = {
    # name: (--transport, --tls, what it is)
    "tcp": ("tcp", False, "plaintext XMPP over TCP (RFC 6120), the "
            "baseline"),
    "tls": ("tcp", True, "direct TLS (XEP-0368), XMPP over TCP"),
    "ws": ("ws", False, "XMPP over WebSocket (RFC 7395), ws://"),
    "wss": ("ws", True, "XMPP over WebSocket, wss://"),
}


def pass_args(args, name):
    """The arguments of one pass: a copy with its transport and TLS."""
    a = copy.copy(args)
    a.transport, a.tls, _ = PASSES[name]
    a.pass_name = name
    return a


def run_pass(args, workdir, results, problems, described):
    """Every target and scenario of one pass (transport): the targets
    are started here, with their users, and stopped by PID at the end,
    also on failure.  KeyboardInterrupt goes up, after the stop."""
    print("\n##### pass %s: %s" % (args.pass_name,
                                  PASSES[args.pass_name][2]), flush=True)
    targets = []
    try:
        nusers = max(args.max_sessions, 2 * max(args.login_concurrency))
        for name in args.targets:
            if name == "relay" and args.tls:
                print("relay: no TLS, skipped in the %s pass (the "
                      "ceiling is the plaintext pass's)" % args.pass_name)
                continue
            target = TARGETS[name](args, os.path.join(workdir, name)
                                   if name == "conclave" else workdir)
            targets.append(target)
            t = time.monotonic()
            target.start()
            target.add_users(nusers)
            print("%s: started, %d users added in %.1f s" % (
                target.describe(), nusers, time.monotonic() - t),
                flush=True)
        print("machine: %d CPUs, kernel %s; servers on CPU %s, loadgen "
              "on CPU %s" % (
                  os.cpu_count(), os.uname().release,
                  args.server_cpus or "any",
                  "any" if args.loadgen_cpu is None else args.loadgen_cpu))
        run_plan(args, targets, results, problems)
    except KeyboardInterrupt:
        raise
    except Exception as e:
        problems.append("%s pass: %s: %s" % (args.pass_name,
                                             type(e).__name__, e))
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for target in reversed(targets):
            try:
                target.stop()
            except Exception as e:
                problems.append("stopping %s: %s" % (target.name, e))
            problems += target.problems()
            described.append(target.describe())
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, on_sigterm)


def run_plan(args, targets, results, problems):
    """Scenario by scenario, size by size, repeat by repeat; the
    targets take turns inside, so the machine's load hits them alike.
    A target that cannot be restarted (nginx workers crashed, a peer
    that does not listen) is out for the rest of the pass: the others
    go on."""
    broken = {}
    plan = []
    for s in args.scenarios:
        sizes = {"idle": args.idle_sessions,
                 "chat-saturation": args.windows,
                 "chat-fixed-rate": args.rates,
                 "login": args.login_concurrency,
                 "muc-fanout": args.muc_occupants}[s]
        plan += [(s, n) for n in sizes]
    for s, n in plan:
        for rep in range(1, args.repeat + 1):
            for target in targets:
                if s == "muc-fanout" and not target.muc:
                    if rep == 1:
                        print("\n== %s: muc-fanout %d skipped: it has no "
                              "rooms" % (target.name, n), flush=True)
                    continue
                if s == "idle" and n > idle_capacity(target):
                    print("\n== %s: idle %d skipped: it holds at most "
                          "%d sessions here (hard RLIMIT_NOFILE %d per "
                          "process%s)" % (
                              target.name, n, idle_capacity(target),
                              fd_hard_limit(),
                              "; raise --workers"
                              if target.name == "conclave" else
                              ", one server process"), flush=True)
                    continue
                if target.name in broken:
                    continue
                try:
                    run_one(args, target, s, n, rep, results)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as e:
                    broken[target.name] = "%s: %s" % (type(e).__name__, e)
                    problems.append("%s pass, %s %s %s: %s; no more runs "
                                    "of %s in this pass" % (
                                        args.pass_name, target.name, s, n,
                                        broken[target.name], target.name))
                    print("\n*** %s" % problems[-1], flush=True)


def main(argv=None):
    args = parse_args(argv)
    if args.from_csv:
        return report_csv(args)
    if args.unix_dgram_qlen:
        enter_netns(args, argv)
    if "conclave" in args.targets and not os.path.isfile(args.module):
        sys.stderr.write("%s missing: run `make build` first\n"
                         % args.module)
        return 2
    for t in args.targets:
        missing = peers.available(t)
        if missing:
            sys.stderr.write("%s: %s\n" % (t, missing))
            return 2
    signal.signal(signal.SIGTERM, on_sigterm)
    # the peers inherit it: 10,000 sessions need more than 1024 fds
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    build_loadgen()
    os.makedirs(args.out, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_csv = os.path.join(args.out, "bench-%s.csv" % stamp)
    workdir = tempfile.mkdtemp(prefix="conclave-bench-")
    results = []
    problems = []
    described = []
    t0 = time.monotonic()
    try:
        for name in args.passes:
            run_pass(pass_args(args, name), os.path.join(workdir, name),
                     results, problems, described)
    except KeyboardInterrupt:
        problems.append("interrupted")
    finally:
        if args.keep:
            print("work directory kept: %s" % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    if results:
        keys = []
        for r in results:
            keys += [k for k in r if k not in keys]
        with open(out_csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(results)

    print("\n=== %.0f s in all, %d CPUs, kernel %s; servers on CPU %s, "
          "loadgen on CPU %s" % (
              time.monotonic() - t0, os.cpu_count(), os.uname().release,
              args.server_cpus or "any",
              "any" if args.loadgen_cpu is None else args.loadgen_cpu))
    for d in described:
        print("  " + d)
    report(results, args.repeat, args.plots)
    if results:
        print("\nCSV: %s" % os.path.relpath(out_csv))
    failed = [r for r in results if r.get("exit") != "0"]
    if failed or problems:
        print("\n*** BENCHMARK HAD FAILURES ***")
        for r in failed:
            print("***   %s pass, %s %s %s: exit %s, errors %s" % (
                pass_of(r), r.get("target"), r.get("scenario"),
                r.get("size_arg"),
                r.get("exit"), r.get("errors")))
        for p in problems:
            print("***   " + p)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
