#!/usr/bin/python3
"""Where Conclave's CPU per delivered message goes (issue 4): measures,
never asserts.

    profile.py [--tool callgrind|perf] [--transport tcp|ws]
               [--rate R] [--messages N1,N2] [--workers 2]

callgrind (the default) counts instructions, which a noisy shared
machine does not change.  nginx runs under `valgrind --tool=callgrind`
(the workers are forked, so each one writes its own
callgrind.out.<pid>; the audit threads are counted with their worker),
and the load generator sends an open loop of R messages/s between 100
signed-in sessions.  Two runs that differ only in the number of
messages (N1 and N2) cancel what does not depend on it (start-up,
sign-in, shutdown): (Ir(N2) - Ir(N1)) / (delivered(N2) - delivered(N1))
is the cost of one more delivered message, attributed by function and
summed into the buckets of BUCKETS.

perf samples (cpu-clock, as this VM has no hardware counters) the
workers of an appliance run at full speed, kernel included, for the
syscalls callgrind cannot see: one run at R messages/s, a report by
shared object and symbol, and the same buckets.

Results are printed and kept in build/bench/profile/.  The method and
a breakdown are in docs/benchmarks.md ("Where the time goes").
"""

import argparse
import collections
import csv
import glob
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

import nginx as nginx_mod  # noqa: E402
import run_bench  # noqa: E402
from appliance import Appliance  # noqa: E402

OUT = os.path.join(REPO, "build", "bench", "profile")

# (bucket, regex on "function [object]"), first match wins; the order
# puts the specific before the general
BUCKETS = [
    ("syscalls and kernel", r"\[kernel|\[vdso|^(__)?(libc_)?(write|writev|"
     r"pwrite64|pwrite|read|readv|recv|recvfrom|send|sendto|sendmsg|"
     r"recvmsg|epoll_wait|epoll_ctl|fdatasync|fsync|eventfd_write|"
     r"clock_gettime|__GI___clock_gettime|syscall|futex)"),
    ("TLS (OpenSSL libssl)", r"libssl|^SSL_|^ssl3?_|^tls1?_|^aesni|^gcm|"
     r"^ChaCha|^poly1305"),
    ("journal chain: SHA-256, CRC32C (append + shipper check)",
     r"sha256|SHA256|crc32c|caud_crc|caud_journal_write|caud_hasher|"
     r"caud_put|EVP_Digest|ossl_sha|sha2|libcrypto"),
    ("shipper: JSON columns, MariaDB client", r"caud_js_|caud_column|"
     r"caud_ship|caud_reader|libmariadb|mysql_|ma_|mthd_"),
    ("audit record build (jansson objects)", r"^json_|jansson|hashtable_|"
     r"jsonp_|caud_record_(new|set)|ngx_xmpp_audit_(record|actor|param)"),
    ("audit record encode (canonical JSON)",
     r"caud_record_encode|caud_enc_|caud_flat_|caud_utf8"),
    ("audit ring, sync round, wake-ups", r"caud_journal_(sync|durable|"
     r"append)|ngx_xmpp_audit_(ready|drain|wake|append|message|ring|"
     r"sync)|pthread_|__pthread|lll_|futex"),
    ("malloc/free", r"^(__libc_|_int_|__GI___libc_)?(malloc|free|"
     r"calloc|realloc)|^_int_|^tcache|^malloc_|^unlink_chunk|"
     r"^arena_|^sysmalloc|^cfree|^__malloc"),
    ("XML parser (libxml2 SAX + ours)", r"^xml|^__xml|htmlParse|"
     r"ngx_xmpp_parser|ngx_xmpp_xml|ngx_xmpp_node|libxml2"),
    ("WebSocket framing", r"ngx_xmpp_ws|ngx_xmpp_wsframe"),
    ("IPC between workers", r"ngx_xmpp_ipc"),
    ("router, registry, presence", r"ngx_xmpp_(router|registry|jid|"
     r"presence|session_find)"),
    ("session, stream, TCP glue", r"ngx_xmpp_(session|stream|tcp|wbuf)|"
     r"ngx_stream_"),
    ("nginx core (events, pools, buffers)", r"^ngx_"),
    ("libc string/memory", r"^(__)?(mem|str|__mem|__str|__nss|_IO_|"
     r"vfprintf|__vfprintf|printf|snprintf|vsnprintf|__printf)"),
]


def bucket_of(name):
    for b, rx in BUCKETS_RE:
        if rx.search(name):
            return b
    return "other"


BUCKETS_RE = [(b, re.compile(rx)) for b, rx in BUCKETS]


