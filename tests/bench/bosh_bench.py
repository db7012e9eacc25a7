#!/usr/bin/python3
"""BOSH figures (issue 5): request round-trip latency at moderate load and
memory per idle BOSH session.  Measures, asserts nothing.

    bosh_bench.py [--sessions 50] [--rate 10] [--seconds 10]
                  [--idle 1000] [--workers 2]

Round trip: each of --sessions signed-in BOSH sessions (real LDAP bind)
keeps one request held, as a browser does (hold=1), and sends an
XEP-0199 ping --rate times a second on its second connection.  The
figure is the time from writing the ping's request to reading the pong,
whichever of the two requests carries it, so it includes answering the
held request and re-polling, which is what a user of a BOSH client
waits for.

Control: the same client, the same number of connections and rate,
each POSTing to a location that nginx answers by itself (`return 200`,
no module code), run right after the BOSH pass.  Its p99 is what the
machine and this Python client cost at that moment; the BOSH p99 above
it is what BOSH in the module adds.

Idle memory: --idle sessions signed in, bound, with initial presence and
one held request each; the figure is the growth of the workers' PSS
divided by the count.

The client is Python asyncio in one process; at a few hundred requests
a second it is far from its own limit on this machine.
"""

import argparse
import asyncio
import base64
import os
import re
import resource
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))
sys.path.insert(0, HERE)

from appliance import Appliance  # noqa: E402
from tcp_idle_bench import mem_kib  # noqa: E402

NS = "http://jabber.org/protocol/httpbind"
XBOSH = "urn:xmpp:xbosh"


class Conn:
    """One keep-alive HTTP/1.1 connection to /http-bind."""

    def __init__(self, port):
        self.port = port

    async def open(self):
        self.r, self.w = await asyncio.open_connection("127.0.0.1",
                                                       self.port)

    def post(self, body):
        data = body.encode()
        self.w.write(b"POST /http-bind HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: text/xml; charset=utf-8\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(data), data))

    async def response(self):
        head = await self.r.readuntil(b"\r\n\r\n")
        m = re.search(rb"(?i)content-length:\s*(\d+)", head)
        if not head.startswith(b"HTTP/1.1 200") or not m:
            raise RuntimeError("bad response: %r" % head[:200])
        return (await self.r.readexactly(int(m.group(1)))).decode()

    async def call(self, body):
        self.post(body)
        return await self.response()

    def close(self):
        self.w.close()


class Session:
    def __init__(self, port, user, rid):
        self.a, self.b = Conn(port), Conn(port)
        self.user, self.rid = user, rid

    def body(self, inner="", attrs=""):
        self.rid += 1
        return ("<body rid='%d' sid='%s' xmlns='%s' xmlns:xmpp='%s' %s>%s"
                "</body>" % (self.rid, self.sid, NS, XBOSH, attrs, inner))

    async def login(self):
        await self.a.open()
        await self.b.open()
        first = await self.a.call(
            "<body rid='%d' wait='60' hold='1' to='example.com' "
            "xml:lang='en' ver='1.11' xmpp:version='1.0' xmlns='%s' "
            "xmlns:xmpp='%s'/>" % (self.rid, NS, XBOSH))
        self.sid = re.search(r"sid='([^']+)'|sid=\"([^\"]+)\"", first)
        self.sid = self.sid.group(1) or self.sid.group(2)
        auth = base64.b64encode(("\0%s\0%s-pw" % (self.user, self.user))
                                .encode()).decode()
        r = await self.a.call(self.body(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
            "mechanism='PLAIN'>%s</auth>" % auth))
        if "<success" not in r:
            raise RuntimeError("sign-in failed: %s" % r[:200])
        await self.a.call(self.body(attrs="xmpp:restart='true'"))
        r = await self.a.call(self.body(
            "<iq type='set' id='b1' xmlns='jabber:client'><bind "
            "xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>"))
        if "<jid>" not in r:
            raise RuntimeError("bind failed: %s" % r[:200])
        self.jid = re.search(r"<jid>([^<]+)</jid>", r).group(1)
        # initial presence, answered at once (our own presence back)
        await self.a.call(self.body("<presence xmlns='jabber:client'/>"))
        # then one request held, as a browser keeps it
        self.a.post(self.body())

    async def pings(self, n, interval, lat):
        """n pings, one every interval seconds; a and b swap roles: the
        held request is answered when the ping arrives, and its
        connection re-polls after the pong came back."""
        held, free = self.a, self.b
        for i in range(n):
            t0 = time.perf_counter()
            pid = "p%d" % i
            free.post(self.body(
                "<iq type='get' id='%s' to='example.com' "
                "xmlns='jabber:client'><ping xmlns='urn:xmpp:ping'/></iq>"
                % pid))
            pending = {held: asyncio.ensure_future(held.response()),
                       free: asyncio.ensure_future(free.response())}
            got = False
            while pending:
                done, _ = await asyncio.wait(
                    pending.values(), return_when=asyncio.FIRST_COMPLETED)
                for conn in [c for c, f in pending.items() if f in done]:
                    text = pending.pop(conn).result()
                    if ("id='%s'" % pid) in text or \
                            ('id="%s"' % pid) in text:
                        lat.append(time.perf_counter() - t0)
                        got = True
                    if not got and conn is held and free in pending:
                        # the held request came back empty: poll again
                        # so the pong has somewhere to go (hold=1)
                        held.post(self.body())
                        pending[held] = asyncio.ensure_future(
                            held.response())
                if got and len(pending) == 1:
                    # the other request stays held for the next round
                    other = list(pending)[0]
                    pending[other].cancel()
                    try:
                        await pending[other]
                    except asyncio.CancelledError:
                        pass
                    # a cancelled read loses nothing: no bytes arrive on a
                    # held request until something is sent
                    held, free = other, [c for c in (self.a, self.b)
                                         if c is not other][0]
                    break
            if not got:
                raise RuntimeError("no pong for %s" % pid)
            if len(pending) == 0:
                # both answered: hold one again
                held, free = self.a, self.b
                held.post(self.body())
            await asyncio.sleep(max(0.0, interval
                                    - (time.perf_counter() - t0)))

    def close(self):
        self.a.close()
        self.b.close()


CONTROL = "/bench-echo"


async def control(port, n, rate, seconds):
    """n keep-alive connections, each POSTing a BOSH-sized empty body to
    CONTROL every 1/rate s; the round trips."""
    lat = []

    async def one():
        c = Conn(port)
        await c.open()
        body = "<body rid='1' sid='x' xmlns='%s'/>" % NS
        for _ in range(int(rate * seconds)):
            t0 = time.perf_counter()
            data = body.encode()
            c.w.write(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Content-Type: text/xml; charset=utf-8\r\n"
                      b"Content-Length: %d\r\n\r\n%s"
                      % (CONTROL.encode(), len(data), data))
            await c.response()
            lat.append(time.perf_counter() - t0)
            await asyncio.sleep(max(0.0, 1.0 / rate
                                    - (time.perf_counter() - t0)))
        c.close()

    await asyncio.gather(*[one() for _ in range(n)])
    return lat


def cpu_s(pids):
    """utime + stime of pids, in seconds (/proc/PID/stat)."""
    total = 0
    for pid in pids:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def summary(lat):
    return ("p50 %.2f ms, p99 %.2f ms, max %.2f ms, mean %.2f ms"
            % (pct(lat, 50) * 1e3, pct(lat, 99) * 1e3, max(lat) * 1e3,
               statistics.mean(lat) * 1e3))


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p / 100))]


