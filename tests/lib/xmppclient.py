"""Drive a real npm XMPP-over-WebSocket client from the tests (stdlib only).

    from xmppclient import NodeClient, node_available

    with NodeClient("stanza") as alice:          # or "xmpp" (@xmpp/client)
        ev = alice.connect("ws://127.0.0.1:%d/xmpp-websocket" % port,
                           "alice", "alice-pw", domain="example.com")
        assert ev["ev"] == "online", ev
        alice.presence()
        alice.message("bob@example.com", "hi")
        got = bob.wait_for(lambda e: e["ev"] == "message" and e["body"] == "hi")
        alice.disconnect()

NodeClient spawns `node tests/lib/xmppdriver.mjs --lib LIB` from the repo
root (npm packages come from the repo's node_modules) and talks JSON lines
with it.  A reader thread queues every event; wait_for() takes the first
queued event that matches and leaves the others queued, in order.  Events
are dicts, see the header of xmppdriver.mjs for the full list:
    online, error (phase: auth|connect|bind|timeout|xml|cmd|...),
    message, presence, stanza (iq), iq-result, iq-error, disco_info,
    stream-error, offline (by: client|server), sent, raw (trace=True).
"""

import itertools
import json
import os
import shutil
import subprocess
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
DRIVER = os.path.join(REPO, "tests", "lib", "xmppdriver.mjs")
# strophe.js over BOSH has its own driver with the same JSON protocol
BOSH_DRIVER = os.path.join(REPO, "tests", "lib", "boshdriver.mjs")
LIBS = ("xmpp", "stanza", "strophe")
_PACKAGES = {"xmpp": "@xmpp/client", "stanza": "stanza",
             "strophe": "strophe.js"}


def node_binary():
    return shutil.which("node")


def node_available(lib=None, cwd=REPO):
    """True if node and the npm packages the driver needs are installed."""
    if node_binary() is None:
        return False
    nm = os.path.join(cwd, "node_modules")
    pkgs = ["ws"] + ([_PACKAGES[lib]] if lib else list(_PACKAGES.values()))
    return all(os.path.isfile(os.path.join(nm, p, "package.json"))
               for p in pkgs)


class DriverError(Exception):
    """The driver process died or could not be started."""