def children(pid):
    if pid is None:
        return []
    out = []
    for t in glob.glob("/proc/%d/task/*/children" % pid):
        try:
            with open(t) as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return sorted(out)


def wrapper(path, outdir):
    """A script that starts nginx (and so its workers) under callgrind."""
    with open(path, "w") as f:
        f.write("#!/bin/sh\nexec valgrind --tool=callgrind -q "
                "--callgrind-out-file=%s/callgrind.out.%%p "
                "--dump-instr=no --collect-jumps=no --separate-threads=no "
                "/usr/sbin/nginx \"$@\"\n" % outdir)
    os.chmod(path, 0o755)


def annotate(files):
    """Exclusive instructions per 'function [object]', summed over
    files (callgrind_annotate's own totals)."""
    per = collections.Counter()
    total = 0
    for fn in files:
        r = subprocess.run(["callgrind_annotate", "--inclusive=no",
                            "--threshold=100", "--show-percs=no", fn],
                           capture_output=True, text=True)
        for line in r.stdout.splitlines():
            m = re.match(r"^\s*([\d,]+)\s+\(?.*?\)?\s*(\S.*)$", line)
            if not m or "PROGRAM TOTALS" in line:
                mt = re.match(r"^\s*([\d,]+).*PROGRAM TOTALS", line)
                if mt:
                    total += int(mt.group(1).replace(",", ""))
                continue
            name = m.group(2)
            # "file:function [object]" -> "function [object]"
            name = re.sub(r"^[^ :]*:", "", name)
            per[name] += int(m.group(1).replace(",", ""))
    return per, total


def inclusive(files, names):
    """Inclusive instructions of a few functions, summed over files."""
    out = collections.Counter()
    for fn in files:
        r = subprocess.run(["callgrind_annotate", "--inclusive=yes",
                            "--threshold=100", "--show-percs=no", fn],
                           capture_output=True, text=True)
        for line in r.stdout.splitlines():
            m = re.match(r"^\s*([\d,]+)\s+(\S.*)$", line)
            if not m:
                continue
            name = re.sub(r"^[^ :]*:", "", m.group(2)).split(" ")[0]
            if name in names:
                out[name] += int(m.group(1).replace(",", ""))
    return out


SYSCALLS = ["fdatasync", "pwrite64", "write", "read", "writev", "readv",
            "recvfrom", "sendto", "sendmsg", "recvmsg", "epoll_wait",
            "futex"]

KEY_FUNCS = [
    "ngx_xmpp_audit_message", "caud_journal_append", "caud_record_encode",
    "caud_journal_sync", "ngx_xmpp_audit_ready", "ngx_xmpp_router_deliver",
    "ngx_xmpp_parser_feed", "ngx_xmpp_ipc_send", "ngx_xmpp_ipc_read",
    "ngx_xmpp_session_send", "ngx_xmpp_tcp_read", "ngx_xmpp_ws_read",
    "ngx_xmpp_audit_sync_thread",
]
# (the shipper thread's inclusive figures are left out: MariaDB's
# non-blocking API switches stacks, which callgrind's call tree does
# not follow; its exclusive costs are in the buckets)


def start_appliance(args, workdir, tool_dir):
    if args.tool == "callgrind":
        w = os.path.join(workdir, "nginx-callgrind")
        wrapper(w, tool_dir)
        nginx_mod.NGINX = w
    # valgrind keeps the top descriptors for itself: no
    # worker_rlimit_nofile (setrlimit fails under it); 100 sessions fit
    main = []
    if args.server_cpus:
        main.append("worker_cpu_affinity %s;" % " ".join(
            [run_bench.cpu_mask(int(args.server_cpus))] * args.workers))
    app = Appliance(workdir, module_so=args.module, workers=args.workers,
                    log_level="warn", extra_main="\n".join(main),
                    tls=False)
    if args.tool == "callgrind":
        # under valgrind /proc/PID/cmdline is valgrind's, never "nginx:
        # worker process": the workers are the master's children
        app.nginx.worker_pids = lambda: children(app.nginx.pid)
        start = app.nginx.start
        app.nginx.start = lambda timeout=30.0: start(timeout=300.0)
    app.start()
    uids = app.ldap.add_users("bench", args.sessions)
    users = os.path.join(workdir, "users.txt")
    with open(users, "w") as f:
        f.write("\n".join(uids) + "\n")
    return app, users


def url(args, app):
    if args.transport == "ws":
        return app.ws_url
    return "tcp://127.0.0.1:%d" % app.nginx.xmpp_port


