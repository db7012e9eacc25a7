"""Debian's python3-slixmpp with its XEP-0045 plugin, for the MUC tests.

Runs on a slixclient.SlixPool loop; every call waits for its answer:

    with SlixPool() as pool:
        a = MucClient(pool, "alice@example.com/a", "alice-pw", port)
        a.join("room@conference.example.com", "Alice")
        a.say("room@conference.example.com", "hello")
        a.wait_groupchat(lambda m: m["body"] == "hello")

Everything the client receives from a room (groupchat messages, MUC
presence, errors, invitations) lands in queues the test reads.
"""

import asyncio
import logging
import queue
import ssl
import threading
import time

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath
from slixmpp.exceptions import IqError, IqTimeout, PresenceError

logging.getLogger("slixmpp").setLevel(logging.CRITICAL)


class MucError(Exception):
    def __init__(self, condition, etype=None, stanza=None):
        super().__init__("%s (%s)" % (condition, etype))
        self.condition = condition
        self.etype = etype
        self.stanza = stanza


class _Xmpp(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        for p in ("xep_0030", "xep_0004", "xep_0045", "xep_0199",
                  "xep_0203", "xep_0249"):
            self.register_plugin(p)
        self.started = threading.Event()
        self.failed = threading.Event()
        self.ended = threading.Event()
        self.groupchat = queue.Queue()
        self.presences = queue.Queue()
        self.messages = queue.Queue()
        self.add_event_handler("session_start", self._start)
        self.add_event_handler("failed_auth", lambda e: self.failed.set())
        self.add_event_handler("disconnected", lambda e: self.ended.set())
        self.add_event_handler("groupchat_message", self._groupchat)
        # every presence, whatever the plugin and the roster make of it
        self.register_handler(Callback(
            "muc-test-presence", MatchXPath("{jabber:client}presence"),
            self._presence))
        # slixmpp's "message" event wants a <body/>: invitations have none
        self.register_handler(Callback(
            "muc-test-message", MatchXPath("{jabber:client}message"),
            self._message))

    async def _start(self, event):
        self.send_presence()
        self.started.set()

    def _groupchat(self, msg):
        delay = msg.get_plugin("delay", check=True)
        self.groupchat.put({
            "from": str(msg["from"]), "to": str(msg["to"]),
            "id": msg["id"], "body": msg["body"],
            "delayed": delay is not None,
        })

    def _presence(self, pr):
        if pr["type"] == "error":
            self.presences.put({
                "from": str(pr["from"]), "type": "error",
                "nick": pr["from"].resource, "jid": None, "role": None,
                "affiliation": None, "codes": [],
                "error": pr["error"]["condition"],
            })
            return
        if pr.xml.find("{http://jabber.org/protocol/muc#user}x") is None:
            return
        item = pr["muc"]
        self.presences.put({
            "from": str(pr["from"]), "type": pr["type"],
            "nick": pr["from"].resource,
            "jid": item["jid"].full or None,
            "role": item["role"], "affiliation": item["affiliation"],
            "codes": sorted(int(c) for c in item["status_codes"]),
        })

    def _message(self, msg):
        if msg["type"] == "groupchat":
            return
        x = msg.xml.find("{http://jabber.org/protocol/muc#user}x")
        inv = x.find("{http://jabber.org/protocol/muc#user}invite") \
            if x is not None else None
        direct = msg.xml.find("{jabber:x:conference}x")
        self.messages.put({
            "from": str(msg["from"]), "type": msg["type"],
            "id": msg["id"], "body": msg["body"],
            "error": msg["error"]["condition"]
            if msg["type"] == "error" else None,
            "invite_from": inv.get("from") if inv is not None else None,
            "direct_invite": direct.get("jid") if direct is not None
            and inv is None else None,
        })


class MucClient:
    def __init__(self, pool, jid, password, port, connect=True):
        self.pool = pool
        self.port = port
        self.xmpp = pool.call(lambda: _Xmpp(jid, password))
        pool.clients.append(self)
        if connect:
            self.connect()

    # plumbing

    def run(self, coro_fn, timeout=20):
        """Runs coro_fn() on the pool's loop and returns its result."""
        async def go():
            return await coro_fn()
        fut = asyncio.run_coroutine_threadsafe(go(), self.pool.loop)
        return fut.result(timeout)

    def connect(self, timeout=15):
        self.pool.call(lambda: self.xmpp.connect(("127.0.0.1", self.port)))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.xmpp.started.is_set():
                return
            if self.xmpp.failed.is_set():
                raise AssertionError("authentication failed")
            time.sleep(0.05)
        raise AssertionError("no session within %ss" % timeout)

    def disconnect(self, timeout=10):
        self.pool.call(lambda: self.xmpp.disconnect())
        self.xmpp.ended.wait(timeout)

    @property
    def jid(self):
        return str(self.xmpp.boundjid)

    @property
    def muc(self):
        return self.xmpp.plugin["xep_0045"]

    # rooms

    def join(self, room, nick, password=None, maxstanzas=None, seconds=None,
             timeout=15):
        """Joins; returns (self presence, subject, occupants, history)
        or raises MucError with the room's error condition."""
        async def go():
            try:
                return await self.muc.join_muc_wait(
                    room, nick, password=password, maxstanzas=maxstanzas,
                    seconds=seconds, timeout=timeout)
            except PresenceError as e:
                raise MucError(e.condition, e.etype, e.presence)
        return self.run(go, timeout + 5)

    def leave(self, room, nick):
        self.pool.call(lambda: self.muc.leave_muc(room, nick))

    def change_nick(self, room, nick):
        def go():
            p = self.xmpp.make_presence(pto="%s/%s" % (room, nick))
            p.send()
        self.pool.call(go)

    def say(self, room, body, id=None):
        def go():
            m = self.xmpp.make_message(mto=room, mbody=body,
                                       mtype="groupchat")
            if id is not None:
                m["id"] = id
            m.send()
        self.pool.call(go)

    def send_raw(self, xml):
        self.pool.call(lambda: self.xmpp.send_raw(xml))

    def iq(self, build, timeout=10):
        """Sends the iq build(xmpp) makes; returns the result or raises
        MucError with the error condition."""
        async def go():
            iq = build(self.xmpp)
            try:
                return await iq.send(timeout=timeout)
            except IqError as e:
                raise MucError(e.condition, e.etype, e.iq)
            except IqTimeout:
                raise MucError("timeout")
        return self.run(go, timeout + 5)

    def call(self, coro_fn, timeout=10):
        """A plugin coroutine; IqError becomes MucError."""
        async def go():
            try:
                return await coro_fn()
            except IqError as e:
                raise MucError(e.condition, e.etype, e.iq)
            except IqTimeout:
                raise MucError("timeout")
        return self.run(go, timeout + 5)

    def configure(self, room, **fields):
        """Gets the room's form, sets the fields given
        (muc#roomconfig_<name>=value) and submits it."""
        async def go():
            form = await self.muc.get_room_config(room)
            new = self.xmpp.plugin["xep_0004"].make_form(ftype="submit")
            new.add_field(var="FORM_TYPE", ftype="hidden",
                          value="http://jabber.org/protocol/muc#roomconfig")
            for name, value in fields.items():
                new.add_field(var="muc#roomconfig_" + name, value=value)
            assert form["type"] == "form"
            await self.muc.set_room_config(room, new)
        return self.call(go)

    def ping(self, jid, timeout=10):
        async def go():
            return await self.xmpp.plugin["xep_0199"].send_ping(
                jid, timeout=timeout)
        return self.call(go, timeout)

    # what arrived

    @staticmethod
    def _wait(q, match, timeout, what):
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no matching %s; got %r" % (what, seen))
            try:
                m = q.get(timeout=left)
            except queue.Empty:
                continue
            if match(m):
                return m
            seen.append(m)

    def wait_groupchat(self, match, timeout=10):
        return self._wait(self.xmpp.groupchat, match, timeout, "groupchat")

    def wait_presence(self, match, timeout=10):
        return self._wait(self.xmpp.presences, match, timeout, "presence")

    def wait_message(self, match, timeout=10):
        return self._wait(self.xmpp.messages, match, timeout, "message")

    def drain(self, q, settle=0.3):
        out = []
        while True:
            try:
                out.append(q.get(timeout=settle))
            except queue.Empty:
                return out
