"""Journals nobody writes any more are adopted (issue 3, "A journal left
behind by a worker that died is adopted and shipped"): records pile up
in both workers' journals while MariaDB is down, nginx is stopped, and
it comes back with one worker only.  That worker resumes journal 0 and
must ship journal 1, which no process holds, too.
"""

import json
import time

from auditwait import wait_drained
from chathelp import status
from test_audit import rows, verify
from test_audit_restart import talk


def test_orphaned_journal_is_adopted(make_appliance, clients):
    app = make_appliance()
    app.mariadb.stop()
    # enough sessions that both workers write records
    for k in range(6):
        talk(app, clients, "orphan%d" % k, 5)
    st = status(app)["audit"]
    assert len([j for j in st if j["last_seq"] > 0]) == 2, st

    app.nginx.stop()
    app.mariadb.start()
    app.nginx.workers = 1
    app.nginx.start()

    st = status(app)["audit"]
    assert len(st) == 1 and st[0]["journal"] == 0, st
    wait_drained(app, 60)

    # journal 1 reaches MariaDB through the adopting worker
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        shipped = dict(rows(app, "SELECT writer_id, shipped_seq FROM "
                            "audit_journal"))
        if "1" in shipped and status(app)["audit"][0]["records_adopted"]:
            break
        time.sleep(0.3)
    assert "1" in shipped, shipped
    assert status(app)["audit"][0]["records_adopted"] > 0

    got = rows(app, "SELECT stanza_id, COUNT(*) FROM audit_record WHERE "
               "event='message' GROUP BY stanza_id")
    ids = {i: int(n) for i, n in got}
    for k in range(6):
        for i in range(5):
            assert ids.get("orphan%d-%d" % (k, i)) == 1, (k, i, ids)
    # conclavectl agrees: every journal on disk is fully shipped
    st = json.loads(app.conclavectl("status", "--json").stdout)
    assert {j["writer_id"] for j in st["journals"]} == {0, 1}
    for j in st["journals"]:
        assert j["backlog_records"] == 0, j
    verify(app)
