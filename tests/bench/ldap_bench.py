"""Directory sign-in throughput and latency (issue 6), measured, not asserted.

Runs ldap/ (cdir_authenticate, what the module runs in its thread pool)
from tests/lib/cdir_cli.c against a private slapd (tests/lib/slapd.py)
with USERS extra accounts in the sign-in group, and prints:

- cold: sign-ins/s when every sign-in searches, resolves groups and binds
  (closed loop, THREADS threads; pooled connections), and p50/p99;
- p99 at half of that peak (open loop, paced);
- the shared-roster read of a 1,000-member department group by the
  library (what each worker's refresh does), and the roster get of one
  of its members through nginx (WebSocket, the snapshot in memory);
- warm: sign-ins/s served by the verified-credentials cache.  The cache
  is, by design, only consulted when the directory cannot answer
  (conclave_ldap_outage cache), so "warm" is measured with slapd
  stopped: each attempt still tries to connect (refused at once) before
  the cache answers.

    /usr/bin/python3 tests/bench/ldap_bench.py [--users 500] [--threads 16]
        [--attempts 8000]
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(TOP, "tests", "lib"))

from slapd import (BASE, SERVICE_DN, SERVICE_PW, SIGNIN_GROUP_DN,  # noqa
                   USER_FILTER, Slapd)

SRCS = ["cdir.c", "cdir_conn.c", "cdir_group.c", "cdir_cache.c",
        "cdir_vcard.c"]


def build(out):
    subprocess.run(
        ["cc", "-std=gnu99", "-O2", "-g", "-Wall", "-Werror",
         "-I" + os.path.join(TOP, "ldap", "src"), "-o", out,
         os.path.join(TOP, "tests", "lib", "cdir_cli.c")]
        + [os.path.join(TOP, "ldap", "src", f) for f in SRCS]
        + ["-lldap", "-llber", "-lcrypto", "-lpthread"], check=True)


def run(cli, uri, threads, per_thread, users, opts=(), rate=None,
        stdin=None):
    cmd = [cli, "--quiet", "--users", str(users), "--threads", str(threads),
           "--repeat", str(per_thread), "--pool", str(threads)]
    if rate:
        cmd += ["--rate", "%.0f" % rate]
    cmd += list(opts) + [uri, SERVICE_DN, SERVICE_PW, BASE, USER_FILTER,
                         SIGNIN_GROUP_DN, "5000", "bu", "unused"]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=600)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("BENCH")]
    if not line:
        raise RuntimeError("no figures: %s %s" % (r.stdout, r.stderr))
    return dict((k, float(v)) for k, v in
                re.findall(r"(\w+)=([\d.]+)", line[0]))


def show(name, f):
    print("%-44s %8.0f /s   p50 %6.2f ms   p99 %6.2f ms   max %7.2f ms"
          "   failed %d" % (name, f["rate"], f["p50_ms"], f["p99_ms"],
                            f["max_ms"], f["failed"]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=500)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--attempts", type=int, default=8000)
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="ldap-bench-")
    cli = os.path.join(work, "cdir_cli")
    build(cli)
    per = max(1, args.attempts // args.threads)

    ldap = Slapd(os.path.join(work, "slapd"))
    ldap.start()
    try:
        ldap.add_users("bu", args.users)
        print("slapd %s, %d users, %d threads, %d attempts per run, "
              "cpus %d" % (ldap.uri, args.users, args.threads,
                           per * args.threads, os.cpu_count()))

        configs = [
            ("cold, member search, nesting depth 4", []),
            ("cold, memberOf, no nesting", ["--set", "mode=memberof",
                                             "--set", "depth=0"]),
        ]
        peak = {}
        for name, opts in configs:
            run(cli, ldap.uri, args.threads, 20, args.users, opts)  # warm-up
            f = run(cli, ldap.uri, args.threads, per, args.users, opts)
            show(name, f)
            peak[name] = (f["rate"], opts)

        for name, (rate, opts) in peak.items():
            f = run(cli, ldap.uri, args.threads, per, args.users, opts,
                    rate=rate / 2)
            show("  at half peak (%.0f/s offered)" % (rate / 2), f)

        # warm: one process fills its cache, slapd stopped, then timed
        f = run_warm(cli, ldap, args, per)
        show("warm, credentials cache (directory stopped)", f)

        roster_figures(cli, work)
    finally:
        ldap.stop()


def roster_figures(cli, work):
    """A department of 1,000 (+5 demo users): the library's read and the
    roster get through a running appliance."""
    import time
    from appliance import Appliance
    from rawws import RawWS

    extra = """
        conclave_ldap_group_mode memberof;
        conclave_ldap_name_attribute uid;
        conclave_ldap_shared_group "%s";
        conclave_ldap_refresh 2s;
    """ % SIGNIN_GROUP_DN
    app = Appliance(os.path.join(work, "app"), extra_http=extra)
    app.start()
    try:
        app.ldap.add_users("m", 1000)
        times = []
        for _ in range(5):
            p = subprocess.run(
                [cli, "--members", SIGNIN_GROUP_DN, "--set", "mode=memberof",
                 "--set", "name=uid", app.ldap.uri, SERVICE_DN, SERVICE_PW,
                 BASE, USER_FILTER, SIGNIN_GROUP_DN, "5000"],
                stdout=subprocess.PIPE, text=True)
            last = p.stdout.splitlines()[-1]
            t0 = time.monotonic()
            subprocess.run(
                [cli, "--members", SIGNIN_GROUP_DN, "--set", "mode=memberof",
                 "--set", "name=uid", app.ldap.uri, SERVICE_DN, SERVICE_PW,
                 BASE, USER_FILTER, SIGNIN_GROUP_DN, "5000"],
                stdout=subprocess.DEVNULL)
            times.append(time.monotonic() - t0)
        print("shared group read by the library (%s, cdir_cli process "
              "included): best %.1f ms" % (last, min(times) * 1e3))

        ws = RawWS(app.nginx.http_port)
        ws.login("alice", "alice-pw", presence=False)
        deadline = time.monotonic() + 30
        items, lat = 0, []
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            ws.send("<iq xmlns='jabber:client' type='get' id='r'>"
                    "<query xmlns='jabber:iq:roster'/></iq>")
            # the answer, not a roster push (a refresh that sees the new
            # members pushes them to alice, one <iq type='set'/> each)
            reply = ws.expect(r"id='r'")
            dt = time.monotonic() - t0
            items = reply.count("<item ")
            if items >= 1000:
                lat.append(dt)
                if len(lat) == 20:
                    break
            else:
                time.sleep(0.2)
        ws.close()
        lat.sort()
        if lat:
            print("roster get with %d shared contacts through nginx: "
                  "p50 %.1f ms, max %.1f ms (%d gets, %d bytes)"
                  % (items, lat[len(lat) // 2] * 1e3, lat[-1] * 1e3,
                     len(lat), len(reply)))
        else:
            print("roster never reached 1,000 items (%d)" % items)
    finally:
        app.stop()


def run_warm(cli, ldap, args, per):
    """Fill pass (every user once), slapd stopped, timed pass, in one
    cdir_cli so that the cache (process memory) is the same."""
    fill = -(-args.users // args.threads)
    cmd = [cli, "--quiet", "--users", str(args.users), "--threads",
           str(args.threads), "--repeat", str(fill), "--pool",
           str(args.threads), "--then", str(per),
           "--set", "outage=cache", "--set", "ttl=600",
           ldap.uri, SERVICE_DN, SERVICE_PW, BASE, USER_FILTER,
           SIGNIN_GROUP_DN, "5000", "bu", "unused"]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    first = p.stdout.readline()
    if not first.startswith("BENCH"):
        raise RuntimeError(first)
    ldap.stop()
    p.stdin.write("go\n")
    p.stdin.flush()
    line = p.stdout.readline()
    p.wait(timeout=600)
    ldap.start()
    return dict((k, float(v)) for k, v in
                re.findall(r"(\w+)=([\d.]+)", line))


if __name__ == "__main__":
    main()
