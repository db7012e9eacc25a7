#!/usr/bin/python3
"""Where the CPU of one sign-in goes (issue 4, the login scenario).

Starts the appliance from tests/lib (slapd, mariadbd, nginx with 2
workers on CPU 0), runs the generator's login scenario (connect, SASL
PLAIN with an LDAP search and bind behind it, bind, initial presence,
close) with concurrency C, and prints per login:

  * the server's CPU split by thread: the workers' event loops, the
    db pool threads (ngx_xmpp_db.c), the directory threads
    (conclave_thread_pool: LDAP search + bind), the journal's sync
    threads and the shippers, from /proc/<pid>/task/<tid>/stat;
  * mariadbd's and slapd's CPU;
  * MariaDB statements per login (SHOW GLOBAL STATUS: Com_* and
    Questions before and after), and with --general-log the statement
    texts of the run, counted by shape;
  * with --perf, perf's cpu-clock samples of the workers (all their
    threads) summed per thread class and per function.

Run it with --module against two builds, alternating, for an A/B:

    tests/bench/login_profile.py --module build/release/ngx_http_conclave_module.so
    tests/bench/login_profile.py --perf --general-log

Measures, asserts nothing; docs/benchmarks.md, "Sign-in cost", has the
figures.
"""

import argparse
import collections
import csv
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))
sys.path.insert(0, HERE)

import run_bench  # noqa: E402
from appliance import Appliance  # noqa: E402



def thread_ns(pid):
    """{tid: (comm, ns on a CPU)} of every thread of pid.  schedstat's
    runtime, not stat's utime + stime: those are sampled at each clock
    tick, and a thread that runs in short bursts (a directory thread's
    bind, a pool thread's statement) is rarely on the CPU at a tick."""
    out = {}
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                comm = f.read().strip()
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                ns = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        out[int(tid)] = (comm, ns)
    return out


def process_ns(pid):
    return sum(ns for _, ns in thread_ns(pid).values())


def status(db):
    """MariaDB's global counters that say what the server was asked."""
    rows = db.query("SHOW GLOBAL STATUS WHERE Variable_name LIKE 'Com_%' "
                    "OR Variable_name IN ('Questions', 'Queries')")
    return {k: int(v) for k, v in rows if v and v.isdigit()}


def classify(perf_script):
    """Thread class per tid from perf script call chains, for the pool
    threads that have not named themselves (conclave-db, conclave-dir)
    yet."""
    cls = {}
    tid = None
    for line in perf_script.splitlines():
        if line and not line[0].isspace():
            m = re.match(r"\S+\s+(\d+)/(\d+)", line)
            tid = int(m.group(2)) if m else None
            continue
        if tid is None:
            continue
        if "ngx_xmpp_db_thread" in line:
            cls[tid] = "db pool"
        elif "ngx_xmpp_auth_thread" in line or "cdir_" in line:
            cls.setdefault(tid, "directory pool")
    return cls


def thread_class(pid, tid, comm, perf_cls):
    if tid == pid:
        return "event loop"
    if comm.startswith("conclave-sync"):
        return "journal sync"
    if comm.startswith("conclave-ship"):
        return "shipper"
    if comm.startswith("conclave-db"):
        return "db pool"
    if comm.startswith("conclave-dir"):
        return "directory pool"
    return perf_cls.get(tid, "other threads")


SQL_LITERALS = re.compile(r"'(?:[^'\\]|\\.)*'|\b\d+\b")


def general_log_shapes(path):
    """Statement shapes of the general log: literals replaced by ?."""
    shapes = collections.Counter()
    try:
        f = open(path, errors="replace")
    except OSError:
        return shapes
    with f:
        for line in f:
            m = re.search(r"\t\s*\d+\s+(Query|Execute|Prepare)\t(.*)$", line)
            if not m:
                continue
            sql = " ".join(m.group(2).split())
            shapes[m.group(1) + ": " + SQL_LITERALS.sub("?", sql)[:150]] += 1
    return shapes


def dso_bucket(dso):
    name = os.path.basename(dso.strip("()"))
    if "kernel" in name or name.startswith("["):
        return "kernel"
    for key, bucket in (("conclave", "Conclave (.so)"), ("nginx", "nginx"),
                        ("libmariadb", "libmariadb"), ("libldap", "libldap"),
                        ("liblber", "libldap"), ("libc.", "libc"),
                        ("libxml2", "libxml2"), ("libcrypto", "libcrypto"),
                        ("libssl", "libssl")):
        if name.startswith(key):
            return bucket
    return "other"