def loadgen(args, app, users, n, csv_path):
    pids = [app.nginx.pid] + app.nginx.worker_pids()
    cmd = [run_bench.LOADGEN, "--url", url(args, app), "--users", users,
           "--sessions", str(args.sessions), "--warmup", "1",
           "--ramp", "20", "--timeout", "120",
           "--server-pids", ",".join(map(str, pids)),
           "--csv", csv_path, "--target", "conclave",
           "--label", "profile %s" % args.tool]
    if args.window:
        # closed loop: W messages in flight per sender, for a duration
        cmd += ["--scenario", "chat-saturation", "--window",
                str(args.window), "--duration", "%.2f" % args.duration]
    else:
        cmd += ["--scenario", "chat-fixed-rate", "--rate", str(args.rate),
                "--duration", "%.2f" % (n / args.rate)]
    if args.loadgen_cpu:
        cmd += ["--cpu", args.loadgen_cpu]
    print("+ " + " ".join(cmd), flush=True)
    rc = subprocess.run(cmd).returncode
    with open(csv_path) as f:
        row = list(csv.DictReader(f))[-1]
    if rc != 0:
        print("*** loadgen exit %d: the profile is not clean" % rc)
    return row


def callgrind_run(args, n, tag):
    """One appliance under callgrind, n messages; returns (per-function
    Ir, total Ir, inclusive Ir of KEY_FUNCS, messages delivered)."""
    tool_dir = os.path.join(OUT, "callgrind-%s-%d" % (tag, n))
    os.makedirs(tool_dir, exist_ok=True)
    for f in glob.glob(os.path.join(tool_dir, "callgrind.out.*")):
        os.unlink(f)
    workdir = tempfile.mkdtemp(prefix="conclave-profile-")
    app, users = start_appliance(args, workdir, tool_dir)
    csv_path = os.path.join(tool_dir, "loadgen.csv")
    try:
        row = loadgen(args, app, users, n, csv_path)
        # all messages counted: sent during warm-up too
        delivered = int(float(row["ok"]))
    finally:
        app.nginx.stop(timeout=600)
        app.stop()
    files = glob.glob(os.path.join(tool_dir, "callgrind.out.*"))
    per, total = annotate(files)
    inc = inclusive(files, set(KEY_FUNCS))
    return per, total, inc, delivered, row


def report_callgrind(args):
    n1, n2 = args.messages
    r1 = callgrind_run(args, n1, args.transport)
    r2 = callgrind_run(args, n2, args.transport)
    per1, tot1, inc1, d1, _ = r1
    per2, tot2, inc2, d2, _ = r2
    # the window counts only measured deliveries; scale by the offered
    # count, which the open loop delivers in full (errors are reported)
    dn = d2 - d1
    if dn <= 0:
        print("*** no difference in delivered messages (%d, %d)" % (d1, d2))
        return 1
    print("\ncallgrind, %s, %d workers, %.0f msgs/s open loop, "
          "%d sessions: runs of %d and %d messages, %d and %d delivered "
          "in the measured windows" % (args.transport, args.workers,
                                       args.rate, args.sessions, n1, n2,
                                       d1, d2))
    print("instructions per delivered message (difference of the runs): "
          "%.0f" % ((tot2 - tot1) / dn))
    buckets = collections.Counter()
    funcs = collections.Counter()
    for name in set(per1) | set(per2):
        d = per2[name] - per1[name]
        buckets[bucket_of(name)] += d
        funcs[name] += d
    lines = ["| bucket | instructions per message | share |", "|---|---|---|"]
    tot = sum(buckets.values())
    for b, v in buckets.most_common():
        lines.append("| %s | %.0f | %.1f%% |" % (b, v / dn, 100.0 * v / tot))
    print("\n".join(lines))
    print("\ntop functions (exclusive, per message):")
    for name, v in funcs.most_common(args.top):
        print("  %8.0f  %-28s %s" % (v / dn, bucket_of(name), name[:90]))
    print("\ninclusive, per message:")
    for name in KEY_FUNCS:
        if inc1[name] or inc2[name]:
            print("  %8.0f  %s" % ((inc2[name] - inc1[name]) / dn, name))
    with open(os.path.join(OUT, "callgrind-%s.md" % args.transport),
              "w") as f:
        f.write("\n".join(lines) + "\n")
    return 0


