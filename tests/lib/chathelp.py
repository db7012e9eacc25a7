"""Helpers for the chat feature tests (rosters, subscriptions, offline
messages): where a session lives, and real slixmpp clients placed on a
chosen nginx worker.

Sessions are spread over the workers by the kernel (reuseport), so a
client that must sit in another worker than a given one reconnects until
/conclave-status shows it there.
"""

import json
import ssl
import time
import urllib.request

PASSWORD = "%s-pw"


def status(app):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(app.status_url, timeout=5,
                                context=ctx) as r:
        return json.loads(r.read())


def worker_of(app, full_jid):
    bare, _, res = full_jid.partition("/")
    for s in status(app)["sessions"]:
        if s["jid"] == bare and s["resource"] == res:
            return s["worker_pid"]
    return None


def slix(pool, app, user, resource, presence=True, not_pid=None,
         on_pid=None, tries=40, plugins=()):
    """A signed-in slixmpp client of user; with not_pid (on_pid) its
    session is in another worker than (the same worker as) that pid.
    The initial presence (presence=True) is sent once it is placed, so
    that sessions given up on never became available.  plugins: slixmpp
    plugin names registered before it connects."""
    for i in range(tries):
        c = pool.client("%s@example.com/%s" % (user, resource),
                        PASSWORD % user, app.nginx.xmpp_port,
                        presence=False, connect=not plugins)
        if plugins:
            for name in plugins:
                pool.call(lambda: c.xmpp.register_plugin(name))
            if not c.connect():
                raise AssertionError("%s: authentication failed" % user)
        pid = worker_of(app, c.jid)
        if (not_pid is None or pid != not_pid) and \
                (on_pid is None or pid == on_pid):
            c.worker = pid
            if presence:
                c.send(lambda x: x.send_presence())
            return c
        c.disconnect()
        time.sleep(0.05)
    raise AssertionError("%s/%s: no session on the wanted worker in %d "
                         "tries" % (user, resource, tries))


def get_roster(c, timeout=15, cached=False):
    """The roster as {jid: item values}, and the version the server sent.
    slixmpp offers the version it has (RFC 6121 2.6); unless cached, it
    forgets it first, so that the answer is the whole roster."""
    def go():
        if not cached:
            c.xmpp.client_roster.version = ""
        return c.xmpp.get_roster()
    iq = c.run(go, timeout)
    items = {str(j): dict(v) for j, v in iq["roster"]["items"].items()}
    return items, iq["roster"]["ver"]


def roster_set(c, jid, name=None, groups=None, timeout=15):
    def go():
        return c.xmpp.update_roster(jid, name=name, groups=groups or [])
    return c.run(go, timeout)


def roster_remove(c, jid, timeout=15):
    def go():
        return c.xmpp.del_roster_item(jid)
    return c.run(go, timeout)


def send_presence(c, to=None, ptype=None, status=None, priority=None):
    def go(x):
        kw = {}
        if to:
            kw["pto"] = to
        if ptype:
            kw["ptype"] = ptype
        if status:
            kw["pstatus"] = status
        if priority is not None:
            kw["ppriority"] = priority
        x.send_presence(**kw)
    c.send(go)


def subscribe_both(a, b):
    """a and b, signed in as two users, subscribe to each other's
    presence (RFC 6121 3.1) and wait until both rosters say "both"."""
    ja, jb = a.jid.split("/")[0], b.jid.split("/")[0]
    send_presence(a, to=jb, ptype="subscribe")
    b.wait_presence(lambda p: p["type"] == "subscribe")
    send_presence(b, to=ja, ptype="subscribed")
    send_presence(b, to=ja, ptype="subscribe")
    a.wait_presence(lambda p: p["type"] == "subscribe")
    send_presence(a, to=jb, ptype="subscribed")
    wait_both(a, b, ja, jb)


def wait_both(a, b, ja, jb, timeout=10):
    """Until a's roster item of jb and b's of ja both say "both"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ia, _ = get_roster(a)
        ib, _ = get_roster(b)
        if ia.get(jb, {}).get("subscription") == "both" and \
                ib.get(ja, {}).get("subscription") == "both":
            return
        time.sleep(0.1)
    raise AssertionError("no mutual subscription")