def perf_split(script, pids):
    """Samples by (thread class, leaf's library); the leaf of each call
    chain is the first line after the sample's header."""
    out = collections.Counter()
    syms = collections.Counter()
    cls = classify(script)
    key = None
    for line in script.splitlines():
        if line and not line[0].isspace():
            m = re.match(r"(.+?)\s+(\d+)/(\d+)", line)
            key = None
            if m:
                pid, tid = int(m.group(2)), int(m.group(3))
                key = thread_class(pid, tid, m.group(1).strip(), cls)
            leaf = True
            continue
        if key is None or not line.strip() or not leaf:
            continue
        leaf = False
        parts = line.split(None, 1)
        if len(parts) < 2:
            continue
        m = re.match(r"(.*) (\(.*\))$", parts[1])
        sym, dso = (m.group(1), m.group(2)) if m else (parts[1], "")
        sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
        # the module may be loaded from any path (--module)
        bucket = ("Conclave (.so)"
                  if sym.startswith(("ngx_xmpp", "ngx_http_conclave",
                                     "ngx_stream_conclave", "cdir_",
                                     "caud_"))
                  else dso_bucket(dso))
        out[(key, bucket)] += 1
        syms[(key, sym, bucket)] += 1
    return out, syms


def perf_report(data, out_dir):
    """Samples per thread class, and the top functions."""
    script = subprocess.run(["perf", "script", "-i", data, "-F",
                             "comm,pid,tid,ip,sym,dso"],
                            capture_output=True, text=True).stdout
    with open(os.path.join(out_dir, "perf.script"), "w") as f:
        f.write(script)
    report = subprocess.run(["perf", "report", "-i", data, "--no-children",
                             "--sort", "dso,sym", "--stdio",
                             "--percent-limit", "0.7"],
                            capture_output=True, text=True).stdout
    with open(os.path.join(out_dir, "perf.report"), "w") as f:
        f.write(report)
    return script, report


def run(args, workdir):
    run_bench.build_loadgen()
    cpus = [int(c) for c in args.server_cpus.split(",")]
    main = ["worker_cpu_affinity %s;" % " ".join(
        run_bench.cpu_mask(cpus[i % len(cpus)])
        for i in range(args.workers))]
    app = Appliance(workdir, module_so=args.module, workers=args.workers,
                    log_level="warn", extra_main="\n".join(main))
    app.start()
    try:
        return measure(args, app, workdir)
    finally:
        app.stop()


def measure(args, app, workdir):
    uids = app.ldap.add_users("bench", 2 * args.concurrency)
    users = os.path.join(workdir, "users.txt")
    with open(users, "w") as f:
        f.write("\n".join(uids) + "\n")
    db = app.mariadb
    glog = os.path.join(workdir, "general.log")
    if args.general_log:
        db.query("SET GLOBAL general_log_file = '%s'; "
                 "SET GLOBAL general_log = 1" % glog)
    time.sleep(1.0)
    workers = app.nginx.worker_pids()
    t0 = {p: thread_ns(p) for p in workers}
    m0 = process_ns(db.pid)
    l0 = process_ns(app.ldap.pid)
    s0 = status(db)
    fd, lg_csv = tempfile.mkstemp(prefix="loadgen-", suffix=".csv")
    os.close(fd)
    os.unlink(lg_csv)
    cmd = [run_bench.LOADGEN, "--url",
           "tcp://127.0.0.1:%d" % app.nginx.xmpp_port,
           "--users", users, "--scenario", "login", "--target", "conclave",
           "--server-pids", ",".join(map(str, [app.nginx.pid] + workers)),
           "--aux-pids", str(app.ldap.pid), "--csv", lg_csv,
           "--label", "login_profile", "--proto", "xmpp",
           "--concurrency", str(args.concurrency),
           "--duration", str(args.duration), "--warmup", "0"]
    if args.loadgen_cpu:
        cmd += ["--cpu", args.loadgen_cpu]
    perf = None
    pdata = os.path.join(workdir, "perf.data")
    if args.perf:
        perf = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock",
                                 "-F", "1999", "-g", "-o", pdata, "-p",
                                 ",".join(map(str, workers))],
                                stdout=subprocess.DEVNULL)
        time.sleep(0.5)
    subprocess.run(cmd, check=True, timeout=120 + args.duration)
    if perf:
        perf.send_signal(2)
        perf.wait(60)
    time.sleep(0.5)
    t1 = {p: thread_ns(p) for p in workers}
    m1 = process_ns(db.pid)
    l1 = process_ns(app.ldap.pid)
    s1 = status(db)
    with open(lg_csv) as f:
        row = list(csv.DictReader(f))[-1]
    os.unlink(lg_csv)
    ok = int(row["ok"])
    if args.general_log:
        db.query("SET GLOBAL general_log = 0")
    script = ""
    if args.perf:
        out_dir = args.out
        os.makedirs(out_dir, exist_ok=True)
        script, report = perf_report(pdata, out_dir)
    perf_cls = classify(script)
    by_class = collections.Counter()
    for p in workers:
        for tid, (comm, ns) in t1[p].items():
            before = t0[p].get(tid, (comm, 0))[1]
            by_class[thread_class(p, tid, comm, perf_cls)] += ns - before
    split = perf_split(script, workers) if args.perf else None
    return {"row": row, "ok": ok, "by_class": by_class, "split": split,
            "mariadb": m1 - m0, "slapd": l1 - l0,
            "com": {k: s1.get(k, 0) - s0.get(k, 0) for k in s1},
            "shapes": general_log_shapes(glog) if args.general_log else None,
            "report": report if args.perf else None}


