"""A MariaDB statement that the module stopped waiting for stops in the
server too (docs/operations.md, "MariaDB requests: timeouts that tell
the truth").

The chat features' pooled connections set max_statement_time to nine
tenths of conclave_audit_db_timeout (their read timeout) or
conclave_db_timeout, whichever is shorter.  Before, the client's read
timeout came first and closed the connection.  mariadbd ends a metadata
lock wait (LOCK TABLES, a migration's ALTER) when its client is gone,
but not an InnoDB row lock wait (innodb_lock_wait_timeout, 50 s) or a
long query, and the pool had to connect again.

Real mariadbd, real slixmpp (XEP-0191 blocking commands: a get runs on
the autocommit connections, a block in a transaction).
"""

import asyncio
import time

from slixmpp.exceptions import IqError

from chathelp import slix
from mariadb import Locker, table_lock

# read timeout 2 s, so statements end at 1.8 s; the session waits 6 s
APPLIANCE_EXTRA_HTTP = ("conclave_audit_db_timeout 2s;\n"
                        "    conclave_db_timeout 6s;")


def waiting(app):
    """The module's statements on the blocklist table still in the
    server: [(id, state)]."""
    return app.mariadb.query(
        "SELECT ID, STATE FROM information_schema.PROCESSLIST"
        " WHERE USER = 'conclave' AND INFO LIKE '%blocklist%'")


def connected(app, tid):
    return app.mariadb.query(
        "SELECT COMMAND FROM information_schema.PROCESSLIST"
        " WHERE ID = %s" % tid)


def until(what, cond, timeout):
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def submit(pool, make):
    """Starts an iq; the future gives ("result", iq) or (condition,
    iq)."""
    async def go():
        try:
            return "result", await make()
        except IqError as e:
            return e.iq["error"]["condition"], e.iq
    return asyncio.run_coroutine_threadsafe(go(), pool.loop)


def row_lock(db, owner, jid):
    """An open transaction that inserted the blocklist row (owner, jid),
    until release() rolls it back: the module's INSERT of the same row
    waits for InnoDB's lock (innodb_lock_wait_timeout, 50 s)."""
    return Locker(db, "BEGIN;\nINSERT INTO blocklist (owner_jid, jid,"
                  " created_at) VALUES ('%s', '%s', UTC_TIMESTAMP(6));"
                  % (owner, jid), "ROLLBACK;")


def stuck_then_ended(app, pool, what, make):
    """Runs the iq that make() starts against a held lock: its
    statement waits in the server, the client gets an error well before
    conclave_db_timeout, the statement is then gone from mariadbd, and
    its connection is still there, idle (it goes back to the pool)."""
    t0 = time.monotonic()
    fut = submit(pool, make)
    rows = until(what + ": the statement waits in the server",
                 lambda: waiting(app), 5)
    tid = rows[0][0]
    cond, _ = fut.result(15)
    elapsed = time.monotonic() - t0
    assert cond == "internal-server-error", (what, cond)
    # the server's bound (1.8 s) ended it, not the session's wait (6 s)
    assert elapsed < 5, (what, elapsed)
    until(what + ": the statement still waits in mariadbd",
          lambda: not waiting(app), 3)
    assert connected(app, tid) == [("Sleep",)], (what, tid)
    return rows[0][1]


def client(pool, appliance, resource):
    return slix(pool, appliance, "alice", resource,
                plugins=["xep_0191", "xep_0199"])


def test_a_read_behind_a_table_lock(appliance, pool):
    """A blocklist get (autocommit connections) behind LOCK TABLES."""
    c = client(pool, appliance, "read")
    blocking = c.xmpp["xep_0191"]
    # the pooled connection exists before the lock
    assert submit(pool, lambda: blocking.get_blocked(timeout=10)) \
        .result(15)[0] == "result"

    lock = table_lock(appliance.mariadb, "blocklist")
    try:
        state = stuck_then_ended(appliance, pool, "get",
                                 lambda: blocking.get_blocked(timeout=20))
        assert "metadata lock" in state, state
        assert lock.holding()
    finally:
        lock.release()

    assert "max_statement_time exceeded" in appliance.nginx.error_log()
    cond, iq = submit(pool, lambda: blocking.get_blocked(timeout=10)) \
        .result(15)
    assert cond == "result"
    c.disconnect()


def test_a_write_behind_a_row_lock(appliance, pool):
    """A block (a transaction) whose INSERT waits for a row lock.  A
    client that gave up did not end it before: mariadbd does not see a
    closed connection during an InnoDB lock wait, so the INSERT waited
    on for innodb_lock_wait_timeout."""
    c = client(pool, appliance, "write")
    blocking = c.xmpp["xep_0191"]
    assert submit(pool, lambda: blocking.get_blocked(timeout=10)) \
        .result(15)[0] == "result"
    before = appliance.nginx.error_log().count("max_statement_time exceeded")

    lock = row_lock(appliance.mariadb, "alice@example.com",
                   "mallory@example.com")
    try:
        stuck_then_ended(appliance, pool, "block",
                         lambda: blocking.block(["mallory@example.com"],
                                                timeout=20))
        assert lock.holding()
    finally:
        lock.release()

    assert appliance.nginx.error_log().count(
        "max_statement_time exceeded") > before
    # nothing of it was kept, and the same request now goes through
    assert submit(pool, lambda: blocking.get_blocked(timeout=10)) \
        .result(15)[0] == "result"
    assert submit(pool, lambda: blocking.block(["mallory@example.com"],
                                               timeout=10)) \
        .result(15)[0] == "result"
    cond, iq = submit(pool, lambda: blocking.get_blocked(timeout=10)) \
        .result(15)
    assert cond == "result"
    assert {str(j) for j in iq["blocklist"]["items"]} == \
        {"mallory@example.com"}
    c.disconnect()
