"""Retention policies and legal holds (issue 8, docs/compliance.md).

Records go through the real path (journal_cli + `conclavectl ship` into
a real mariadbd).  A retention run must delete what its policy lets go
and keep what a legal hold covers; `conclavectl verify` must still pass
over the pruned ranges (signed tombstones), with MariaDB alone and with
the journals as witness; releasing a hold returns its records to
retention; every change is an audit record; bad input is refused.
"""

import json
import os
import re
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))

from auditstore import NODE, started  # noqa: E402

DAY = 86400 * 10 ** 6
NOW = int(time.time()) * 10 ** 6
OLD = NOW - 400 * DAY
ROOM = "deals@conference.example.com"


def fill(s):
    # writer 0: old 1:1 messages, alice's (to be held) and carol's
    s.write(0, 3, ts=OLD, user="alice@example.com", peer="bob@example.com",
            checkpoint=False)
    s.write(0, 3, ts=OLD + 1, user="carol@example.com",
            peer="dave@example.com", checkpoint=False)
    s.write(0, 2, ts=OLD + 2, user="carol@example.com", peer=ROOM,
            event="muc_message", msg_type="groupchat", checkpoint=False)
    s.write(0, 2, ts=OLD + 3, event="signin", user="carol@example.com",
            checkpoint=False)
    s.write(0, 2, ts=NOW - DAY, user="carol@example.com",
            peer="dave@example.com")
    # writer 1: old, and the journal's last record old too
    s.write(1, 4, ts=OLD, user="erin@example.com", peer="frank@example.com")
    s.ship()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    yield from started(tmp_path_factory.mktemp("retention"), fill)


def count(store, where):
    return int(store.scalar("SELECT COUNT(*) FROM audit_record WHERE "
                            "node = '%s' AND %s" % (NODE, where)))