def us_per(ns, n):
    return ns / 1e3 / n if n else 0.0


def show(args, res):
    ok = res["ok"]
    row = res["row"]
    print("\nlogins %d in %.1f s: %.0f/s, p50 %s ms, p99 %s ms, errors %s"
          % (ok, float(row["duration_s"]), float(row["per_s"]), row["p50_ms"],
             row["p99_ms"], row["errors"]))
    print("server CPU per login (loadgen's window): %s us"
          % row["srv_cpu_us_per_op"])
    total = sum(res["by_class"].values())
    print("\nCPU per login by thread (us, whole run / logins):")
    for k, v in res["by_class"].most_common():
        print("  %-22s %7.1f" % (k, us_per(v, ok)))
    print("  %-22s %7.1f" % ("nginx total", us_per(total, ok)))
    print("  %-22s %7.1f" % ("mariadbd", us_per(res["mariadb"], ok)))
    print("  %-22s %7.1f" % ("slapd", us_per(res["slapd"], ok)))
    com = res["com"]
    print("\nMariaDB per login (SHOW GLOBAL STATUS deltas, / %d):" % ok)
    for k in ("Questions", "Queries"):
        print("  %-28s %6.2f" % (k, com.get(k, 0) / ok))
    for k, v in sorted(com.items(), key=lambda kv: -kv[1]):
        if k.startswith("Com_") and v > 0 and v >= ok / 20:
            print("  %-28s %6.2f" % (k, v / ok))
    if res["shapes"]:
        print("\nstatements of the run by shape (per login):")
        for k, v in res["shapes"].most_common(40):
            print("  %6.2f  %s" % (v / ok, k))
    if res["split"]:
        out, syms = res["split"]
        n = sum(out.values())
        print("\nperf samples of the workers' threads (%d), as us per login "
              "(share x nginx total), by thread and leaf library:" % n)
        for (k, b), v in out.most_common():
            if v >= n / 200:
                print("  %-16s %-16s %6.1f%% %7.1f"
                      % (k, b, 100.0 * v / n, us_per(total * v / n, ok)))
        print("\ntop leaf functions:")
        for (k, sym, b), v in syms.most_common(args.top):
            print("  %6.1f%%  %-16s %-14s %s"
                  % (100.0 * v / n, k, b, sym[:60]))
        print("(perf report and script in %s)" % args.out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--module", default=None,
                   help="the .so to load (default build/release/)")
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--server-cpus", default="0")
    p.add_argument("--loadgen-cpu", default="1")
    p.add_argument("--perf", action="store_true",
                   help="perf record the workers' threads")
    p.add_argument("--general-log", action="store_true",
                   help="MariaDB's general log: statements by shape "
                        "(costs mariadbd CPU: not for the figures)")
    p.add_argument("--top", type=int, default=45)
    p.add_argument("--out", default=os.path.join(REPO, "build", "bench",
                                                 "login-profile"))
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="login-profile-") as wd:
        show(args, run(args, wd))


if __name__ == "__main__":
    main()
