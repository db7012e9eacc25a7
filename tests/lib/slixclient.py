"""Debian's python3-slixmpp as a real XMPP-over-TCP client for the tests.

slixmpp is asyncio-based; SlixPool runs one event loop in a background
thread and every client on it, so a test can stay synchronous:

    with SlixPool() as pool:
        a = pool.client("alice@example.com/a", "alice-pw", port)
        b = pool.client("bob@example.com/b", "bob-pw", port,
                        direct_tls=True)
        a.message("bob@example.com/b", "hi")
        b.wait_message(lambda m: m["body"] == "hi")

Certificates are not verified: the harness's is self-signed.
"""

import asyncio
import logging
import queue
import ssl
import threading
import time

import slixmpp

logging.getLogger("slixmpp").setLevel(logging.CRITICAL)


class SlixError(Exception):
    pass


class _Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.inbox = queue.Queue()
        self.presences = queue.Queue()
        self.pushes = queue.Queue()
        self.initial_presence = True
        self.started = threading.Event()
        self.failed = threading.Event()
        self.ended = threading.Event()
        self.add_event_handler("session_start", self._start)
        self.add_event_handler("message", self._message)
        self.add_event_handler("message_error", self._message)
        self.add_event_handler("failed_auth", lambda e: self.failed.set())
        self.add_event_handler("disconnected", lambda e: self.ended.set())
        self.add_event_handler("presence", self._presence)
        self.add_event_handler("roster_update", self._push)
        # the tests answer subscription requests themselves
        self.roster.auto_authorize = None
        self.roster.auto_subscribe = False

    async def _start(self, event):
        if self.initial_presence:
            self.send_presence()
        self.started.set()

    def _message(self, msg):
        delay = msg.xml.find("{urn:xmpp:delay}delay")
        self.inbox.put({"from": str(msg["from"]), "to": str(msg["to"]),
                        "type": msg["type"], "id": msg["id"],
                        "body": msg["body"],
                        "delay": None if delay is None
                        else dict(delay.attrib),
                        "error": msg["error"]["condition"]
                        if msg["type"] == "error" else None,
                        "text": msg["error"]["text"]
                        if msg["type"] == "error" else None,
                        "error_type": msg["error"]["type"]
                        if msg["type"] == "error" else None})

    def _presence(self, pres):
        self.presences.put({"from": str(pres["from"]), "to": str(pres["to"]),
                            "type": pres["type"], "status": pres["status"],
                            "priority": pres["priority"],
                            "error": pres["error"]["condition"]
                            if pres["type"] == "error" else None})

    def _push(self, iq):
        items = {}
        for jid, item in iq["roster"]["items"].items():
            items[str(jid)] = dict(item)
        self.pushes.put({"type": iq["type"], "ver": iq["roster"]["ver"],
                         "items": items})


class SlixClient:
    def __init__(self, pool, jid, password, port, direct_tls):
        self.pool = pool
        self.xmpp = _Client(jid, password)
        self.port = port
        self.direct_tls = direct_tls

    def connect(self, timeout=15):
        def go():
            self.xmpp.connect(("127.0.0.1", self.port),
                              use_ssl=self.direct_tls,
                              disable_starttls=self.direct_tls)
        self.pool.call(go)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.xmpp.started.is_set():
                return True
            if self.xmpp.failed.is_set():
                return False
            time.sleep(0.05)
        raise SlixError("%s: no session within %ss" % (self.xmpp.boundjid,
                                                      timeout))

    @property
    def jid(self):
        return str(self.xmpp.boundjid)

    @property
    def secure(self):
        t = self.xmpp.transport
        return t is not None and t.get_extra_info("sslcontext") is not None

    def message(self, to, body, id=None, mtype="chat"):
        def go():
            m = self.xmpp.make_message(mto=to, mbody=body, mtype=mtype)
            if id is not None:
                m["id"] = id
            m.send()
        self.pool.call(go)

    def wait_message(self, match, timeout=10):
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SlixError("no matching message; got %r" % seen)
            try:
                m = self.xmpp.inbox.get(timeout=left)
            except queue.Empty:
                continue
            if match(m):
                return m
            seen.append(m)

    def run(self, make_coro, timeout=15):
        """Awaits make_coro() on the client's loop and returns its result."""
        async def go():
            return await make_coro()
        fut = asyncio.run_coroutine_threadsafe(go(), self.pool.loop)
        return fut.result(timeout)

    def send(self, fn):
        """Runs fn(xmpp) on the loop (to send stanzas)."""
        return self.pool.call(lambda: fn(self.xmpp))

    def _wait(self, q, match, timeout, what):
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SlixError("no matching %s; got %r" % (what, seen))
            try:
                m = q.get(timeout=left)
            except queue.Empty:
                continue
            if match(m):
                return m
            seen.append(m)

    def wait_presence(self, match, timeout=10):
        return self._wait(self.xmpp.presences, match, timeout, "presence")

    def wait_push(self, match, timeout=10):
        return self._wait(self.xmpp.pushes, match, timeout, "roster push")

    def drain(self, q_name="inbox", settle=0.5):
        """Everything that arrives in the queue within settle seconds."""
        q = getattr(self.xmpp, q_name)
        got = []
        deadline = time.monotonic() + settle
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return got
            try:
                got.append(q.get(timeout=left))
            except queue.Empty:
                pass

    def disconnect(self, timeout=10):
        self.pool.call(lambda: self.xmpp.disconnect())
        self.xmpp.ended.wait(timeout)


class SlixPool:
    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.clients = []
        self.thread.start()

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, fn):
        """Runs fn on the loop's thread and waits for it."""
        done = queue.Queue()

        def wrap():
            try:
                done.put((True, fn()))
            except Exception as e:     # handed to the caller
                done.put((False, e))
        self.loop.call_soon_threadsafe(wrap)
        ok, v = done.get(timeout=30)
        if not ok:
            raise v
        return v

    def client(self, jid, password, port, direct_tls=False, connect=True,
               presence=True):
        def make():
            # slixmpp binds its loop at construction
            c = SlixClient(self, jid, password, port, direct_tls)
            c.xmpp.initial_presence = presence
            return c
        c = self.call(make)
        self.clients.append(c)
        if connect and not c.connect():
            raise SlixError("%s: authentication failed" % jid)
        return c

    def close(self):
        for c in self.clients:
            try:
                c.disconnect(timeout=3)
            except Exception:
                pass
        async def settle():
            # slixmpp leaves filter tasks running: end them cleanly
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        try:
            asyncio.run_coroutine_threadsafe(settle(), self.loop).result(10)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