def verify_ok(store):
    for args in ((), ("--db-only",)):
        r = store.ctl("verify", *args, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.strip().endswith(": OK"), r.stdout


def admin_events(store):
    return [json.loads(p) for (p,) in store.sql(
        "SELECT payload FROM audit_record WHERE writer_id = 1000000 "
        "ORDER BY seq")]


def test_refused_input(store):
    bad = [
        ("retention", "set", "--messages", "0"),
        ("retention", "set", "--messages", "-5"),
        ("retention", "set", "--scope", "team", "--messages", "30"),
        ("retention", "set", "--scope", "user", "--messages", "30"),
        ("retention", "set", "--scope", "user", "--target",
         "a@example.com/res", "--messages", "30"),
        ("retention", "profile", "gdpr"),
        ("hold", "create", "--matter", "m"),
        ("hold", "create", "--custodians", "alice@example.com"),
        ("hold", "create", "--matter", "m", "--custodians", "not-a-jid"),
        ("hold", "create", "--matter", "m", "--custodians",
         "a@example.com", "--since", "2026-02-01", "--until", "2026-01-01"),
        ("hold", "release", "--matter", "no-such-matter"),
    ]
    for args in bad:
        r = store.ctl(*args, check=False)
        assert r.returncode in (1, 2), (args, r.stdout)
        assert r.stderr.startswith("conclavectl: "), (args, r.stderr)
    # nothing above reached the chain
    assert admin_events(store) == []


def test_profile_floor(store):
    store.ctl("retention", "profile", "cn", "--actor", "frank@example.com")
    r = store.ctl("retention", "set", "--signins", "30", check=False)
    assert r.returncode == 1
    assert "below the compliance profile's floor of 180 days" in r.stderr
    store.ctl("retention", "profile", "none", "--actor", "frank@example.com")
    ev = admin_events(store)
    assert [e["event"] for e in ev] == ["compliance_profile_set"] * 2
    assert ev[0]["actor"] == {"user": "frank@example.com",
                              "transport": "admin"}
    assert ev[0]["resulting_state"]["signins_floor_days"] == 180


def test_hold_survives_unheld_is_deleted(store):
    before = count(store, "writer_id < 1000000")
    store.ctl("retention", "set", "--messages", "365", "--signins", "365",
              "--actor", "frank@example.com")
    store.ctl("hold", "create", "--matter", "SEC-2026-001", "--custodians",
              "alice@example.com", "--rooms", ROOM, "--description",
              "subpoena", "--actor", "erin@example.com")

    r = store.ctl("retention", "run", "--batch", "2")
    m = re.search(r"(\d+) records examined, (\d+) deleted in (\d+) batches,"
                  r" (\d+) kept by legal holds", r.stdout)
    assert m, r.stdout
    examined, deleted, batches, held = map(int, m.groups())
    # carol->dave 3, carol's sign-ins 2, erin->frank 4; alice 3 and the
    # room's 2 held
    assert (deleted, held) == (9, 5), r.stdout
    assert batches == 5                 # 2+2+1 on writer 0, 2+2 on 1
    assert count(store, "actor_user = 'alice@example.com'") == 3
    assert count(store, "peer = '%s'" % ROOM) == 2
    assert count(store, "actor_user = 'carol@example.com' AND ts_utc_us "
                 "< %d AND (peer IS NULL OR peer <> '%s')"
                 % (NOW - 2 * DAY, ROOM)) == 0
    assert count(store, "ts_utc_us >= %d" % (NOW - 2 * DAY)) >= 2
    assert count(store, "writer_id < 1000000") == before - 9
    assert int(store.scalar("SELECT COUNT(*) FROM audit_tombstone")) == 9

    verify_ok(store)

    # the run, the policy and the hold are in the chain
    ev = {e["event"]: e for e in admin_events(store)}
    assert ev["retention_policy_set"]["resulting_state"] == {
        "scope": "global", "target": "", "messages_days": 365,
        "signins_days": 365}
    assert ev["retention_policy_set"]["prior_state"] is None
    hold = ev["legal_hold_create"]
    assert hold["actor"]["user"] == "erin@example.com"
    assert hold["resulting_state"]["custodians"] == ["alice@example.com"]
    assert ev["retention_run"]["params"]["deleted"] == 9


def test_export_over_pruned_range_verifies(store, tmp_path):
    out = tmp_path / "x"
    out.mkdir()
    store.ctl("export", "--format", "actiance", "--output", str(out),
              "--no-cursor")
    (z,) = out.glob("*.zip")
    r = store.ctl("verify-export", "--vkey", store.vkey, str(z),
                  check=False)
    assert r.returncode == 0, r.stdout


def test_release_returns_to_retention(store):
    store.ctl("hold", "release", "--matter", "SEC-2026-001", "--actor",
              "erin@example.com")
    # released, not purged
    assert count(store, "actor_user = 'alice@example.com'") == 3
    r = store.ctl("hold", "release", "--matter", "SEC-2026-001",
                  check=False)
    assert r.returncode == 1 and "no active hold" in r.stderr

    r = store.ctl("retention", "run")
    assert "5 deleted" in r.stdout, r.stdout
    assert count(store, "actor_user = 'alice@example.com'") == 0
    assert count(store, "peer = '%s'" % ROOM) == 0
    verify_ok(store)
    shown = json.loads(store.ctl("retention", "show").stdout)
    assert shown["holds"][0]["released_by"] == "erin@example.com"
    assert shown["policies"][0]["messages_days"] == "365"


def test_room_and_user_policies(store):
    store.write(0, 2, ts=NOW - 40 * DAY, user="gina@example.com",
                peer="hank@example.com")
    store.write(0, 2, ts=NOW - 40 * DAY, user="gina@example.com",
                peer=ROOM, event="muc_message", msg_type="groupchat")
    store.ship()
    # gina keeps 30 days, hank 60: the longer wins for their 1:1
    store.ctl("retention", "set", "--scope", "user", "--target",
              "gina@example.com", "--messages", "30", "--signins", "30")
    store.ctl("retention", "set", "--scope", "user", "--target",
              "hank@example.com", "--messages", "60", "--signins", "30")
    store.ctl("retention", "set", "--scope", "room", "--target", ROOM,
              "--messages", "7", "--signins", "7")
    r = store.ctl("retention", "run")
    assert "2 deleted" in r.stdout, r.stdout
    assert count(store, "actor_user = 'gina@example.com' AND peer = "
                 "'hank@example.com'") == 2
    assert count(store, "actor_user = 'gina@example.com' AND peer = "
                 "'%s'" % ROOM) == 0
    # without hank's own policy the global 365 days are his: kept
    store.ctl("retention", "remove", "--scope", "user", "--target",
              "hank@example.com")
    r = store.ctl("retention", "run")
    assert " 0 deleted" in r.stdout, r.stdout
    store.ctl("retention", "set", "--scope", "user", "--target",
              "hank@example.com", "--messages", "30", "--signins", "30")
    r = store.ctl("retention", "run")
    assert "2 deleted" in r.stdout, r.stdout
    verify_ok(store)
    ev = [e["event"] for e in admin_events(store)]
    assert ev.count("retention_policy_remove") == 1


def test_forged_tombstone_is_found(store):
    store.sql("UPDATE audit_tombstone SET entry_hash = UNHEX(REPEAT('ab', "
              "32)) WHERE writer_id = 1 AND seq = 2")
    try:
        r = store.ctl("verify", "--db-only", check=False)
        assert r.returncode == 1, r.stdout
        assert re.search(r"journal n1/1: bad signature \(mariadb: "
                         r"retention batch \d+: the tombstones are not the "
                         r"ones its note signs\)", r.stdout), r.stdout
        assert "journal n1/1 seqs 1..2: deleted" in r.stdout, r.stdout
    finally:
        store.sql("UPDATE audit_tombstone t JOIN audit_record r ON "
                  "r.node = t.node AND r.writer_id = t.writer_id AND "
                  "r.seq = t.seq + 1 SET t.entry_hash = r.prev_hash WHERE "
                  "t.writer_id = 1 AND t.seq = 2")
