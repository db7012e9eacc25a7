#!/usr/bin/python3
"""First figures for the spine (issue 2), printed, never asserted.

    spine_figures.py [--sessions N] [--messages N]

Starts its own appliance (tests/lib) and measures:
  * memory of idle authenticated WebSocket sessions: the nginx workers'
    RSS and PSS before and after N sessions with initial presence,
    divided by N;
  * messages per second between two sessions on different workers,
    closed loop (send, wait for delivery, repeat), with the median
    round-trip time.
The load generator proper (C, epoll) is issue 4; this is a quick loop.
"""

import argparse
import asyncio
import base64
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))

import websockets  # noqa: E402

from appliance import Appliance  # noqa: E402

FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
OPEN = "<open xmlns='%s' to='example.com' version='1.0'/>" % FRAMING


def mem(pids):
    rss = pss = 0
    for pid in pids:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return rss, pss


async def expect(ws, needle):
    while True:
        m = await ws.recv()
        if needle in m:
            return m


async def session(url, user, resource):
    ws = await websockets.connect(url, subprotocols=["xmpp"],
                                  max_queue=None, ping_interval=None)
    await ws.send(OPEN)
    await expect(ws, "stream:features")
    cred = base64.b64encode(("\0%s\0%s-pw" % (user, user)).encode())
    await ws.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
                  "mechanism='PLAIN'>%s</auth>" % cred.decode())
    r = await expect(ws, "<")
    assert "<success" in r, r
    await ws.send(OPEN)
    await expect(ws, "stream:features")
    await ws.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:"
                  "ns:xmpp-bind'><resource>%s</resource></bind></iq>"
                  % resource)
    await expect(ws, "<jid>")
    await ws.send("<presence/>")
    await expect(ws, "<presence")
    return ws


def workers_of(app):
    with urllib.request.urlopen(app.status_url) as r:
        doc = json.loads(r.read())
    return {(s["jid"], s["resource"]): s["worker_pid"]
            for s in doc["sessions"]}


async def idle(app, n):
    pids = app.nginx.worker_pids()
    users = app.ldap.add_users("bench", n)
    # warm up: LDAP connection pools, parser and registry paths
    for ws in [await session(app.ws_url, u, "warm") for u in users[:20]]:
        await ws.close()
    await asyncio.sleep(0.5)
    before = mem(pids)
    socks = []
    t0 = time.monotonic()
    for i in range(0, n, 50):
        batch = [session(app.ws_url, users[j], "idle")
                 for j in range(i, min(n, i + 50))]
        socks += await asyncio.gather(*batch)
    dt = time.monotonic() - t0
    await asyncio.sleep(1.0)
    after = mem(pids)
    print("idle: %d sessions signed in and bound in %.1f s (%.0f/s, "
          "LDAP bind each)" % (n, dt, n / dt))
    print("idle: workers RSS %+d KiB, PSS %+d KiB -> %.2f KiB RSS, "
          "%.2f KiB PSS per session"
          % (after[0] - before[0], after[1] - before[1],
             (after[0] - before[0]) / n, (after[1] - before[1]) / n))
    for ws in socks:
        await ws.close()


async def chat(app, count):
    a = await session(app.ws_url, "alice", "bench-a")
    where = workers_of(app)
    wa = where[("alice@example.com", "bench-a")]
    for i in range(40):
        b = await session(app.ws_url, "bob", "bench-b%d" % i)
        wb = workers_of(app)[("bob@example.com", "bench-b%d" % i)]
        if wb != wa:
            break
        await b.close()
    else:
        print("chat: could not place bob on another worker")
        return
    bjid = "bob@example.com/bench-b%d" % i
    rtts = []
    t0 = time.monotonic()
    for k in range(count):
        s = time.monotonic()
        await a.send("<message to='%s' type='chat'><body>%d</body>"
                     "</message>" % (bjid, k))
        await expect(b, "<body>%d</body>" % k)
        rtts.append(time.monotonic() - s)
    dt = time.monotonic() - t0
    print("chat: %d messages alice(worker %d) -> bob(worker %d), closed "
          "loop: %.0f msg/s, median one-way %.3f ms, p99 %.3f ms"
          % (count, wa, wb, count / dt, statistics.median(rtts) * 1000,
             sorted(rtts)[int(count * 0.99)] * 1000))

    # pipelined: a window of 100 in flight
    t0 = time.monotonic()
    sent = 0
    recvd = 0
    window = 100

    async def reader():
        nonlocal recvd
        while recvd < count:
            m = await b.recv()
            if "<message" in m:
                recvd += 1

    rt = asyncio.ensure_future(reader())
    while sent < count:
        while sent - recvd < window and sent < count:
            await a.send("<message to='%s' type='chat'><body>p%d</body>"
                         "</message>" % (bjid, sent))
            sent += 1
        await asyncio.sleep(0)
    await rt
    dt = time.monotonic() - t0
    print("chat: %d messages, window %d: %.0f msg/s"
          % (count, window, count / dt))
    await a.close()
    await b.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--messages", type=int, default=5000)
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="conclave-bench-")
    app = Appliance(d)
    app.start()
    try:
        asyncio.run(idle(app, args.sessions))
        asyncio.run(chat(app, args.messages))
    finally:
        app.stop()
        problems = app.check_logs()
        if problems:
            print("PROBLEMS:", *problems, sep="\n  ")
            sys.exit(1)


if __name__ == "__main__":
    main()
