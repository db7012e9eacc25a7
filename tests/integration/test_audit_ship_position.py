"""The shipper of a live journal reuses the position of its own last
commit instead of reading shipped_seq from MariaDB before every round
(docs/audit.md, "Shipping").  Another shipper on the same journal
(`conclavectl ship --all`) makes that position stale: the next round
must notice (the guarded UPDATE and the unique keys refuse it), read
the position and go on, with no error logged, no batch counted as
failed, and every record in MariaDB exactly once.
"""

import time

from auditwait import wait_drained
from chathelp import status
from test_audit import rows, verify
from test_audit_restart import talk

# long enough that conclavectl ships before the worker's next round
INTERVAL = "conclave_audit_ship_interval 10s;\n"


def shipped_by_ctl(out):
    """Records `conclavectl ship --all` shipped of journal 0."""
    for line in out.splitlines():
        if line.startswith("journal 0:") and "records shipped" in line:
            return int(line.split(":")[1].split()[0])
    return 0


def test_stale_position_is_read_again(make_appliance, clients):
    app = make_appliance(workers=1, extra_http=INTERVAL)

    # the worker's shipper commits once: its position is now its own
    talk(app, clients, "first", 3)
    wait_drained(app, 60)

    # more records, shipped by conclavectl before the worker's shipper
    # wakes (it sleeps 10 s between rounds); retried if it won the race
    moved = 0
    tags = ["first", "third"]
    for k in range(5):
        tags.append("second%d" % k)
        talk(app, clients, tags[-1], 3)
        moved = shipped_by_ctl(app.conclavectl("ship", "--all").stdout)
        if moved:
            break
    assert moved > 0, "the worker's shipper always shipped first"
    ahead = int(rows(app, "SELECT shipped_seq FROM audit_journal WHERE "
                     "writer_id = 0")[0][0])

    # the worker's next round starts from its stale position
    talk(app, clients, "third", 3)
    deadline = time.monotonic() + 30
    st = None
    while time.monotonic() < deadline:
        st = status(app)["audit"][0]
        if st["shipped_seq"] > ahead and st["backlog_records"] == 0:
            break
        time.sleep(0.3)
    assert st["shipped_seq"] > ahead and st["backlog_records"] == 0, st
    assert st["batches_failed"] == 0 and st["mariadb_ok"], st
    assert "shipping to MariaDB" not in app.nginx.error_log()

    wait_drained(app, 60)
    got = dict(rows(app, "SELECT stanza_id, COUNT(*) FROM audit_record "
                    "WHERE event = 'message' GROUP BY stanza_id"))
    for tag in tags:
        for i in range(3):
            body = "%s-%d" % (tag, i)
            assert got.get(body) == "1", (body, got)
    assert rows(app, "SELECT COUNT(*) FROM audit_record GROUP BY seq "
                "HAVING COUNT(*) > 1") == []
    verify(app)
