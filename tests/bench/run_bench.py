#!/usr/bin/python3
"""Conclave benchmark runner (issue 4): measures, never asserts.

    run_bench.py [--target conclave] [--scenarios idle,chat-saturation,...]
                 [--idle-sessions 1000,10000] [--rates 1000,5000] ...

Builds tests/bench/loadgen.c into build/bench/loadgen, starts a private
server for the target (for conclave: slapd + mariadbd + nginx with
build/release/ngx_http_conclave_module.so, from tests/lib), adds the
bench users, and runs each scenario with the load generator.  Every
scenario runs against a freshly started server process, so one
scenario's leftovers (freed heap, warm caches) do not flatter the next.

The load generator samples the server's processes itself (/proc/PID/stat
and smaps_rollup of the PIDs the target names) at the exact phase
boundaries, and prints one row per run; this runner collects the rows
into build/bench/results/bench-<date>.csv and prints a summary table
with the median of --repeat runs.

A target is a class with start/stop/restart, the WebSocket URL, the users
file and the PIDs to measure; only conclave exists today (prosody and
ejabberd come with issue 4's comparison step).  Exit status: 0 when every
run was clean, 1 when any run reported failures or the server logged an
[alert]/[emerg], 2 on a setup error.
"""

import argparse
import collections
import csv
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

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))

BUILD = os.path.join(REPO, "build", "bench")
LOADGEN_SRCS = [os.path.join(HERE, f)
                for f in ("loadgen.c", "loadgen_xmpp.c")]
LOADGEN_DEPS = LOADGEN_SRCS + [os.path.join(HERE, "loadgen.h")]
LOADGEN = os.path.join(BUILD, "loadgen")

SCENARIOS = ("idle", "chat-saturation", "chat-fixed-rate", "login")


def build_loadgen():
    os.makedirs(BUILD, exist_ok=True)
    if os.path.exists(LOADGEN) and os.path.getmtime(LOADGEN) >= max(
            os.path.getmtime(f) for f in LOADGEN_DEPS):
        return
    cmd = ["cc", "-O2", "-g", "-Wall", "-Wextra", "-o", LOADGEN] \
        + LOADGEN_SRCS + ["-lssl", "-lcrypto"]
    print("+ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


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


class Target:
    """What the runner needs of a server under test."""

    name = "?"

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

    def log_mark(self):
        return None

    def log_report(self, mark):
        """(problems that fail the run, notable lines to print)."""
        return [], []

    def describe(self):
        return self.name


class Conclave(Target):
    """nginx + the Conclave module, slapd and mariadbd from tests/lib."""

    name = "conclave"

    def __init__(self, args, workdir):
        from appliance import Appliance  # noqa: E402

        self.args = args
        self.max_sessions = args.max_sessions
        # without CAP_SYS_RESOURCE (containers) the hard limit is final
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if hard == resource.RLIM_INFINITY:
            hard = 1 << 20
        wc = min(max(4096, self.max_sessions + 1024), hard - 1024)
        main = ["worker_rlimit_nofile %d;" % min(2 * wc + 1024, hard)]
        if args.server_cpus:
            cpus = [int(c) for c in args.server_cpus.split(",")]
            masks = [cpu_mask(cpus[i % len(cpus)])
                     for i in range(args.workers)]
            main.append("worker_cpu_affinity %s;" % " ".join(masks))
        http = list(args.extra_http)
        self.app = Appliance(workdir, module_so=args.module,
                             tls=args.tls, workers=args.workers,
                             log_level=args.log_level,
                             extra_main="\n".join(main),
                             extra_http="\n".join(http))
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

    def start(self):
        self.app.start()

    def restart(self):
        self.app.nginx.stop()
        self.app.nginx.start()

    def stop(self):
        self.app.stop()

    def add_users(self, n):
        # ldapmodify runs under a 30 s limit: add in batches with
        # distinct prefixes (bench1.., bencha1.., benchb1..)
        uids = []
        batch = 10000
        prefixes = ["bench"] + ["bench" + chr(ord("a") + i)
                                for i in range(26)]
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
        return self.app.ws_url

    def server_pids(self):
        return [self.app.nginx.pid] + self.app.nginx.worker_pids()

    def aux_pids(self):
        return [self.app.ldap.pid]

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
            "wss" if self.args.tls else "ws",
            os.path.relpath(self.app.module_so, REPO),
            ", unix dgram qlen %d" % self.args.unix_dgram_qlen
            if self.args.unix_dgram_qlen else "")