def report_perf(args):
    workdir = tempfile.mkdtemp(prefix="conclave-profile-")
    os.makedirs(OUT, exist_ok=True)
    data = os.path.join(OUT, "perf-%s.data" % args.transport)
    app, users = start_appliance(args, workdir, OUT)
    stat_path = None
    csv_path = os.path.join(OUT, "perf-loadgen.csv")
    if os.path.exists(csv_path):
        os.unlink(csv_path)
    try:
        pids = ",".join(map(str, app.nginx.worker_pids()))
        dur = (args.duration if args.window
               else args.messages[-1] / args.rate)
        rec = subprocess.Popen(["perf", "record", "-q", "-F", "1999", "-g",
                                "-p", pids, "-o", data, "--", "sleep",
                                "%.0f" % (dur + 6)])
        # syscalls counted by tracepoint over the same processes
        stat_path = os.path.join(OUT, "perf-%s-syscalls.txt"
                                 % args.transport)
        stat = subprocess.Popen(
            ["perf", "stat", "-x", ",", "-o", stat_path, "-p", pids]
            + sum([["-e", "syscalls:sys_enter_" + c] for c in SYSCALLS],
                  []) + ["--", "sleep", "%.0f" % (dur + 6)])
        time.sleep(1)
        row = loadgen(args, app, users, args.messages[-1], csv_path)
        rec.wait()
        stat.wait()
    finally:
        app.stop()
    delivered = float(row["ok"])
    r = subprocess.run(["perf", "report", "-i", data, "--no-children",
                        "--sort", "dso,sym", "--stdio", "-g", "none",
                        "--percent-limit", "0.05"],
                       capture_output=True, text=True)
    buckets = collections.Counter()
    rows = []
    for line in r.stdout.splitlines():
        m = re.match(r"^\s*([\d.]+)%\s+(\S+)\s+\[.\]\s+(.*)$", line)
        if not m:
            continue
        pct, dso, sym = float(m.group(1)), m.group(2), m.group(3).strip()
        name = "%s [%s]" % (sym, dso)
        if dso.startswith("[kernel"):
            name = "[kernel] " + sym
        buckets[bucket_of(name)] += pct
        rows.append((pct, name))
    cpu = float(row.get("srv_cpu_us_per_op") or 0)
    print("\nperf (cpu-clock), %s, %s, %.0f delivered (%.0f/s), "
          "%.1f us server CPU per message"
          % (args.transport, "W = %d" % args.window if args.window
             else "%.0f msgs/s" % args.rate, delivered,
             float(row.get("per_s") or 0), cpu))
    print("| bucket | share of samples | us per message |")
    print("|---|---|---|")
    for b, v in buckets.most_common():
        print("| %s | %.1f%% | %.1f |" % (b, v, cpu * v / 100))
    print("\nsyscalls per delivered message (perf stat, all threads of "
          "the workers, warm-up and sign-in included):")
    total = 0.0
    with open(stat_path) as f:
        for line in f:
            parts = line.strip().split(",")
            if len(parts) > 2 and parts[2].startswith("syscalls:"):
                try:
                    n = float(parts[0])
                except ValueError:
                    continue
                total += n
                print("  %-12s %6.2f" % (parts[2].split("sys_enter_")[1],
                                         n / delivered))
    print("  %-12s %6.2f" % ("all these", total / delivered))
    print("\ntop symbols:")
    for pct, name in sorted(rows, reverse=True)[:args.top]:
        print("  %5.2f%%  %-28s %s" % (pct, bucket_of(name), name[:90]))
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tool", choices=("callgrind", "perf"),
                   default="callgrind")
    p.add_argument("--transport", choices=("tcp", "ws"), default="tcp")
    p.add_argument("--rate", type=float, default=None,
                   help="messages/s (default 100 under callgrind, 5000 "
                        "with perf)")
    p.add_argument("--messages", default=None,
                   help="N1,N2 for callgrind (default 1000,3000); N for "
                        "perf (default 100000)")
    p.add_argument("--sessions", type=int, default=100)
    p.add_argument("--window", type=int, default=0,
                   help="perf only: chat-saturation with W messages in "
                        "flight per sender instead of an open loop")
    p.add_argument("--duration", type=float, default=10.0,
                   help="measured seconds with --window")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--server-cpus", default="0")
    p.add_argument("--loadgen-cpu", default="1")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--module", default=os.path.join(
        REPO, "build", "release", "ngx_http_conclave_module.so"))
    a = p.parse_args(argv)
    if a.rate is None:
        a.rate = 100.0 if a.tool == "callgrind" else 5000.0
    if a.messages is None:
        a.messages = "1000,3000" if a.tool == "callgrind" else "100000"
    a.messages = [int(x) for x in a.messages.split(",")]
    os.makedirs(OUT, exist_ok=True)
    run_bench.build_loadgen()
    if a.window and a.tool != "perf":
        p.error("--window needs --tool perf")
    if a.tool == "callgrind":
        if len(a.messages) != 2 or a.messages[0] >= a.messages[1]:
            p.error("--messages N1,N2 with N1 < N2")
        return report_callgrind(a)
    return report_perf(a)


if __name__ == "__main__":
    sys.exit(main())