async def round_trip(port, n, rate, seconds, errors):
    sessions = [Session(port, "bosh%d" % (i + 1), 10000 + i * 100000)
                for i in range(n)]
    await asyncio.gather(*[s.login() for s in sessions])
    lat = []
    pings = int(rate * seconds)
    t0 = time.monotonic()
    results = await asyncio.gather(
        *[s.pings(pings, 1.0 / rate, lat) for s in sessions],
        return_exceptions=True)
    elapsed = time.monotonic() - t0
    for r in results:
        if isinstance(r, Exception):
            errors.append(repr(r))
    for s in sessions:
        s.close()
    return lat, elapsed


async def idle(port, k, errors, sem_size=64):
    sessions, sem = [], asyncio.Semaphore(sem_size)

    async def one(i):
        async with sem:
            s = Session(port, "bosh%d" % i, 10000 + i * 1000)
            try:
                await s.login()
                sessions.append(s)
            except Exception as e:
                errors.append(repr(e))

    await asyncio.gather(*[one(i) for i in range(1, k + 1)])
    return sessions


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sessions", type=int, default=50)
    p.add_argument("--rate", type=float, default=10.0,
                   help="pings per second per session")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--idle", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    work = tempfile.mkdtemp(prefix="bosh-bench-")
    app = Appliance(work, workers=args.workers, log_level="warn",
                    extra_server="location = %s { return 200 "
                                 "\"<body xmlns='%s'/>\"; }" % (CONTROL, NS))
    app.start()
    try:
        app.ldap.add_users("bosh", max(args.sessions, args.idle))
        port = app.nginx.http_port
        errors = []
        workers = app.nginx.worker_pids()
        lat, elapsed = asyncio.run(round_trip(port, args.sessions, args.rate,
                                              args.seconds, errors))
        # the workers' CPU over the whole pass (sign-ins included) per
        # pong: what a round trip costs the server, whatever the load
        cpu = cpu_s(workers)
        print("round trip: %d sessions x %.0f pings/s for %.0f s "
              "(%.0f requests/s offered), %d workers, load %s"
              % (args.sessions, args.rate, args.seconds,
                 args.sessions * args.rate, args.workers,
                 os.getloadavg()[0]))
        if lat:
            print("  %d pongs: %s; workers' CPU %.0f us per pong (sign-ins "
                  "included)" % (len(lat), summary(lat), cpu * 1e6 / len(lat)))
        if errors:
            print("  FAILED: %d sessions, first: %s" % (len(errors),
                                                       errors[0]))
        cpu = cpu_s(workers)
        lat = asyncio.run(control(port, args.sessions, args.rate,
                                  args.seconds))
        cpu = cpu_s(workers) - cpu
        print("  control, nginx's own `return 200` at the same rate "
              "(load %.1f): %s; workers' CPU %.0f us per request"
              % (os.getloadavg()[0], summary(lat), cpu * 1e6 / len(lat)))

        if args.idle:
            workers = app.nginx.worker_pids()
            time.sleep(1)
            before = mem_kib(workers)
            errors = []
            loop = asyncio.new_event_loop()
            sessions = loop.run_until_complete(idle(port, args.idle, errors))
            time.sleep(3)
            after = mem_kib(workers)
            k = len(sessions)
            print("idle: %d sessions with a held request each (%d failed)"
                  % (k, len(errors)))
            if errors:
                print("  FAILED, first: %s" % errors[0])
            if k:
                print("  per idle session: PSS %.2f KiB, RSS %.2f KiB "
                      "(workers' PSS %d -> %d KiB)"
                      % ((after[0] - before[0]) / k,
                         (after[1] - before[1]) / k, before[0], after[0]))
            for s in sessions:
                s.close()
            loop.close()
    finally:
        app.stop()


if __name__ == "__main__":
    main()