TARGETS = {"conclave": Conclave}


def loadgen_cmd(args, target, scenario, size, csv_path, label):
    cmd = [LOADGEN, "--url", target.url(), "--users", target.users_file,
           "--scenario", scenario, "--target", target.name,
           "--server-pids", ",".join(map(str, target.server_pids())),
           "--csv", csv_path, "--label", label,
           "--payload", str(args.payload)]
    if target.aux_pids():
        cmd += ["--aux-pids", ",".join(map(str, target.aux_pids()))]
    if args.loadgen_cpu is not None:
        cmd += ["--cpu", str(args.loadgen_cpu)]
    if scenario == "idle":
        cmd += ["--sessions", str(size), "--hold", str(args.hold),
                "--ramp", str(args.ramp)]
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
    else:
        cmd += ["--concurrency", str(size),
                "--duration", str(args.login_duration)]
        limit = 120 + args.login_duration
    return cmd, limit


def run_one(args, target, scenario, size, rep, results):
    """One loadgen run against a fresh server; returns its CSV row."""
    target.restart()
    time.sleep(0.5)
    mark = target.log_mark()
    label = "workers=%d srv_cpus=%s lg_cpu=%s rep=%d" % (
        args.workers, args.server_cpus or "any",
        "any" if args.loadgen_cpu is None else args.loadgen_cpu, rep)
    fd, tmp = tempfile.mkstemp(prefix="loadgen-", suffix=".csv")
    os.close(fd)
    os.unlink(tmp)
    cmd, limit = loadgen_cmd(args, target, scenario, size, tmp, label)
    print("\n== %s %s (run %d/%d)" % (scenario, size, rep, args.repeat),
          flush=True)
    if args.verbose:
        print("+ " + " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd)
    try:
        rc = proc.wait(limit)
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
    _, notes = target.log_report(mark)
    if notes:
        print("server log during this run (warn and worse):")
        print("\n".join("  " + n for n in notes))
    if row is None:
        row = {"target": target.name, "scenario": scenario,
               "errors": "loadgen exit %d, no row" % rc}
    row["exit"] = str(rc)
    row["server"] = target.describe()
    row["size_arg"] = str(size)
    results.append(row)
    return row


def median(rows, key):
    vals = []
    for r in rows:
        try:
            v = float(r.get(key, ""))
        except ValueError:
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
                              ("p50 ms", "p50_ms", ".3f"),
                              ("p99 ms", "p99_ms", ".3f"),
                              ("srv CPU %", "srv_cpu_pct", ".0f")]),
    "chat-fixed-rate": ("R/s", [("p50 ms", "p50_ms", ".3f"),
                                ("p99 ms", "p99_ms", ".3f"),
                                ("max ms", "max_ms", ".3f"),
                                ("srv CPU %", "srv_cpu_pct", ".0f"),
                                ("us CPU/msg", "srv_cpu_us_per_op",
                                 ".1f")]),
    "login": ("C", [("logins/s", "per_s", ".0f"),
                    ("p50 ms", "p50_ms", ".3f"),
                    ("p99 ms", "p99_ms", ".3f"),
                    ("us CPU/login", "srv_cpu_us_per_op", ".0f")]),
}


def summary(results, repeat):
    out = []
    groups = collections.OrderedDict()
    for r in results:
        groups.setdefault((r.get("target"), r.get("scenario"),
                           r.get("size_arg")), []).append(r)
    for scen in SCENARIOS:
        keys = [k for k in groups if k[1] == scen]
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


