"""wait_drained(): wait until the appliance has shipped its whole
audit journal to MariaDB.

The module appends each record to a worker's local journal before it
routes the stanza, and the shipper copies it into MariaDB afterwards
(DESIGN.md "Shipped exactly once"), so a test that reads audit rows
right after a send waits for the status page (/conclave-status) to
show every journal with no backlog and MariaDB reachable.
"""

import time

import pytest

from chathelp import status


def wait_drained(app, timeout=60.0):
    """The status page's "audit" list once every worker's journal is
    fully shipped; fails the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    st = None
    while time.monotonic() < deadline:
        st = status(app)["audit"]
        if st and all(j["backlog_records"] == 0 and j["mariadb_ok"]
                      for j in st):
            return st
        time.sleep(0.2)
    pytest.fail("audit backlog not drained: %r" % st)