class NodeClient:
    """One XMPP client (one connection) in its own node process."""

    _ids = itertools.count(1)

    def __init__(self, lib, cwd=REPO, trace=False, modules=None, env=None,
                 name=None):
        if lib not in LIBS:
            raise ValueError("lib must be one of %r" % (LIBS,))
        self.lib = lib
        self.name = name or "%s-%d" % (lib, next(self._ids))
        self._pending = []          # events not yet taken by wait_for()
        self.history = []           # every event, in arrival order
        self._eof = False
        self._cond = threading.Condition()
        self.stderr_lines = []
        self.jid = None
        self._lock = threading.Lock()
        argv = [node_binary() or "node",
                BOSH_DRIVER if lib == "strophe" else DRIVER, "--lib", lib]
        if trace:
            argv.append("--trace")
        if modules:
            argv += ["--modules", modules]
        penv = dict(os.environ)
        if env:
            penv.update(env)
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=penv, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        self._out = threading.Thread(target=self._read_stdout, daemon=True,
                                     name=self.name + "-out")
        self._err = threading.Thread(target=self._read_stderr, daemon=True,
                                     name=self.name + "-err")
        self._out.start()
        self._err.start()
        self.ready = self.wait_for("ready", timeout=15)

    # ------------------------------------------------------------ plumbing

    def _read_stdout(self):
        for line in iter(self.proc.stdout.readline, b""):
            line = line.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"ev": "garbage", "line": line}
            with self._cond:
                self.history.append(ev)
                self._pending.append(ev)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _read_stderr(self):
        for line in iter(self.proc.stderr.readline, b""):
            with self._lock:
                self.stderr_lines.append(
                    line.decode("utf-8", "replace").rstrip("\n"))

    def send(self, cmd):
        """Send one command dict to the driver."""
        data = (json.dumps(cmd) + "\n").encode()
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError) as e:
            raise DriverError("%s: driver is gone (%s); stderr:\n%s" % (
                self.name, e, self.stderr())) from e

    def stderr(self):
        with self._lock:
            return "\n".join(self.stderr_lines[-50:])

    def events(self):
        """A copy of the pending events (not removed)."""
        with self._cond:
            return list(self._pending)

    @staticmethod
    def _matcher(what):
        if callable(what):
            return what
        if isinstance(what, str):
            names = {what}
        else:
            names = set(what)
        return lambda e: e.get("ev") in names

    def wait_for(self, what, timeout=10.0):
        """Return the first pending event matching `what` and remove it.

        `what` is an event name ("online"), a collection of names, or a
        predicate on the event dict.  Events that do not match stay pending,
        in order, for later wait_for() calls.  Raises TimeoutError (listing
        the pending events) if nothing matches within `timeout` seconds, and
        DriverError if the driver exits first.
        """
        match = self._matcher(what)
        deadline = time.monotonic() + timeout
        scanned = 0
        with self._cond:
            while True:
                while scanned < len(self._pending):
                    ev = self._pending[scanned]
                    if match(ev):
                        del self._pending[scanned]
                        return ev
                    scanned += 1
                if self._eof:
                    raise DriverError(
                        "%s: driver exited (rc %s) waiting for %r; pending "
                        "events: %s; stderr:\n%s" % (
                            self.name, self.proc.poll(), what,
                            json.dumps(self._pending)[:4000], self.stderr()))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        "%s: no event matching %r within %.1fs; pending "
                        "events: %s; stderr:\n%s" % (
                            self.name, what, timeout,
                            json.dumps(self._pending)[:4000], self.stderr()))
                self._cond.wait(left)

    def drain(self):
        """Return and remove every pending event."""
        with self._cond:
            out, self._pending = self._pending, []
            return out

    def expect_none(self, what, timeout=1.0):
        """Assert no event matching `what` arrives within `timeout`."""
        try:
            ev = self.wait_for(what, timeout=timeout)
        except TimeoutError:
            return
        raise AssertionError("%s: unexpected event %r" % (self.name, ev))

    # ------------------------------------------------------------ commands

    def connect(self, url, username, password, resource=None, timeout=10,
                domain="example.com", insecure=False, **extra):
        """Connect and authenticate; returns the "online" or "error" event.

        extra: mechanism="PLAIN", sm=False, deflate=False, trace=True.
        """
        cmd = {"cmd": "connect", "url": url, "domain": domain,
               "username": username, "password": password,
               "timeout": timeout}
        if resource is not None:
            cmd["resource"] = resource
        if insecure:
            cmd["insecure"] = True
        cmd.update(extra)
        self.send(cmd)
        ev = self.wait_for(("online", "error"), timeout=timeout + 5)
        if ev["ev"] == "online":
            self.jid = ev["jid"]
        return ev

    def _sent(self, cmd, timeout):
        tag = "t%d" % next(self._ids)
        cmd["tag"] = tag
        self.send(cmd)
        return self.wait_for(
            lambda e: e.get("tag") == tag and e["ev"] in ("sent", "error"),
            timeout=timeout)

    def message(self, to, body, id=None, type="chat", timeout=10, **extra):
        """Send a <message/>; returns the "sent" event (carries the id)."""
        cmd = {"cmd": "message", "to": to, "body": body, "type": type}
        if id is not None:
            cmd["id"] = id
        cmd.update(extra)
        return self._sent(cmd, timeout)

    def presence(self, to=None, type=None, priority=None, show=None,
                 status=None, id=None, timeout=10):
        cmd = {"cmd": "presence"}
        for k, v in (("to", to), ("type", type), ("priority", priority),
                     ("show", show), ("status", status), ("id", id)):
            if v is not None:
                cmd[k] = v
        return self._sent(cmd, timeout)

    def available(self, timeout=10):
        """Initial presence, and the wait for the server's echo of it
        (RFC 6121 4.2.2): from then on the session is available, and a
        message to the bare JID reaches it instead of racing its presence
        on another worker into offline storage."""
        self.presence(timeout=timeout)
        return self.wait_for(lambda e: e["ev"] == "presence"
                             and e.get("from") == self.jid
                             and e.get("type") in (None, "available"),
                             timeout)

    def raw(self, xml, timeout=10):
        return self._sent({"cmd": "raw", "xml": xml}, timeout)

    def _iq(self, cmd, ok, timeout):
        cmd.setdefault("id", "%s-%d" % (cmd["cmd"], next(self._ids)))
        cmd["timeout"] = timeout
        self.send(cmd)
        iid = cmd["id"]
        return self.wait_for(
            lambda e: (e["ev"] in (ok, "iq-error") and e.get("id") == iid)
            or (e["ev"] == "error" and e.get("cmd") == cmd["cmd"]),
            timeout=timeout + 5)

    def ping(self, to=None, id=None, timeout=10):
        """XEP-0199 ping; returns the "iq-result" or "iq-error" event."""
        cmd = {"cmd": "ping"}
        if to is not None:
            cmd["to"] = to
        if id is not None:
            cmd["id"] = id
        return self._iq(cmd, "iq-result", timeout)

    def disco_info(self, to=None, id=None, node=None, timeout=10):
        """XEP-0030 disco#info; returns "disco_info" or "iq-error"."""
        cmd = {"cmd": "disco_info"}
        for k, v in (("to", to), ("id", id), ("node", node)):
            if v is not None:
                cmd[k] = v
        return self._iq(cmd, "disco_info", timeout)

    def iq(self, payload_xml, type="get", to=None, id=None, timeout=10):
        """Any IQ with a raw XML payload; returns iq-result or iq-error."""
        cmd = {"cmd": "iq", "type": type, "xml": payload_xml}
        if to is not None:
            cmd["to"] = to
        if id is not None:
            cmd["id"] = id
        return self._iq(cmd, "iq-result", timeout)

    def disconnect(self, timeout=10):
        """<close/> + WebSocket close; returns the "offline" event."""
        if self.proc.poll() is not None:
            return {"ev": "offline", "by": "exited"}
        self.send({"cmd": "disconnect", "timeout": min(timeout, 5)})
        return self.wait_for("offline", timeout=timeout)

    def drop(self, timeout=15):
        """Drop the connection without any goodbye and let the library
        resume its XEP-0198 stream on a new WebSocket (stanza only);
        returns the "resumed" event."""
        self.send({"cmd": "drop", "timeout": timeout})
        ev = self.wait_for(lambda e: e["ev"] == "resumed"
                           or (e["ev"] == "error"
                               and e.get("phase") in ("resume", "cmd")),
                           timeout=timeout + 5)
        if ev["ev"] == "error":
            raise DriverError("drop: %s" % ev.get("text"))
        return ev

    def kill(self, rst=False, timeout=10):
        """Drop the TCP connection without any goodbye; the driver exits."""
        if self.proc.poll() is None:
            try:
                self.send({"cmd": "kill", "rst": bool(rst)})
            except DriverError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close_pipes()

    def close(self):
        """Terminate the driver process (no protocol goodbye)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close_pipes()

    def _close_pipes(self):
        for f in (self.proc.stdin,):
            try:
                f.close()
            except OSError:
                pass
        self._out.join(timeout=2)
        self._err.join(timeout=2)
        for f in (self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "<NodeClient %s %s>" % (self.name, self.jid or "")