def ints(s):
    return [int(x) for x in s.split(",") if x]


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Conclave benchmarks (prints figures, asserts nothing)")
    p.add_argument("--target", default="conclave", choices=sorted(TARGETS))
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--idle-sessions", type=ints, default=[1000, 10000],
                   help="K values for idle (default 1000,10000)")
    p.add_argument("--hold", type=float, default=5)
    p.add_argument("--ramp", type=int, default=200,
                   help="sign-ins in flight while opening idle sessions")
    p.add_argument("--chat-sessions", type=int, default=200)
    p.add_argument("--windows", type=ints, default=[4],
                   help="chat-saturation: messages in flight per sender")
    p.add_argument("--chat-duration", type=float, default=20)
    p.add_argument("--rates", type=ints, default=[1000, 5000])
    p.add_argument("--rate-duration", type=float, default=20)
    p.add_argument("--login-concurrency", type=ints, default=[20])
    p.add_argument("--login-duration", type=float, default=20)
    p.add_argument("--payload", type=int, default=32,
                   help="padding bytes in each message body")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--server-cpus", default="0",
                   help="CPUs for the nginx workers (comma list; '' = "
                        "not pinned)")
    p.add_argument("--loadgen-cpu", default="1",
                   help="CPU for the load generator ('' = not pinned)")
    p.add_argument("--tls", action="store_true", help="wss:// (TLS)")
    p.add_argument("--log-level", default="warn",
                   help="nginx error_log level (info logs every sign-in)")
    p.add_argument("--module", default=None,
                   help="the .so to load (default build/release/, or "
                        "$CONCLAVE_MODULE)")
    p.add_argument("--extra-http", action="append", default=[],
                   help="extra nginx http{} line (repeatable)")
    p.add_argument("--unix-dgram-qlen", type=int, default=None,
                   help="experiment: run everything in a private network "
                        "namespace (unshare -n) whose "
                        "net.unix.max_dgram_qlen is N (default 10)")
    p.add_argument("--out", default=os.path.join(BUILD, "results"))
    p.add_argument("--keep", action="store_true",
                   help="keep the server's work directory")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    a.scenarios = [s for s in a.scenarios.split(",") if s]
    for s in a.scenarios:
        if s not in SCENARIOS:
            p.error("unknown scenario %s" % s)
    a.loadgen_cpu = int(a.loadgen_cpu) if a.loadgen_cpu != "" else None
    if a.module is None:
        a.module = os.environ.get("CONCLAVE_MODULE") or os.path.join(
            REPO, "build", "release", "ngx_http_conclave_module.so")
    a.module = os.path.abspath(a.module)
    a.max_sessions = max(
        [a.chat_sessions, 20] + a.login_concurrency
        + (a.idle_sessions if "idle" in a.scenarios else []))
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


def main(argv=None):
    args = parse_args(argv)
    if args.unix_dgram_qlen:
        enter_netns(args, argv)
    if not os.path.isfile(args.module):
        sys.stderr.write("%s missing: run `make build` first\n"
                         % args.module)
        return 2
    build_loadgen()
    os.makedirs(args.out, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_csv = os.path.join(args.out, "bench-%s.csv" % stamp)
    workdir = tempfile.mkdtemp(prefix="conclave-bench-")
    target = TARGETS[args.target](args, workdir)
    results = []
    problems = []
    t0 = time.monotonic()
    try:
        target.start()
        t = time.monotonic()
        nusers = max(args.max_sessions, 2 * max(args.login_concurrency))
        target.add_users(nusers)
        print("%s: started, %d users added in %.1f s" % (
            target.describe(), nusers, time.monotonic() - t), flush=True)
        print("machine: %d CPUs, kernel %s; loadgen on CPU %s" % (
            os.cpu_count(), os.uname().release,
            "any" if args.loadgen_cpu is None else args.loadgen_cpu))
        plan = []
        for s in args.scenarios:
            sizes = {"idle": args.idle_sessions,
                     "chat-saturation": args.windows,
                     "chat-fixed-rate": args.rates,
                     "login": args.login_concurrency}[s]
            plan += [(s, n) for n in sizes]
        for s, n in plan:
            for rep in range(1, args.repeat + 1):
                run_one(args, target, s, n, rep, results)
    except KeyboardInterrupt:
        problems.append("interrupted")
    except Exception as e:
        problems.append("%s: %s" % (type(e).__name__, e))
    finally:
        target.stop()
        problems += target.problems()
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

    print("\n=== %s, %d CPUs, %.0f s in all" % (
        target.describe(), os.cpu_count(), time.monotonic() - t0))
    print(summary(results, args.repeat))
    if results:
        print("\nCSV: %s" % os.path.relpath(out_csv))
    failed = [r for r in results if r.get("exit") != "0"]
    if failed or problems:
        print("\n*** BENCHMARK HAD FAILURES ***")
        for r in failed:
            print("***   %s %s: exit %s, errors %s" % (
                r.get("scenario"), r.get("size_arg"), r.get("exit"),
                r.get("errors")))
        for p in problems:
            print("***   " + p)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
